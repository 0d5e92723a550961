"""A handler that raises never strands its caller: a topic's or a channel's handler that
fails during a publish fails the publish's receipt, so the publisher hears an error
(``E_PUB_FAILED`` over TCP, HTTP 500) within a second, and the daemon serves the next
publish. The fault is injected into the core in the test process (tests/inprocess.py):
no client can make a handler raise on purpose.
"""

import struct

import gevent
import pytest

from greensq.actors.channel import Channel
from greensq.actors.topic import Topic
from support import FRAME_ERROR, FRAME_RESPONSE

OK = (FRAME_RESPONSE, b"OK")


def raise_once(monkeypatch, cls, name):
    """Make ``cls.name`` raise the first time it runs, then behave as before."""
    original = getattr(cls, name)
    calls = []

    def failing(self, *args):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError(f"injected fault in {name}")
        return original(self, *args)

    monkeypatch.setattr(cls, name, failing)
    return calls


def create_channel(daemon):
    assert daemon.http("POST", "/topic/create?topic=faults")[0] == 200
    assert daemon.http("POST", "/channel/create?topic=faults&channel=ch")[0] == 200


def publish_tcp(daemon, verb):
    client = daemon.connect()
    if verb == "PUB":
        client.command("PUB faults", b"payload")
    else:
        bodies = [b"one", b"two"]
        client.command("MPUB faults", struct.pack(">i", len(bodies)) + b"".join(
            struct.pack(">i", len(body)) + body for body in bodies))
    with gevent.Timeout(1):
        return client.read_frame()


@pytest.mark.parametrize("cls,handler", [(Topic, "on_pub"), (Channel, "on_put")],
                         ids=["topic", "channel"])
@pytest.mark.parametrize("verb", ["PUB", "MPUB"])
def test_a_raising_handler_fails_the_tcp_publish_and_nsqd_goes_on(
        inproc_nsqd, monkeypatch, cls, handler, verb):
    create_channel(inproc_nsqd)
    calls = raise_once(monkeypatch, cls, handler)
    kind, data = publish_tcp(inproc_nsqd, verb)
    assert calls
    assert kind == FRAME_ERROR
    assert data.startswith(f"E_{verb}_FAILED {verb} failed internal error in".encode()), data
    assert publish_tcp(inproc_nsqd, verb) == OK
    expected = 1 if verb == "PUB" else 2
    assert inproc_nsqd.channel_stats("faults", "ch")["depth"] == expected


@pytest.mark.parametrize("cls,handler", [(Topic, "on_pub"), (Channel, "on_put")],
                         ids=["topic", "channel"])
def test_a_raising_handler_fails_the_http_publish_and_nsqd_goes_on(
        inproc_nsqd, monkeypatch, cls, handler):
    create_channel(inproc_nsqd)
    calls = raise_once(monkeypatch, cls, handler)
    with gevent.Timeout(1):
        status, _, body = inproc_nsqd.http("POST", "/pub?topic=faults", body=b"payload")
    assert calls
    assert (status, body) == (500, b'{"message":"INTERNAL_ERROR"}')
    with gevent.Timeout(1):
        assert inproc_nsqd.http("POST", "/pub?topic=faults", body=b"payload")[:3:2] == (
            200, b"OK")
    assert inproc_nsqd.channel_stats("faults", "ch")["depth"] == 1
