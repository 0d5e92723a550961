"""Dead letters on the server: ``--max-attempts``, the per-channel limit set over HTTP
(kept in nsqd.dat), the dead-letter topic and the envelope a consumer reads there, and
the counts in /stats and /metrics."""

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import V2Client, wait_until


def requeue_until_gone(client, attempts):
    """Receive the message ``attempts`` times, REQ-ing it each time; return what came."""
    seen = []
    for _ in range(attempts):
        msg = client.read_message()
        seen.append(msg)
        client.command(b"REQ " + msg.id + b" 0")
    return seen


def read_dead_letter(nsqd, topic):
    reader = V2Client(nsqd.tcp_port)
    reader.sub(topic, "inspect", rdy=1)
    msg = reader.read_message()
    reader.command(b"FIN " + msg.id)
    header, _, body = msg.body.partition(b"\n")
    reader.close()
    return json.loads(header), body, msg


def test_a_message_past_max_attempts_goes_to_the_dead_letter_topic(nsqd_factory):
    nsqd = nsqd_factory("--max-attempts=3")
    producer = V2Client(nsqd.tcp_port)
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("orders", "billing", rdy=1)
    assert producer.pub("orders", b"cannot be processed") == (0, b"OK")
    seen = requeue_until_gone(consumer, 3)
    assert [m.attempts for m in seen] == [1, 2, 3]

    wait_until(lambda: nsqd.topic_stats("orders.dead"), message="the dead-letter topic")
    channel = nsqd.channel_stats("orders", "billing")
    assert channel["dead_letter_count"] == 1
    assert channel["max_attempts"] == 3
    assert channel["depth"] == channel["in_flight_count"] == 0
    header, body, dead = read_dead_letter(nsqd, "orders.dead")
    assert header == {"id": seen[0].id.decode(), "topic": "orders", "channel": "billing",
                      "attempts": 3, "timestamp": seen[0].timestamp}
    assert body == b"cannot be processed"
    assert dead.id != seen[0].id and dead.attempts == 1

    # The consumer is not sent the message a fourth time.
    assert producer.pub("orders", b"next") == (0, b"OK")
    assert consumer.read_message().body == b"next"

    families = {f.name: f for f in text_string_to_metric_families(
        nsqd.http("GET", "/metrics")[2].decode())}
    dead_lettered = [s for s in families["nsq_channel_dead_lettered_messages"].samples
                     if s.labels["channel"] == "billing"]
    assert [s.value for s in dead_lettered] == [1]
    # Dead-letter topics do not dead-letter again.
    assert "max_attempts" not in nsqd.channel_stats("orders.dead", "inspect")
    consumer.close()
    producer.close()


def test_per_channel_limit_over_http_persists(nsqd_factory):
    nsqd = nsqd_factory()
    assert nsqd.http("POST", "/topic/create?topic=jobs")[0] == 200
    for channel in ("strict", "lenient"):
        assert nsqd.http("POST", f"/channel/create?topic=jobs&channel={channel}")[0] == 200
    status, _, body = nsqd.http("POST", "/channel/max_attempts?topic=jobs&channel=strict"
                                        "&max_attempts=1")
    assert (status, body) == (200, b"")
    with open(nsqd.data_path + "/nsqd.dat") as fh:
        metadata = json.load(fh)
    channels = {c["name"]: c for c in metadata["topics"][0]["channels"]}
    # Go's keys stay as Go writes them; greensq's limit is one more key Go ignores.
    assert channels["strict"] == {"name": "strict", "paused": False, "max_attempts": 1}
    assert channels["lenient"] == {"name": "lenient", "paused": False}

    nsqd.restart()
    assert nsqd.channel_stats("jobs", "strict")["max_attempts"] == 1
    assert "max_attempts" not in nsqd.channel_stats("jobs", "lenient")

    producer = V2Client(nsqd.tcp_port)
    strict, lenient = V2Client(nsqd.tcp_port), V2Client(nsqd.tcp_port)
    strict.sub("jobs", "strict", rdy=1)
    lenient.sub("jobs", "lenient", rdy=1)
    assert producer.pub("jobs", b"payload") == (0, b"OK")
    requeue_until_gone(strict, 1)
    assert [m.attempts for m in requeue_until_gone(lenient, 3)] == [1, 2, 3]
    header, body, _ = read_dead_letter(nsqd, "jobs.dead")
    assert (header["channel"], header["attempts"], body) == ("strict", 1, b"payload")
    assert lenient.read_message().attempts == 4       # no limit on this channel

    # An empty value goes back to --max-attempts (0 here: no limit, no key).
    assert nsqd.http("POST", "/channel/max_attempts?topic=jobs&channel=strict"
                             "&max_attempts=")[0] == 200
    stats = nsqd.channel_stats("jobs", "strict")
    assert stats["max_attempts"] == 0 and stats["dead_letter_count"] == 1
    for client in (producer, strict, lenient):
        client.close()


