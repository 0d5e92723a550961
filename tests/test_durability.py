"""Durability: what nsqd holds survives restarts, in NSQ's on-disk format."""

import json
import os
import signal
import struct

import pytest

from support import FRAME_RESPONSE, V2Client, wait_until


def publish_many(port, topic, bodies, batch=200):
    client = V2Client(port)
    for start in range(0, len(bodies), batch):
        assert client.mpub(topic, bodies[start:start + batch]) == (FRAME_RESPONSE, b"OK")
    client.close()


def consume(port, topic, channel, count, rdy=200, debug=None):
    """Receive and FIN exactly ``count`` messages; returns them in arrival order."""
    client = V2Client(port)
    client.sub(topic, channel, rdy=rdy)
    received = []
    for _ in range(count):
        msg = client.read_message()
        received.append(msg)
        client.command(b"FIN " + msg.id)
    client.command("NOP")
    client.close()
    return received


def assert_exactly_once(received, bodies):
    assert sorted(m.body for m in received) == sorted(bodies)
    assert len({m.id for m in received}) == len(received)


@pytest.mark.parametrize("flags", [
    ("--mem-queue-size=100",),
    ("--mem-queue-size=100", "--max-bytes-per-file=4096"),
])
def test_backlog_survives_sigterm_restart(nsqd_factory, flags):
    nsqd = nsqd_factory(*flags)
    nsqd.http("POST", "/channel/create?topic=backlog&channel=ch") if nsqd.http(
        "POST", "/topic/create?topic=backlog")[0] == 200 else None
    bodies = [f"message-{i:05d}-".encode() + b"x" * 50 for i in range(3000)]
    publish_many(nsqd.tcp_port, "backlog", bodies)
    wait_until(lambda: (nsqd.channel_stats("backlog", "ch") or {}).get("depth") == 3000,
               message="channel depth 3000")
    assert nsqd.channel_stats("backlog", "ch")["backend_depth"] >= 2900
    if "--max-bytes-per-file=4096" in flags:
        segments = [f for f in os.listdir(nsqd.data_path) if f.startswith("backlog:ch.diskqueue")
                    and f.endswith(".dat") and "meta" not in f]
        assert len(segments) > 1, segments

    nsqd.restart()
    assert nsqd.channel_stats("backlog", "ch")["depth"] == 3000
    received = consume(nsqd.tcp_port, "backlog", "ch", 3000)
    assert_exactly_once(received, bodies)
    wait_until(lambda: nsqd.channel_stats("backlog", "ch")["depth"] == 0)


