"""nsqlookupd on its own: the V1 TCP protocol over raw sockets and the HTTP API, against a
real nsqlookupd process. Producers here are raw V1 clients playing nsqd."""

import json
import socket
import struct
import subprocess
import sys

import pytest

from nsq_cases import (
    LOOKUPD_ADMIN_ERRORS, V1_ERRORS_BEFORE_IDENTIFY, V1_IDENTIFY_BODY_ERRORS, V1_REGISTER_ERRORS,
    administer_topics_and_channels, get_json)
from support import V1Client, nsqlookupd_daemon, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes


@pytest.fixture(scope="module")
def lookupd(tmp_path_factory):
    """One nsqlookupd shared by the tests that only touch their own topic names."""
    daemon = nsqlookupd_daemon(tmp_path_factory.mktemp("lookupd"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def fresh_lookupd(lookupd_factory):
    """An nsqlookupd of this test's own, for assertions on global lists."""
    return lookupd_factory()


def producer(lookupd, registrations=(), **identify):
    client = V1Client(lookupd.tcp_port)
    client.identify(**identify)
    for line in registrations:
        assert client.command(f"REGISTER {line}") == b"OK"
    return client


# -- V1 protocol -----------------------------------------------------------------------

def test_identify_response_and_registration(lookupd):
    client = V1Client(lookupd.tcp_port)
    info = client.identify(broadcast_address="nsqd-a", tcp_port=5150, http_port=5151,
                           hostname="host-a")
    assert info == {"broadcast_address": socket.gethostname(), "hostname": socket.gethostname(),
                    "http_port": lookupd.http_port, "tcp_port": lookupd.tcp_port,
                    "version": "1.3.0"}
    assert client.command("REGISTER orders") == b"OK"
    assert client.command("REGISTER orders archive") == b"OK"
    assert client.command("PING") == b"OK"

    status, data = get_json(lookupd, "/lookup?topic=orders")
    assert status == 200
    assert data["channels"] == ["archive"]
    (p,) = data["producers"]
    assert list(p) == ["remote_address", "hostname", "broadcast_address", "tcp_port",
                       "http_port", "version"]
    local = client.sock.getsockname()
    assert p == {"remote_address": f"{local[0]}:{local[1]}", "hostname": "host-a",
                 "broadcast_address": "nsqd-a", "tcp_port": 5150, "http_port": 5151,
                 "version": "1.3.0"}


def test_raw_reply_framing_has_no_frame_type(lookupd):
    client = V1Client(lookupd.tcp_port)
    client.send(b"PING\n")
    raw = b""
    while len(raw) < 6:
        raw += client.sock.recv(64)
    assert raw == struct.pack(">i", 2) + b"OK"


@pytest.mark.parametrize("lines, error", V1_ERRORS_BEFORE_IDENTIFY)
def test_errors_before_identify_are_fatal(lookupd, lines, error):
    client = V1Client(lookupd.tcp_port)
    for line in lines:
        client.send(line.encode() + b"\n")
    assert client.read_response() == error
    assert client.is_closed()


@pytest.mark.parametrize("line, error", V1_REGISTER_ERRORS)
def test_register_argument_errors_are_fatal(lookupd, line, error):
    client = V1Client(lookupd.tcp_port)
    client.identify()
    assert client.command(line) == error
    assert client.is_closed()


@pytest.mark.parametrize("body, error", V1_IDENTIFY_BODY_ERRORS)
def test_identify_body_errors(lookupd, body, error):
    client = V1Client(lookupd.tcp_port)
    client.send(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
    assert client.read_response() == error
    assert client.is_closed()


def test_identify_truncated_body(lookupd):
    client = V1Client(lookupd.tcp_port)
    client.send(b"IDENTIFY\n" + struct.pack(">i", 100) + b"{}")
    client.sock.shutdown(socket.SHUT_WR)
    assert client.read_response() == b"E_BAD_BODY IDENTIFY failed to read body"


def test_second_identify_is_fatal(lookupd):
    client = V1Client(lookupd.tcp_port)
    client.identify()
    client.send(b"IDENTIFY\n")
    assert client.read_response() == b"E_INVALID cannot IDENTIFY again"
    assert client.is_closed()


def test_wrong_magic_is_rejected(lookupd):
    client = V1Client(lookupd.tcp_port, magic=b"  V2")
    client.send(b"PING\n")
    assert client.is_closed()


def test_closed_connection_removes_its_registrations_but_keeps_keys(fresh_lookupd):
    lookupd = fresh_lookupd
    client = producer(lookupd, ["events", "events ch"])
    assert len(get_json(lookupd, "/lookup?topic=events")[1]["producers"]) == 1
    assert len(get_json(lookupd, "/nodes")[1]["producers"]) == 1
    client.close()
    wait_until(lambda: get_json(lookupd, "/lookup?topic=events")[1]["producers"] == [],
               message="producer removed")
    assert get_json(lookupd, "/nodes") == (200, {"producers": []})
    # registrations outlive their producers, as in NSQ
    assert get_json(lookupd, "/topics") == (200, {"topics": ["events"]})
    assert get_json(lookupd, "/channels?topic=events") == (200, {"channels": ["ch"]})


def test_unregister(fresh_lookupd):
    lookupd = fresh_lookupd
    client = producer(lookupd, ["t1 a", "t1 b", "t1 tmp#ephemeral"])
    assert client.command("UNREGISTER t1 a") == b"OK"
    # the non-ephemeral channel stays registered without producers; the ephemeral one goes
    assert client.command("UNREGISTER t1 tmp#ephemeral") == b"OK"
    assert sorted(get_json(lookupd, "/channels?topic=t1")[1]["channels"]) == ["a", "b"]
    assert len(get_json(lookupd, "/lookup?topic=t1")[1]["producers"]) == 1
    assert client.command("UNREGISTER t1") == b"OK"
    assert get_json(lookupd, "/lookup?topic=t1")[1]["producers"] == []
    nodes = get_json(lookupd, "/nodes")[1]["producers"]
    assert [n["topics"] for n in nodes] == [[]]


def test_silent_producer_drops_out_after_inactive_timeout(lookupd_factory):
    lookupd = lookupd_factory("--inactive-producer-timeout=1s")
    client = producer(lookupd, ["quiet"])   # never PINGs, connection stays open
    assert [p["broadcast_address"] for p in
            get_json(lookupd, "/lookup?topic=quiet")[1]["producers"]] == ["127.0.0.1"]
    wait_until(lambda: get_json(lookupd, "/lookup?topic=quiet")[1]["producers"] == [],
               timeout=5, message="inactive producer filtered")
    assert get_json(lookupd, "/nodes")[1]["producers"] == []
    # a PING makes it active again
    assert client.command("PING") == b"OK"
    assert len(get_json(lookupd, "/lookup?topic=quiet")[1]["producers"]) == 1


# -- HTTP API --------------------------------------------------------------------------

def test_ping_info_and_headers(lookupd):
    status, headers, body = lookupd.http("GET", "/ping")
    assert (status, body) == (200, b"OK")
    status, headers, body = lookupd.http("GET", "/info")
    assert (status, json.loads(body)) == (200, {"version": "1.3.0"})
    assert {k.lower(): v for k, v in headers.items()}["x-nsq-content-type"] == "nsq; version=1.0"


def test_lookup_errors(lookupd):
    assert get_json(lookupd, "/lookup") == (400, {"message": "MISSING_ARG_TOPIC"})
    assert get_json(lookupd, "/lookup?topic=nope") == (404, {"message": "TOPIC_NOT_FOUND"})
    assert get_json(lookupd, "/channels") == (400, {"message": "MISSING_ARG_TOPIC"})
    assert get_json(lookupd, "/channels?topic=nope") == (200, {"channels": []})
    assert get_json(lookupd, "/nosuch")[0] == 404
    assert lookupd.http("POST", "/lookup?topic=x")[0] == 405
    assert lookupd.http("GET", "/topic/create?topic=x")[0] == 405


def test_nodes_shape(fresh_lookupd):
    lookupd = fresh_lookupd
    client = producer(lookupd, ["a", "b c"], broadcast_address="node1", hostname="h1", tcp_port=1,
             http_port=2)
    status, data = get_json(lookupd, "/nodes")
    assert status == 200
    (node,) = data["producers"]
    assert list(node) == ["remote_address", "hostname", "broadcast_address", "tcp_port",
                          "http_port", "version", "tombstones", "topics"]
    assert (node["hostname"], node["broadcast_address"], node["tcp_port"],
            node["http_port"], node["version"]) == ("h1", "node1", 1, 2, "1.3.0")
    assert sorted(node["topics"]) == ["a", "b"]
    assert node["tombstones"] == [False, False]
    client.close()


def test_topic_and_channel_administration(fresh_lookupd):
    administer_topics_and_channels(fresh_lookupd)


@pytest.mark.parametrize("path, message", LOOKUPD_ADMIN_ERRORS)
def test_admin_argument_errors(lookupd, path, message):
    status, _, body = lookupd.http("POST", path)
    assert (status, json.loads(body)) == (400, {"message": message})


def test_tombstone_hides_producer_until_lifetime_expires(lookupd_factory):
    lookupd = lookupd_factory("--tombstone-lifetime=1s")
    clients = [producer(lookupd, ["tomb", "other"], broadcast_address="nodeA", http_port=7001),
               producer(lookupd, ["tomb"], broadcast_address="nodeB", http_port=7002)]
    assert lookupd.http("POST", "/topic/tombstone?topic=tomb&node=nodeA:7001")[0] == 200

    producers = get_json(lookupd, "/lookup?topic=tomb")[1]["producers"]
    assert [p["broadcast_address"] for p in producers] == ["nodeB"]
    # only that topic's registration is tombstoned
    assert len(get_json(lookupd, "/lookup?topic=other")[1]["producers"]) == 1
    nodes = {n["broadcast_address"]: n for n in get_json(lookupd, "/nodes")[1]["producers"]}
    assert dict(zip(nodes["nodeA"]["topics"], nodes["nodeA"]["tombstones"])) == {
        "tomb": True, "other": False}
    assert nodes["nodeB"]["tombstones"] == [False]

    wait_until(lambda: len(get_json(lookupd, "/lookup?topic=tomb")[1]["producers"]) == 2,
               timeout=5, message="tombstone expired")
    for client in clients:
        client.close()


def test_debug_lists_registrations(fresh_lookupd):
    lookupd = fresh_lookupd
    client = producer(lookupd, ["dbg ch"], broadcast_address="n1")
    status, data = get_json(lookupd, "/debug")
    assert status == 200
    assert set(data) == {"client::", "topic:dbg:", "channel:dbg:ch"}
    (entry,) = data["topic:dbg:"]
    assert entry["broadcast_address"] == "n1" and entry["tombstoned"] is False
    client.close()


def test_flags_and_version():
    out = subprocess.run([sys.executable, "-m", "greensq.http.nsqlookupd_launcher",
                          "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("nsqlookupd v1.3.0")
    bad = subprocess.run([sys.executable, "-m", "greensq.http.nsqlookupd_launcher",
                          "--data-path=/tmp/x"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert "flag provided but not defined: -data-path" in bad.stderr


def test_config_file_and_log_prefix(lookupd_factory, tmp_path):
    config = tmp_path / "lookupd.toml"
    config.write_text('log_prefix = "[custom] "\ninactive_producer_timeout = "1s"\n')
    lookupd = lookupd_factory(f"--config={config}")
    lookupd.wait_for_log(r"^\[custom\] .*TCP: listening")
    client = producer(lookupd, ["cfg"])
    wait_until(lambda: get_json(lookupd, "/lookup?topic=cfg")[1]["producers"] == [],
               timeout=5, message="config's inactive-producer-timeout applied")
    client.close()
