"""Concurrent ``/pub`` requests for one topic leave an HTTP worker as one MPUB, and each is
answered only once that MPUB is (http/coalescing.py): the fast tier, with a ``send``
that records each batch and returns (or fails) when the test says, as nsqd's OK would.
"""

from types import SimpleNamespace

import gevent
import pytest
from gevent.event import Event

from greensq.http.coalescing import Coalescer


class Upstream:
    """``send(topic, bodies)`` for a Coalescer: records the batch, then waits until the
    test answers it with ``answer()`` (or ``fail(exc)``)."""

    def __init__(self):
        self.batches = []
        self.sending = Event()       # a batch is waiting for its answer
        self.answered = Event()
        self.error = None

    def send(self, topic, bodies):
        self.batches.append((topic, list(bodies)))
        self.sending.set()
        self.answered.wait()
        if self.error is not None:
            raise self.error

    def answer(self):
        self.answered.set()

    def fail(self, exc):
        self.error = exc
        self.answered.set()


def publish_all(coalescer, requests):
    """One greenlet per ``(topic, body)``, all started in the same turn of the hub."""
    return [gevent.spawn(coalescer.publish, topic, body) for topic, body in requests]


def test_one_turn_of_requests_leaves_as_one_batch_per_topic():
    upstream = Upstream()
    upstream.answer()
    coalescer = Coalescer(upstream.send, SimpleNamespace(max_body_size=1 << 20))
    requests = [("a", b"a%d" % i) for i in range(10)] + [("b", b"b0"), ("a", b"a10")]
    gevent.joinall(publish_all(coalescer, requests), raise_error=True)
    assert sorted(upstream.batches) == [
        ("a", [b"a%d" % i for i in range(11)]), ("b", [b"b0"])]


def test_no_request_is_answered_before_its_batch_is():
    upstream = Upstream()
    coalescer = Coalescer(upstream.send, SimpleNamespace(max_body_size=1 << 20))
    greenlets = publish_all(coalescer, [("t", b"m%d" % i) for i in range(5)])
    upstream.sending.wait(10)
    assert not any(greenlet.ready() for greenlet in greenlets)
    upstream.answer()
    gevent.joinall(greenlets, timeout=10, raise_error=True)
    assert all(greenlet.successful() for greenlet in greenlets)
    assert upstream.batches == [("t", [b"m%d" % i for i in range(5)])]


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_is_sent_anew():
    upstream = Upstream()
    coalescer = Coalescer(upstream.send, SimpleNamespace(max_body_size=1 << 20))
    greenlets = publish_all(coalescer, [("t", b"m%d" % i) for i in range(4)])
    upstream.sending.wait(10)
    upstream.fail(ConnectionResetError("nsqd went away"))
    gevent.joinall(greenlets, timeout=10)
    assert all(isinstance(greenlet.exception, ConnectionResetError) for greenlet in greenlets)
    upstream.error = None
    coalescer.publish("t", b"later")
    assert upstream.batches[-1] == ("t", [b"later"])


@pytest.mark.parametrize("max_body_size", [4 + 4 + 10, 4 + 3 * (4 + 10), 1000])
def test_a_batch_stays_within_the_nsqds_max_body_size(max_body_size):
    upstream = Upstream()
    upstream.answer()
    coalescer = Coalescer(upstream.send, SimpleNamespace(max_body_size=max_body_size))
    bodies = [b"%010d" % i for i in range(20)]
    gevent.joinall(publish_all(coalescer, [("t", body) for body in bodies]),
                   raise_error=True)
    sent = [body for _, batch in upstream.batches for body in batch]
    assert sorted(sent) == bodies
    assert all(4 + sum(4 + len(body) for body in batch) <= max_body_size
               for _, batch in upstream.batches)
    if max_body_size == 1000:
        assert len(upstream.batches) == 1


class QueueFull(Exception):
    pass


def test_a_batch_refused_for_room_is_sent_again_request_by_request():
    """A bounded queue with room for 2 messages: a batch of 5 is refused whole, and
    sent again one request at a time, 2 are stored and 3 refused, each on its own."""
    stored, batches = [], []

    def send(topic, bodies):
        batches.append(list(bodies))
        if len(stored) + len(bodies) > 2:
            raise QueueFull()
        stored.extend(bodies)

    coalescer = Coalescer(send, SimpleNamespace(max_body_size=1 << 20),
                          no_room=lambda error: isinstance(error, QueueFull))
    greenlets = publish_all(coalescer, [("t", b"m%d" % i) for i in range(5)])
    gevent.joinall(greenlets, timeout=10)
    refused = [greenlet for greenlet in greenlets if isinstance(greenlet.exception, QueueFull)]
    assert len(stored) == 2 and len(refused) == 3
    assert batches[0] == [b"m%d" % i for i in range(5)]
    assert all(len(batch) == 1 for batch in batches[1:])
