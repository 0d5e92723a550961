"""nsqlookupd in the test process (the fast tier): the V1 protocol over socket pairs, with
the error tables test_nsqlookupd.py runs against a daemon, registrations as the HTTP API
shows them (through Falcon's test client), and the administration routes."""

import json
import socket
import struct

import pytest

from inprocess import InProcessNsqlookupd
from nsq_cases import (
    LOOKUPD_ADMIN_ERRORS, V1_ERRORS_BEFORE_IDENTIFY, V1_IDENTIFY_BODY_ERRORS, V1_REGISTER_ERRORS,
    administer_topics_and_channels, get_json)
from support import gevent_wait_until

PRODUCER_KEYS = ["remote_address", "hostname", "broadcast_address", "tcp_port", "http_port",
                 "version"]


@pytest.fixture(scope="module")
def inproc_shared():
    """One core for the tests that only send bad input."""
    daemon = InProcessNsqlookupd()
    yield daemon
    daemon.close()


def producer(lookupd, registrations=(), **identify):
    """A V1 client playing an nsqd that announced ``registrations``."""
    client = lookupd.connect()
    client.identify(**identify)
    for line in registrations:
        assert client.command(f"REGISTER {line}") == b"OK"
    return client


def lookup(lookupd, topic):
    return get_json(lookupd, f"/lookup?topic={topic}")[1]


# -- V1 protocol -----------------------------------------------------------------------------

def test_identify_answers_and_registrations_show_in_lookup(inproc_lookupd_factory):
    lookupd = inproc_lookupd_factory()
    client = lookupd.connect()
    info = client.identify(broadcast_address="nsqd-a", tcp_port=5150, http_port=5151,
                           hostname="host-a")
    assert info == {"broadcast_address": socket.gethostname(), "hostname": socket.gethostname(),
                    "http_port": 0, "tcp_port": 0, "version": "1.3.0"}
    assert client.command("REGISTER orders") == b"OK"
    assert client.command("REGISTER orders archive") == b"OK"
    assert client.command("PING") == b"OK"
    found = lookup(lookupd, "orders")
    assert found["channels"] == ["archive"]
    [entry] = found["producers"]
    assert list(entry) == PRODUCER_KEYS
    assert entry == {"remote_address": client.remote_address, "hostname": "host-a",
                     "broadcast_address": "nsqd-a", "tcp_port": 5150, "http_port": 5151,
                     "version": "1.3.0"}


def test_replies_are_sized_without_a_frame_type(inproc_server):
    client = inproc_server.connect()
    client.send(b"PING\n")
    assert client.read_sized() == b"OK"
    assert not client.unread
    client.send(b"PING\n")
    raw = b""
    while len(raw) < 6:
        raw += client.sock.recv(64)
    assert raw == struct.pack(">i", 2) + b"OK"


@pytest.mark.parametrize("lines, error", V1_ERRORS_BEFORE_IDENTIFY)
def test_errors_before_identify_are_fatal(inproc_server, lines, error):
    client = inproc_server.connect()
    for line in lines:
        client.send(line.encode() + b"\n")
    assert client.read_response() == error
    assert client.is_closed()


@pytest.mark.parametrize("line, error", V1_REGISTER_ERRORS)
def test_register_argument_errors_are_fatal(inproc_server, line, error):
    client = inproc_server.connect()
    client.identify()
    assert client.command(line) == error
    assert client.is_closed()


