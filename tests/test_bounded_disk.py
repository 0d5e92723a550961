"""Bounded disk queues: ``--max-bytes-per-topic`` / ``--max-bytes-per-channel`` with the
``refuse`` policy (publishes refused whole, with E_PUB_FAILED / E_MPUB_FAILED and HTTP 503
QUEUE_FULL) and the ``drop-oldest`` policy (the oldest messages make room), counted in
/stats and /metrics."""

import json

from prometheus_client.parser import text_string_to_metric_families

from support import FRAME_ERROR, FRAME_RESPONSE, V2Client, wait_until

BODY = b"x" * 70
RECORD = 4 + 26 + len(BODY)          # what one message takes in a disk queue: 100 bytes


def metric(nsqd, name, **labels):
    families = {f.name: f for f in text_string_to_metric_families(
        nsqd.http("GET", "/metrics")[2].decode())}
    (found,) = [s.value for s in families[name].samples
                if all(s.labels.get(k) == v for k, v in labels.items())]
    return found


def test_a_full_topic_refuses_publishes(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=0", f"--max-bytes-per-topic={5 * RECORD}")
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("capped", [BODY] * 3) == (0, b"OK")
    assert producer.mpub("capped", [BODY] * 2) == (0, b"OK")      # exactly full
    kind, data = producer.pub("capped", BODY)
    assert kind == FRAME_ERROR and data.startswith(b"E_PUB_FAILED PUB failed capped: ")
    assert b"--max-bytes-per-topic" in data
    assert producer.is_closed()                                  # fatal, as in NSQ

    status, _, body = nsqd.http("POST", "/pub?topic=capped", BODY)
    assert (status, json.loads(body)) == (503, {"message": "QUEUE_FULL"})
    status, _, body = nsqd.http("POST", "/mpub?topic=capped", BODY + b"\n" + BODY)
    assert (status, json.loads(body)) == (503, {"message": "QUEUE_FULL"})

    topic = nsqd.topic_stats("capped")
    assert (topic["depth"], topic["message_count"]) == (5, 5)
    assert topic["backend_bytes"] == 5 * RECORD
    assert topic["refused_count"] == 4 and topic["dropped_count"] == 0
    assert metric(nsqd, "nsq_topic_refused_messages", topic="capped") == 4
    assert metric(nsqd, "nsq_topic_backend_bytes", topic="capped") == 5 * RECORD
    assert metric(nsqd, "nsq_nsqd_max_bytes_per_topic") == 5 * RECORD
    assert metric(nsqd, "nsq_nsqd_max_bytes_per_channel") == 0

    # Once the backlog moves on (to a new channel here), there is room again: the
    # bound is on what the topic's disk queue holds.
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("capped", "c", rdy=2)
    wait_until(lambda: nsqd.topic_stats("capped")["backend_bytes"] < 5 * RECORD,
               message="the backlog handed to the channel")
    again = V2Client(nsqd.tcp_port)
    assert again.pub("capped", BODY) == (FRAME_RESPONSE, b"OK")
    consumer.close()
    again.close()


def test_a_full_channel_refuses_the_whole_batch(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=0", f"--max-bytes-per-channel={4 * RECORD}")
    assert nsqd.http("POST", "/topic/create?topic=fan")[0] == 200
    for channel in ("stuck", "flowing"):
        assert nsqd.http("POST", f"/channel/create?topic=fan&channel={channel}")[0] == 200
    reader = V2Client(nsqd.tcp_port)
    reader.sub("fan", "flowing", rdy=100)
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("fan", [BODY] * 3) == (0, b"OK")
    kind, data = producer.mpub("fan", [BODY] * 2)       # 5 > 4 for "stuck"
    assert kind == FRAME_ERROR and data.startswith(b"E_MPUB_FAILED MPUB failed fan: ")
    assert b"channel stuck (--max-bytes-per-channel)" in data
    for _ in range(3):
        reader.command(b"FIN " + reader.read_message().id)
    stuck, flowing = (nsqd.channel_stats("fan", name) for name in ("stuck", "flowing"))
    # Neither channel has any of the refused batch.
    assert stuck["message_count"] == flowing["message_count"] == 3
    assert (stuck["depth"], stuck["backend_bytes"]) == (3, 3 * RECORD)
    assert nsqd.topic_stats("fan")["refused_count"] == 2
    second = V2Client(nsqd.tcp_port)
    assert second.pub("fan", BODY) == (0, b"OK")        # one more still fits
    reader.close()
    second.close()


def test_a_batch_of_many_slices_is_refused_or_taken_whole(nsqd_factory):
    """A batch stored a slice at a time (more than 1024 messages) is checked whole first,
    to the byte, memory's room included: 1,000 messages fit in memory and the rest of
    the batch is exactly the bound, or one byte more."""
    small, large = [b"s"] * 1500, [BODY] * 1500      # memory takes 1,000 of the small ones
    on_disk = 500 * (4 + 26 + 1) + 1500 * RECORD
    nsqd = nsqd_factory("--mem-queue-size=1000", f"--max-bytes-per-topic={on_disk}")
    producer = V2Client(nsqd.tcp_port)
    kind, data = producer.mpub("over", small + large[:-1] + [BODY + b"x"])
    assert kind == FRAME_ERROR and data.startswith(b"E_MPUB_FAILED MPUB failed over: ")
    assert nsqd.topic_stats("over")["depth"] == 0
    assert nsqd.topic_stats("over")["refused_count"] == 3000
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("exact", small + large) == (FRAME_RESPONSE, b"OK")
    topic = nsqd.topic_stats("exact")
    assert (topic["depth"], topic["backend_bytes"]) == (3000, on_disk)
    producer.close()


def test_drop_oldest_keeps_the_newest(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=0", f"--max-bytes-per-channel={10 * RECORD}",
                        "--max-bytes-policy=drop-oldest")
    assert nsqd.http("POST", "/topic/create?topic=logs")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=logs&channel=archive")[0] == 200
    producer = V2Client(nsqd.tcp_port)
    bodies = [b"%070d" % i for i in range(25)]
    for start in range(0, 25, 5):
        assert producer.mpub("logs", bodies[start:start + 5]) == (0, b"OK")
    channel = nsqd.channel_stats("logs", "archive")
    assert channel["depth"] == 10 and channel["backend_bytes"] == 10 * RECORD
    assert channel["dropped_count"] == 15 and channel["message_count"] == 25
    assert metric(nsqd, "nsq_channel_dropped_messages", channel="archive") == 15
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("logs", "archive", rdy=10)
    received = [consumer.read_message().body for _ in range(10)]
    assert received == bodies[15:]
    consumer.close()
    producer.close()


def test_drop_oldest_on_a_topic_and_a_batch_bigger_than_the_bound(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=0", f"--max-bytes-per-topic={3 * RECORD}",
                        "--max-bytes-policy=drop-oldest")
    producer = V2Client(nsqd.tcp_port)
    bodies = [b"%070d" % i for i in range(5)]
    assert producer.mpub("held", bodies) == (0, b"OK")
    topic = nsqd.topic_stats("held")
    assert (topic["depth"], topic["dropped_count"], topic["refused_count"]) == (3, 2, 0)
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("held", "c", rdy=3)
    assert [consumer.read_message().body for _ in range(3)] == bodies[2:]
    consumer.close()
    producer.close()


def test_unbounded_by_default_keeps_nsqs_stats_keys(nsqd):
    assert nsqd.http("POST", "/channel/create?topic=plain&channel=c")[0] == 404
    assert nsqd.http("POST", "/topic/create?topic=plain")[0] == 200
    assert "backend_bytes" not in nsqd.topic_stats("plain")
