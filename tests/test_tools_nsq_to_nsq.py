"""nsq_to_nsq as a process between two greensq nsqd: what arrives with the JSON filters,
requeue with backoff when the required field is missing, and FIN only once the
destination answered OK."""

from support import V2Client, wait_until
from tool_checks import publish, wait_channel_done

FAST_RETRY = ("--consumer-opt=default_requeue_delay,0s", "--consumer-opt=backoff_multiplier,10ms")


def relayed(destination, topic, count):
    client = V2Client(destination.tcp_port)
    try:
        client.sub(topic, "check", rdy=count + 1)
        return [client.read_message().body for _ in range(count)]
    finally:
        client.close()


def test_relays_messages_through_the_json_filters(nsqd_factory, tool_factory):
    source, destination = nsqd_factory(), nsqd_factory()
    destination.http("POST", "/channel/create?topic=relayed&channel=check")
    bodies = [
        b'{"kind": "keep", "id": 1, "extra": true}',
        b'{"kind": "drop", "id": 2}',
        b"not json at all",
        b'{"kind": "keep", "id": 2.5, "big": 1e21}',
        b'{"kind": "keep", "id": 12345678901234567890, "note": "<a&b>"}',
        b'{"kind": "keep", "note": "<a&b>", "id": 0.0000001}',
    ]
    publish(source, "events", bodies)
    relay = tool_factory("nsq_to_nsq", "--topic=events", f"--nsqd-tcp-address={source.tcp_address}",
                         f"--destination-nsqd-tcp-address={destination.tcp_address}",
                         "--destination-topic=relayed", "--require-json-field=kind",
                         "--require-json-value=keep", "--whitelist-json-field=id",
                         "--whitelist-json-field=note")
    wait_channel_done(source, "events", "nsq_to_nsq", len(bodies))
    assert sorted(relayed(destination, "relayed", 4)) == sorted([
        b'{"id":1}',
        b'{"id":2.5}',
        b'{"id":12345678901234567000,"note":"\\u003ca\\u0026b\\u003e"}',
        b'{"id":1e-7,"note":"\\u003ca\\u0026b\\u003e"}',
    ])
    assert relay.stop() == 0, relay.log_text()
    assert "ERROR: Unable to decode json: not json at all" in relay.log_text()
    assert destination.topic_stats("relayed")["message_count"] == 4


def test_a_missing_required_field_requeues_with_backoff(nsqd_factory, tool_factory):
    source, destination = nsqd_factory(), nsqd_factory()
    publish(source, "events", [b'{"id": 1}'])
    relay = tool_factory("nsq_to_nsq", "--topic=events", f"--nsqd-tcp-address={source.tcp_address}",
                         f"--destination-nsqd-tcp-address={destination.tcp_address}",
                         "--require-json-field=kind", "--require-json-value=keep",
                         "--consumer-opt=max_attempts,2", *FAST_RETRY)
    stats = wait_channel_done(source, "events", "nsq_to_nsq", 1)
    assert relay.stop() == 0, relay.log_text()
    assert stats["requeue_count"] == 2     # attempts 1 and 2; the third is given up
    log = relay.log_text()
    assert "ERROR: missing field to check required value" in log
    assert "backing off" in log and "attempted 3 times, giving up" in log
    assert destination.topic_stats("events") is None


def test_a_message_is_finished_only_once_the_destination_took_it(nsqd_factory, tool_factory):
    source, destination = nsqd_factory(), nsqd_factory()
    destination.stop()             # its ports stay reserved for its restart below
    publish(source, "events", [b"one", b"two"])
    relay = tool_factory("nsq_to_nsq", "--topic=events", f"--nsqd-tcp-address={source.tcp_address}",
                         f"--destination-nsqd-tcp-address={destination.tcp_address}",
                         "--mode=round-robin", *FAST_RETRY)
    stats = wait_until(lambda: (s := source.channel_stats("events", "nsq_to_nsq"))
                       and s["requeue_count"] >= 2 and s,
                       message="requeues while the destination is down")
    assert stats["depth"] + stats["in_flight_count"] + stats["deferred_count"] == 2
    destination.start()
    destination.http("POST", "/channel/create?topic=events&channel=check")
    wait_channel_done(source, "events", "nsq_to_nsq", 2)
    assert sorted(relayed(destination, "events", 2)) == [b"one", b"two"]
    assert relay.stop() == 0, relay.log_text()