def test_each_channel_counts_its_own_attempts(nsqd):
    consumers = []
    for channel in ("first", "second", "third"):
        consumer = V2Client(nsqd.tcp_port)
        consumer.sub("copies", channel, rdy=1)
        consumers.append(consumer)
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("copies", b"x") == (0, b"OK")
    assert [c.read_message().attempts for c in consumers] == [1, 1, 1]
    for client in consumers + [producer]:
        client.close()


def test_a_channel_limit_of_zero_overrides_the_flag(nsqd_factory):
    nsqd = nsqd_factory("--max-attempts=1")
    assert nsqd.http("POST", "/topic/create?topic=t")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=t&channel=c")[0] == 200
    assert nsqd.http("POST", "/channel/max_attempts?topic=t&channel=c&max_attempts=0")[0] == 200
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("t", "c", rdy=1)
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("t", b"x") == (0, b"OK")
    assert [m.attempts for m in requeue_until_gone(consumer, 3)] == [1, 2, 3]
    assert nsqd.topic_stats("t.dead") is None
    consumer.close()
    producer.close()


@pytest.mark.parametrize("query, status, message", [
    ("topic=t&channel=c", 400, "MISSING_ARG_MAX_ATTEMPTS"),
    ("topic=t&channel=c&max_attempts=-1", 400, "INVALID_ARG_MAX_ATTEMPTS"),
    ("topic=t&channel=c&max_attempts=65536", 400, "INVALID_ARG_MAX_ATTEMPTS"),
    ("topic=t&channel=c&max_attempts=two", 400, "INVALID_ARG_MAX_ATTEMPTS"),
    ("topic=t&channel=nope&max_attempts=1", 404, "CHANNEL_NOT_FOUND"),
    ("topic=nope&channel=c&max_attempts=1", 404, "TOPIC_NOT_FOUND"),
    ("channel=c&max_attempts=1", 400, "MISSING_ARG_TOPIC"),
    ("topic=t&max_attempts=1", 400, "MISSING_ARG_CHANNEL"),
])
def test_bad_limit_requests(nsqd, query, status, message):
    assert nsqd.http("POST", "/topic/create?topic=t")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=t&channel=c")[0] == 200
    got_status, _, body = nsqd.http("POST", f"/channel/max_attempts?{query}")
    assert (got_status, json.loads(body)) == (status, {"message": message})


def test_a_client_with_its_own_lower_max_attempts_is_unaffected(nsqd_factory):
    """As go-nsq and pynsq do: FIN a message once it came more often than allowed."""
    nsqd = nsqd_factory("--max-attempts=5")
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("own", "c", rdy=1)
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("own", b"x") == (0, b"OK")
    client_max_attempts = 2
    while True:
        msg = consumer.read_message()
        if msg.attempts > client_max_attempts:
            consumer.command(b"FIN " + msg.id)
            break
        consumer.command(b"REQ " + msg.id + b" 0")
    assert msg.attempts == 3
    wait_until(lambda: nsqd.channel_stats("own", "c")["in_flight_count"] == 0,
               message="the FIN")
    assert nsqd.channel_stats("own", "c")["dead_letter_count"] == 0
    assert nsqd.topic_stats("own.dead") is None
    consumer.close()
    producer.close()


def test_dead_letter_topic_names(nsqd_factory):
    nsqd = nsqd_factory("--max-attempts=1", "--dead-letter-topic-suffix=_failed")
    long_topic = "t" * 64
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub(long_topic, "c", rdy=1)
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub(long_topic, b"x") == (0, b"OK")
    requeue_until_gone(consumer, 1)
    dead_topic = "t" * 57 + "_failed"          # shortened to NSQ's 64 characters
    wait_until(lambda: nsqd.topic_stats(dead_topic), message="the dead-letter topic")
    header, _, _ = read_dead_letter(nsqd, dead_topic)
    assert header["topic"] == long_topic
    consumer.close()
    producer.close()


def test_messages_timing_out_count_as_attempts(nsqd_factory):
    nsqd = nsqd_factory("--max-attempts=2", "--msg-timeout=1s")
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("slow", "c", rdy=2)
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("slow", b"never finished") == (0, b"OK")
    first = consumer.read_message()
    second = consumer.read_message()          # redelivered after the first timed out
    assert (first.attempts, second.attempts) == (1, 2)
    wait_until(lambda: nsqd.channel_stats("slow", "c")["dead_letter_count"] == 1,
               timeout=15, message="the dead letter after the second timeout")
    header, body, _ = read_dead_letter(nsqd, "slow.dead")
    assert (header["attempts"], body) == (2, b"never finished")
    assert nsqd.channel_stats("slow", "c")["depth"] == 0
    consumer.close()
    producer.close()
