"""Discovery end to end: real nsqd processes announcing themselves to real nsqlookupd
processes, and third-party consumers (gnsq, pynsq) finding nsqd through nsqlookupd."""

import json
import socket
import struct
from pathlib import Path

from support import receive_identify, run_client_script, wait_until

SCRIPT = Path(__file__).with_name("discovery_clients.py")
FAST_RECONNECT = {"GREENSQ_LOOKUPD_MAX_BACKOFF": "0.2"}


def announcing_nsqd(nsqd_factory, *lookupds, args=()):
    flags = [f"--lookupd-tcp-address=127.0.0.1:{lk.tcp_port}" for lk in lookupds]
    return nsqd_factory("--broadcast-address=127.0.0.1", *flags, *args, env=FAST_RECONNECT)


def get_json(daemon, path):
    status, _, body = daemon.http("GET", path)
    return status, json.loads(body)


def producers(lookupd, topic):
    status, data = get_json(lookupd, f"/lookup?topic={topic}")
    return data["producers"] if status == 200 else []


def tcp_ports(lookupd, topic):
    return sorted(p["tcp_port"] for p in producers(lookupd, topic))


def nodes(lookupd):
    return get_json(lookupd, "/nodes")[1]["producers"]


def wait_ports(lookupd, topic, ports, timeout=10):
    wait_until(lambda: tcp_ports(lookupd, topic) == sorted(ports), timeout=timeout,
               message=f"/lookup?topic={topic} == {sorted(ports)} (now {tcp_ports(lookupd, topic)})")


