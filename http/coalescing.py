"""Concurrent ``/pub`` requests for one topic published together, as one MPUB.

An HTTP worker answers many connections at once, one greenlet each. The ``/pub``
requests for a topic that reach it in one turn of the hub leave as one MPUB, sent at
once behind any still in flight (the connection pipelines them), and each request is
answered when that MPUB is: 200 once nsqd has said OK, that is once every message of it
is stored. A request alone in its turn goes as a PUB, without waiting for the turn to end.

MPUB is all or nothing, so one request must never fail its neighbours: each was checked
with NSQ's checks before it joined (publish_api.py), and only what fails the whole batch
alike (nsqd exiting, the connection lost) can fail it; a batch a full bounded queue
refuses whole is sent again request by request, as some of them may fit. A batch
stays within nsqd's ``--max-body-size``; a request that would overflow it starts the
next one.
"""

from gevent import sleep
from gevent.event import AsyncResult

from greensq.services.shared.hub_turn import others_ready
from greensq.services.shared.wire import SIZE

_COUNT_SIZE = SIZE.size     # an MPUB body: the count, then each message's size and bytes


class _Batch:
    __slots__ = ("bodies", "size", "done")

    def __init__(self, body):
        self.bodies = [body]
        self.size = _COUNT_SIZE + SIZE.size + len(body)
        self.done = AsyncResult()


class _SendAlone(Exception):
    """A batch refused whole for want of room: each request is sent again alone."""


class Coalescer:
    """``publish(topic, body)`` batched per topic and turn of the hub; ``send(topic,
    bodies)`` publishes a batch and returns once it is stored (or raises, for every
    request of the batch). ``limits.max_body_size`` is the nsqd's. A batch that ``send``
    refused with an error ``no_room(error)`` says is a full bounded queue's is sent again
    one request at a time, so that each gets the answer nsqd gives it alone."""

    def __init__(self, send, limits, no_room=lambda error: False):
        self.send = send
        self.limits = limits
        self.no_room = no_room
        self.gathering = {}     # topic -> the batch this turn's requests join

    def publish(self, topic, body):
        try:
            return self._publish(topic, body)
        except _SendAlone:
            self.send(topic, [body])
            return None

    def _publish(self, topic, body):
        batch = self.gathering.get(topic)
        if (batch is not None
                and batch.size + SIZE.size + len(body) <= self.limits.max_body_size):
            batch.bodies.append(body)
            batch.size += SIZE.size + len(body)
            return batch.done.get()
        if not others_ready():      # alone in its turn of the hub (one connection)
            self.send(topic, [body])
            return None
        # The first request of the batch sends it, once the others of this turn of the
        # hub have joined (sleep(0) resumes after the greenlets already woken).
        batch = self.gathering[topic] = _Batch(body)
        sleep(0)
        if self.gathering.get(topic) is batch:
            del self.gathering[topic]
        try:
            self.send(topic, batch.bodies)
        except Exception as exc:
            if len(batch.bodies) > 1 and self.no_room(exc):
                exc = _SendAlone()
            batch.done.set_exception(exc)
            raise exc from None
        except BaseException as exc:
            batch.done.set_exception(exc)
            raise
        batch.done.set(None)
        return None
