"""``GET /channel/peek``: queued messages (memory, then disk) shown without being taken."""

import base64
import json

import pytest

from support import V2Client


def peek(nsqd, query):
    status, _, body = nsqd.http("GET", f"/channel/peek?{query}")
    return status, json.loads(body)


def test_peek_shows_memory_then_disk_and_takes_nothing(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=2")
    assert nsqd.http("POST", "/topic/create?topic=stuck")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=stuck&channel=c")[0] == 200
    producer = V2Client(nsqd.tcp_port)
    bodies = [b"message %d \x00\xff" % i for i in range(5)]
    assert producer.mpub("stuck", bodies) == (0, b"OK")
    before = nsqd.channel_stats("stuck", "c")
    assert (before["depth"], before["backend_depth"]) == (5, 3)

    status, doc = peek(nsqd, "topic=stuck&channel=c&n=4")
    assert status == 200
    assert [base64.b64decode(m["body"]) for m in doc["messages"]] == bodies[:4]
    assert all(m["attempts"] == 0 and len(m["id"]) == 16 for m in doc["messages"])
    assert len({m["id"] for m in doc["messages"]}) == 4
    assert peek(nsqd, "topic=stuck&channel=c&n=1000")[1]["messages"] == doc["messages"] + \
        peek(nsqd, "topic=stuck&channel=c&n=5")[1]["messages"][4:]
    assert peek(nsqd, "topic=stuck&channel=c")[1]["messages"] == doc["messages"][:1]

    after = nsqd.channel_stats("stuck", "c")
    assert (after["depth"], after["backend_depth"]) == (5, 3)
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("stuck", "c", rdy=5)
    received = [consumer.read_message() for _ in range(5)]
    assert sorted(m.body for m in received) == sorted(bodies)
    assert {m.id.decode() for m in received} >= {m["id"] for m in doc["messages"]}
    consumer.close()
    producer.close()


def test_peek_stops_at_max_body_size(nsqd_factory):
    nsqd = nsqd_factory("--max-body-size=250", "--max-msg-size=100", "--mem-queue-size=1")
    assert nsqd.http("POST", "/topic/create?topic=big")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=big&channel=c")[0] == 200
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("big", [b"b" * 100] * 2) == (0, b"OK")
    assert producer.mpub("big", [b"b" * 100] * 2) == (0, b"OK")
    status, doc = peek(nsqd, "topic=big&channel=c&n=10")
    assert status == 200 and len(doc["messages"]) == 3     # 300 bytes: over 250, stop
    producer.close()


def test_peek_of_an_empty_channel(nsqd):
    assert nsqd.http("POST", "/topic/create?topic=t")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=t&channel=c")[0] == 200
    assert peek(nsqd, "topic=t&channel=c&n=3") == (200, {"messages": []})


@pytest.mark.parametrize("query, status, message", [
    ("topic=t&channel=c&n=0", 400, "INVALID_ARG_N"),
    ("topic=t&channel=c&n=1001", 400, "INVALID_ARG_N"),
    ("topic=t&channel=c&n=x", 400, "INVALID_ARG_N"),
    ("topic=t&channel=nope", 404, "CHANNEL_NOT_FOUND"),
    ("topic=nope&channel=c", 404, "TOPIC_NOT_FOUND"),
    ("channel=c", 400, "MISSING_ARG_TOPIC"),
    ("topic=t", 400, "MISSING_ARG_CHANNEL"),
    ("topic=t&channel=b@d", 400, "INVALID_ARG_CHANNEL"),
])
def test_bad_peek_requests(nsqd, query, status, message):
    assert nsqd.http("POST", "/topic/create?topic=t")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=t&channel=c")[0] == 200
    assert peek(nsqd, query) == (status, {"message": message})