def test_nsqd_identifies_and_registers_topics_and_channels(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory()
    nsqd = announcing_nsqd(nsqd_factory, lookupd)
    wait_until(lambda: len(nodes(lookupd)) == 1, message="nsqd identified")
    (node,) = nodes(lookupd)
    assert node["broadcast_address"] == "127.0.0.1"
    assert node["hostname"] == socket.gethostname()
    assert (node["tcp_port"], node["http_port"], node["version"]) == (
        nsqd.tcp_port, nsqd.http_port, "1.3.0")
    assert node["topics"] == [] and node["tombstones"] == []

    assert nsqd.http("POST", "/topic/create?topic=disc")[0] == 200
    wait_ports(lookupd, "disc", [nsqd.tcp_port])
    (p,) = producers(lookupd, "disc")
    assert {k: p[k] for k in ("broadcast_address", "tcp_port", "http_port", "version")} == {
        "broadcast_address": "127.0.0.1", "tcp_port": nsqd.tcp_port,
        "http_port": nsqd.http_port, "version": "1.3.0"}
    assert p["remote_address"].startswith("127.0.0.1:")

    assert nsqd.http("POST", "/channel/create?topic=disc&channel=c1")[0] == 200
    wait_until(lambda: get_json(lookupd, "/channels?topic=disc")[1]["channels"] == ["c1"],
               message="channel registered")
    debug = lambda: get_json(lookupd, "/debug")[1]  # noqa: E731
    assert len(debug()["channel:disc:c1"]) == 1

    # channel delete -> UNREGISTER topic channel (the key stays, the producer goes)
    assert nsqd.http("POST", "/channel/delete?topic=disc&channel=c1")[0] == 200
    wait_until(lambda: "channel:disc:c1" not in debug(), message="channel unregistered")
    assert tcp_ports(lookupd, "disc") == [nsqd.tcp_port]

    # topic delete -> UNREGISTER topic
    assert nsqd.http("POST", "/topic/delete?topic=disc")[0] == 200
    wait_until(lambda: producers(lookupd, "disc") == [], message="topic unregistered")
    assert nodes(lookupd)[0]["topics"] == []


def test_existing_topics_are_registered_on_connect(lookupd_factory, nsqd_factory, tmp_path):
    lookupd = lookupd_factory()
    nsqd = nsqd_factory()
    for path in ("/topic/create?topic=early", "/channel/create?topic=early&channel=a",
                 "/channel/create?topic=early&channel=b", "/topic/create?topic=bare"):
        assert nsqd.http("POST", path)[0] == 200
    status, _, _ = nsqd.http("PUT", "/config/nsqlookupd_tcp_addresses",
                             json.dumps([f"127.0.0.1:{lookupd.tcp_port}"]))
    assert status == 200
    wait_ports(lookupd, "early", [nsqd.tcp_port])
    wait_ports(lookupd, "bare", [nsqd.tcp_port])
    assert sorted(get_json(lookupd, "/channels?topic=early")[1]["channels"]) == ["a", "b"]


def test_lookup_union_and_consumers_receive_from_every_nsqd(lookupd_factory, nsqd_factory):
    lk_a, lk_b = lookupd_factory(), lookupd_factory()
    # nsqd0 -> A, nsqd1 -> A and B, nsqd2 -> B: only the union of both lookupds has all three
    daemons = [announcing_nsqd(nsqd_factory, lk_a), announcing_nsqd(nsqd_factory, lk_a, lk_b),
               announcing_nsqd(nsqd_factory, lk_b)]
    for i, nsqd in enumerate(daemons):
        # one channel per client, created before publishing so each gets every message
        assert nsqd.http("POST", "/topic/create?topic=fanin")[0] == 200
        for channel in ("g", "p"):
            assert nsqd.http("POST", f"/channel/create?topic=fanin&channel={channel}")[0] == 200
        for n in range(3):
            assert nsqd.http("POST", "/pub?topic=fanin", f"n{i}-{n}")[0] == 200
    wait_ports(lk_a, "fanin", [daemons[0].tcp_port, daemons[1].tcp_port])
    wait_ports(lk_b, "fanin", [daemons[1].tcp_port, daemons[2].tcp_port])

    expected = sorted(f"n{i}-{n}" for i in range(3) for n in range(3))
    for client, channel in (("gnsq", "g"), ("pynsq", "p")):
        cfg = {"client": client, "topic": "fanin", "channel": channel, "deadline": 15,
               "expected": len(expected),
               "lookupd": [f"127.0.0.1:{lk_a.http_port}", f"127.0.0.1:{lk_b.http_port}"]}
        out = run_client_script(SCRIPT, cfg, timeout=40, context=client)
        assert sorted(set(out["received"])) == expected, client


def test_killed_nsqd_disappears_from_lookup(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory("--inactive-producer-timeout=2s")
    survivor = announcing_nsqd(nsqd_factory, lookupd)
    victim = announcing_nsqd(nsqd_factory, lookupd)
    for nsqd in (survivor, victim):
        assert nsqd.http("POST", "/topic/create?topic=mortal")[0] == 200
    wait_ports(lookupd, "mortal", [survivor.tcp_port, victim.tcp_port])
    victim.kill()
    wait_ports(lookupd, "mortal", [survivor.tcp_port])
    assert [n["tcp_port"] for n in nodes(lookupd)] == [survivor.tcp_port]


def test_restarted_lookupd_gets_every_registration_back(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory()
    daemons = [announcing_nsqd(nsqd_factory, lookupd) for _ in range(2)]
    for nsqd in daemons:
        assert nsqd.http("POST", "/topic/create?topic=phoenix")[0] == 200
        assert nsqd.http("POST", "/channel/create?topic=phoenix&channel=c")[0] == 200
        assert nsqd.http("POST", "/topic/create?topic=solo")[0] == 200
    ports = [nsqd.tcp_port for nsqd in daemons]
    wait_ports(lookupd, "phoenix", ports)
    wait_ports(lookupd, "solo", ports)

    lookupd.restart()   # same ports, empty DB
    wait_ports(lookupd, "phoenix", ports)
    wait_ports(lookupd, "solo", ports)
    assert get_json(lookupd, "/channels?topic=phoenix")[1]["channels"] == ["c"]
    assert sorted(n["tcp_port"] for n in nodes(lookupd)) == sorted(ports)


def test_runtime_change_of_lookupd_addresses(lookupd_factory, nsqd_factory):
    lk_a, lk_b = lookupd_factory(), lookupd_factory()
    nsqd = announcing_nsqd(nsqd_factory, lk_a)
    assert nsqd.http("POST", "/topic/create?topic=moving")[0] == 200
    wait_ports(lk_a, "moving", [nsqd.tcp_port])

    new = [f"127.0.0.1:{lk_b.tcp_port}"]
    status, _, body = nsqd.http("PUT", "/config/nsqlookupd_tcp_addresses", json.dumps(new))
    assert (status, json.loads(body)) == (200, new)
    wait_ports(lk_b, "moving", [nsqd.tcp_port])
    wait_until(lambda: nodes(lk_a) == [], message="nsqd left the removed lookupd")
    assert producers(lk_a, "moving") == []
    assert json.loads(nsqd.http("GET", "/config/nsqlookupd_tcp_addresses")[2]) == new

    # back to both
    both = [f"127.0.0.1:{lk_a.tcp_port}", f"127.0.0.1:{lk_b.tcp_port}"]
    assert nsqd.http("PUT", "/config/nsqlookupd_tcp_addresses", json.dumps(both))[0] == 200
    wait_ports(lk_a, "moving", [nsqd.tcp_port])
    assert tcp_ports(lk_b, "moving") == [nsqd.tcp_port]


def test_new_topic_gets_the_channels_lookupd_knows(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory()
    # channels known cluster-wide: one announced by another nsqd, one created on lookupd
    other = announcing_nsqd(nsqd_factory, lookupd)
    assert other.http("POST", "/topic/create?topic=known")[0] == 200
    assert other.http("POST", "/channel/create?topic=known&channel=from_nsqd")[0] == 200
    assert lookupd.http("POST", "/channel/create?topic=known&channel=from_admin")[0] == 200
    assert lookupd.http("POST", "/channel/create?topic=known&channel=tmp%23ephemeral")[0] == 200
    wait_until(lambda: len(get_json(lookupd, "/channels?topic=known")[1]["channels"]) == 3,
               message="channels registered")

    nsqd = announcing_nsqd(nsqd_factory, lookupd)
    wait_until(lambda: len(nodes(lookupd)) == 2, message="second nsqd identified")
    assert nsqd.http("POST", "/pub?topic=known", "first")[0] == 200

    def channel_depths():
        topic = nsqd.topic_stats("known")
        return sorted((c["channel_name"], c["depth"]) for c in (topic or {}).get("channels", []))

    # both durable channels were created and got the first message; the ephemeral one not
    wait_until(lambda: channel_depths() == [("from_admin", 1), ("from_nsqd", 1)],
               message="channels from lookupd")


def test_broadcast_ports_are_announced(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory()
    announcing_nsqd(nsqd_factory, lookupd,
                    args=("--broadcast-tcp-port=5999", "--broadcast-http-port=5998"))
    wait_until(lambda: len(nodes(lookupd)) == 1, message="nsqd identified")
    (node,) = nodes(lookupd)
    assert (node["tcp_port"], node["http_port"]) == (5999, 5998)


def test_a_reply_longer_than_max_body_size_is_refused_as_go_refuses_it(nsqd_factory):
    """nsqd reads each nsqlookupd reply (``[size][data]``) as Go does, up to its
    --max-body-size: a longer one drops the connection with Go's message, and nsqd
    connects again."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    port = listener.getsockname()[1]
    nsqd = nsqd_factory("--broadcast-address=127.0.0.1",
                        f"--lookupd-tcp-address=127.0.0.1:{port}", "--max-body-size=1000",
                        env=FAST_RECONNECT)
    reply = json.dumps({"tcp_port": 4160, "http_port": 4161, "version": "1.3.0",
                        "broadcast_address": "lookupd", "padding": "x" * 1000}).encode()
    for _ in range(2):      # refused, then connected again
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            assert receive_identify(conn).startswith(b"  V1IDENTIFY\n")
            conn.sendall(struct.pack(">i", len(reply)) + reply)
            assert conn.recv(65536) == b""      # nsqd hung up
    listener.close()
    nsqd.wait_for_log(rf"LOOKUPD\(127\.0\.0\.1:{port}\): IDENTIFY - response body size "
                      rf"\({len(reply)}\) is greater than limit \(1000\)")