def test_topic_backlog_without_channels_survives_restart(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=10")
    bodies = [b"t%d" % i for i in range(500)]
    publish_many(nsqd.tcp_port, "orphan", bodies)
    wait_until(lambda: (nsqd.topic_stats("orphan") or {}).get("depth") == 500)
    nsqd.restart()
    assert nsqd.topic_stats("orphan")["depth"] == 500
    assert_exactly_once(consume(nsqd.tcp_port, "orphan", "late", 500), bodies)


def test_in_flight_and_deferred_messages_survive_restart(nsqd_factory):
    nsqd = nsqd_factory()
    client = V2Client(nsqd.tcp_port)
    client.sub("held", "ch", rdy=10)
    publish_many(nsqd.tcp_port, "held", [b"a", b"b", b"c"])
    first = [client.read_message() for _ in range(3)]
    client.command(b"REQ " + first[0].id + b" 600000")   # deferred for ten minutes
    wait_until(lambda: nsqd.channel_stats("held", "ch")["deferred_count"] == 1)
    assert nsqd.channel_stats("held", "ch")["in_flight_count"] == 2

    assert nsqd.stop() == 0
    nsqd.start()
    assert nsqd.channel_stats("held", "ch")["depth"] == 3
    again = consume(nsqd.tcp_port, "held", "ch", 3)
    assert sorted(m.body for m in again) == [b"a", b"b", b"c"]
    assert {m.id for m in again} == {m.id for m in first}


def test_channels_and_pause_state_survive_restart(nsqd):
    for path in ("/topic/create?topic=keep", "/channel/create?topic=keep&channel=c1",
                 "/channel/create?topic=keep&channel=c2", "/channel/pause?topic=keep&channel=c2",
                 "/topic/create?topic=frozen", "/topic/pause?topic=frozen",
                 "/topic/create?topic=gone#ephemeral".replace("#", "%23")):
        assert nsqd.http("POST", path)[0] == 200, path
    nsqd.restart()
    topics = {t["topic_name"]: t for t in nsqd.stats()["topics"]}
    assert set(topics) == {"keep", "frozen"}
    assert topics["frozen"]["paused"] is True
    channels = {c["channel_name"]: c["paused"] for c in topics["keep"]["channels"]}
    assert channels == {"c1": False, "c2": True}
    with open(os.path.join(nsqd.data_path, "nsqd.dat")) as fh:
        meta = json.load(fh)
    assert meta["version"] == "1.3.0"
    assert {t["name"] for t in meta["topics"]} == {"keep", "frozen"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_other_stop_signals_flush_too(nsqd_factory, sig):
    nsqd = nsqd_factory("--mem-queue-size=1000")
    publish_many(nsqd.tcp_port, "sig", [b"m%d" % i for i in range(50)])
    wait_until(lambda: (nsqd.topic_stats("sig") or {}).get("depth") == 50)
    assert nsqd.stop(sig) == 0
    nsqd.start()
    assert nsqd.topic_stats("sig")["depth"] == 50


def test_mem_queue_size_zero_survives_sigkill(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=0", "--sync-every=1")
    nsqd.http("POST", "/topic/create?topic=synced")
    nsqd.http("POST", "/channel/create?topic=synced&channel=ch")
    bodies = [b"durable-%d" % i for i in range(300)]
    client = V2Client(nsqd.tcp_port)
    for body in bodies:
        assert client.pub("synced", body) == (FRAME_RESPONSE, b"OK")
    wait_until(lambda: nsqd.channel_stats("synced", "ch")["backend_depth"] == 300)
    nsqd.kill()
    nsqd.start()
    assert_exactly_once(consume(nsqd.tcp_port, "synced", "ch", 300), bodies)


def test_truncated_segment_is_skipped(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=0", "--max-bytes-per-file=2000")
    nsqd.http("POST", "/topic/create?topic=cut")
    nsqd.http("POST", "/channel/create?topic=cut&channel=ch")
    bodies = [b"%04d" % i + b"y" * 60 for i in range(200)]
    publish_many(nsqd.tcp_port, "cut", bodies)
    wait_until(lambda: nsqd.channel_stats("cut", "ch")["depth"] == 200)
    assert nsqd.stop() == 0

    first = os.path.join(nsqd.data_path, "cut:ch.diskqueue.000000.dat")
    with open(first, "r+b") as fh:
        fh.truncate(os.path.getsize(first) - 7)   # cut the last record short
    nsqd.start()
    client = V2Client(nsqd.tcp_port)
    client.sub("cut", "ch", rdy=100)
    got = []
    while bodies[-1] not in got:   # later segments are still read
        msg = client.read_message()
        got.append(msg.body)
        client.command(b"FIN " + msg.id)
    assert set(got) <= set(bodies)
    assert len(got) >= 150
    assert any(name.endswith(".bad") for name in os.listdir(nsqd.data_path))
    assert nsqd.http("GET", "/ping")[0] == 200


def write_fixture_data_dir(path):
    """An nsqd data directory written byte by byte from the format, as Go nsqd leaves it."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "nsqd.dat"), "w") as fh:
        json.dump({"topics": [{"channels": [{"name": "workers", "paused": False}],
                               "name": "orders", "paused": False}],
                   "version": "1.3.0"}, fh)
    records = [
        (1700000000123456789, 0, b"0a1b2c3d4e5f6071", b"first order"),
        (1700000000987654321, 3, b"0a1b2c3d4e5f6072", b"second order"),
    ]
    segment = b"".join(
        struct.pack(">i", 26 + len(body)) + struct.pack(">qH", ts, attempts) + msg_id + body
        for ts, attempts, msg_id, body in records)
    with open(os.path.join(path, "orders:workers.diskqueue.000000.dat"), "wb") as fh:
        fh.write(segment)
    with open(os.path.join(path, "orders:workers.diskqueue.meta.dat"), "w") as fh:
        fh.write(f"2\n0,0\n0,{len(segment)}\n")
    return records


def test_reads_a_data_directory_written_to_the_format(nsqd_factory, tmp_path):
    records = write_fixture_data_dir(tmp_path / "fixture")
    nsqd = nsqd_factory(data_path=tmp_path / "fixture")
    assert nsqd.channel_stats("orders", "workers")["depth"] == 2
    got = consume(nsqd.tcp_port, "orders", "workers", 2)
    assert [(m.timestamp, m.attempts, m.id, m.body) for m in got] == [
        (ts, attempts + 1, msg_id, body) for ts, attempts, msg_id, body in records]


def test_paused_or_stalled_channel_does_not_hold_back_its_sibling(nsqd_factory):
    nsqd = nsqd_factory("--mem-queue-size=50")
    assert nsqd.http("POST", "/topic/create?topic=fan")[0] == 200
    for channel in ("live", "paused", "stalled"):
        assert nsqd.http("POST", f"/channel/create?topic=fan&channel={channel}")[0] == 200
    assert nsqd.http("POST", "/channel/pause?topic=fan&channel=paused")[0] == 200
    stalled = V2Client(nsqd.tcp_port)
    stalled.sub("fan", "stalled", rdy=5)          # takes five, never finishes them
    bodies = [b"f%d" % i for i in range(2000)]
    publish_many(nsqd.tcp_port, "fan", bodies)
    assert_exactly_once(consume(nsqd.tcp_port, "fan", "live", 2000), bodies)
    wait_until(lambda: nsqd.channel_stats("fan", "paused")["depth"] == 2000)
    stats = nsqd.channel_stats("fan", "stalled")
    assert (stats["in_flight_count"], stats["depth"]) == (5, 1995)