@pytest.mark.parametrize("body, error", V1_IDENTIFY_BODY_ERRORS)
def test_identify_body_errors(inproc_server, body, error):
    client = inproc_server.connect()
    client.send(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
    assert client.read_response() == error
    assert client.is_closed()


def test_identify_truncated_and_twice(inproc_server):
    client = inproc_server.connect()
    client.send(b"IDENTIFY\n" + struct.pack(">i", 100) + b"{}")
    client.sock.shutdown(socket.SHUT_WR)
    assert client.read_response() == b"E_BAD_BODY IDENTIFY failed to read body"
    client = inproc_server.connect()
    client.identify()
    client.send(b"IDENTIFY\n")
    assert client.read_response() == b"E_INVALID cannot IDENTIFY again"
    assert client.is_closed()


def test_wrong_magic_is_rejected(inproc_server):
    client = inproc_server.connect(magic=b"  V2")
    client.send(b"PING\n")
    assert client.is_closed()


def test_a_closed_connection_leaves_its_registrations_but_they_stay(inproc_lookupd):
    client = producer(inproc_lookupd, ["events", "events ch"])
    assert len(lookup(inproc_lookupd, "events")["producers"]) == 1
    client.close()
    gevent_wait_until(lambda: lookup(inproc_lookupd, "events")["producers"] == [],
                      message="the producer removed")
    assert get_json(inproc_lookupd, "/nodes") == (200, {"producers": []})
    assert get_json(inproc_lookupd, "/topics") == (200, {"topics": ["events"]})
    assert get_json(inproc_lookupd, "/channels?topic=events") == (200, {"channels": ["ch"]})


def test_unregister(inproc_lookupd):
    client = producer(inproc_lookupd, ["t1 a", "t1 b", "t1 tmp#ephemeral"])
    assert client.command("UNREGISTER t1 a") == b"OK"
    assert client.command("UNREGISTER t1 tmp#ephemeral") == b"OK"   # the ephemeral one goes
    assert sorted(get_json(inproc_lookupd, "/channels?topic=t1")[1]["channels"]) == ["a", "b"]
    assert client.command("UNREGISTER t1") == b"OK"
    assert lookup(inproc_lookupd, "t1")["producers"] == []
    assert [n["topics"] for n in get_json(inproc_lookupd, "/nodes")[1]["producers"]] == [[]]


def test_a_silent_producer_drops_out_until_it_pings(inproc_lookupd_factory):
    lookupd = inproc_lookupd_factory("--inactive-producer-timeout=200ms")
    client = producer(lookupd, ["quiet"])
    assert len(lookup(lookupd, "quiet")["producers"]) == 1
    gevent_wait_until(lambda: lookup(lookupd, "quiet")["producers"] == [], timeout=5,
                      message="the inactive producer filtered out")
    assert client.command("PING") == b"OK"
    assert len(lookup(lookupd, "quiet")["producers"]) == 1


# -- HTTP API --------------------------------------------------------------------------------

def test_ping_info_and_errors(inproc_server):
    status, _, body = inproc_server.http("GET", "/ping")
    assert (status, body) == (200, b"OK")
    status, headers, body = inproc_server.http("GET", "/info")
    assert (status, json.loads(body)) == (200, {"version": "1.3.0"})
    assert headers["x-nsq-content-type"] == "nsq; version=1.0"
    assert get_json(inproc_server, "/lookup") == (400, {"message": "MISSING_ARG_TOPIC"})
    assert get_json(inproc_server, "/lookup?topic=nope") == (404, {"message": "TOPIC_NOT_FOUND"})
    assert get_json(inproc_server, "/channels?topic=nope") == (200, {"channels": []})
    assert inproc_server.http("POST", "/lookup?topic=x")[0] == 405


def test_nodes_shape(inproc_lookupd):
    producer(inproc_lookupd, ["a", "b c"], broadcast_address="node1", hostname="h1",
             tcp_port=1, http_port=2)
    [node] = get_json(inproc_lookupd, "/nodes")[1]["producers"]
    assert list(node) == PRODUCER_KEYS + ["tombstones", "topics"]
    assert (node["hostname"], node["broadcast_address"], node["tcp_port"], node["http_port"],
            sorted(node["topics"]), node["tombstones"]) == (
        "h1", "node1", 1, 2, ["a", "b"], [False, False])


def test_topic_and_channel_administration(inproc_lookupd):
    administer_topics_and_channels(inproc_lookupd)


@pytest.mark.parametrize("path, message", LOOKUPD_ADMIN_ERRORS)
def test_admin_argument_errors(inproc_server, path, message):
    status, _, body = inproc_server.http("POST", path)
    assert (status, json.loads(body)) == (400, {"message": message})


def test_a_tombstone_hides_one_producer_of_one_topic(inproc_lookupd_factory):
    lookupd = inproc_lookupd_factory("--tombstone-lifetime=200ms")
    producer(lookupd, ["tomb", "other"], broadcast_address="nodeA", http_port=7001)
    producer(lookupd, ["tomb"], broadcast_address="nodeB", http_port=7002)
    assert lookupd.http("POST", "/topic/tombstone?topic=tomb&node=nodeA:7001")[0] == 200
    assert [p["broadcast_address"] for p in lookup(lookupd, "tomb")["producers"]] == ["nodeB"]
    assert len(lookup(lookupd, "other")["producers"]) == 1
    gevent_wait_until(lambda: len(lookup(lookupd, "tomb")["producers"]) == 2, timeout=5,
                      message="the tombstone expired")


def test_debug_lists_registrations(inproc_lookupd):
    producer(inproc_lookupd, ["dbg ch"], broadcast_address="n1")
    status, data = get_json(inproc_lookupd, "/debug")
    assert (status, set(data)) == (200, {"client::", "topic:dbg:", "channel:dbg:ch"})
    [entry] = data["topic:dbg:"]
    assert (entry["broadcast_address"], entry["tombstoned"]) == ("n1", False)
