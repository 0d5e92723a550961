"""greensq.client: connection, Producer, typed errors and the HTTP clients, against real
greensq daemons. The client runs in this process on gevent sockets (no monkey-patching);
waits poll with ``gevent_wait_until`` so the client's greenlets keep running."""


import pytest

from support import free_port, gevent_wait_until, nsqlookupd_daemon

from greensq.client import (
    ERRORS, BadBodyError, BadMessageError, BadTopicError, Connection,
    FinFailedError, HTTPError, LookupdHTTPClient, NoConnectionsError, NsqdHTTPClient,
    Producer, ProtocolError, ReqFailedError, TouchFailedError, error_from_frame)
from greensq.client.connection import encode_command
from greensq.services.shared.version import __version__


def tcp(daemon):
    return f"127.0.0.1:{daemon.tcp_port}"


class CommandLog:
    """An ``on_command`` hook recording each command verb line sent."""

    def __init__(self):
        self.lines = []

    def __call__(self, conn, data):
        self.lines.append(bytes(data).split(b"\n", 1)[0])


# -- errors -----------------------------------------------------------------------------

def test_error_frames_become_typed_errors_and_only_fin_req_touch_failures_are_not_fatal():
    for code, cls in ERRORS.items():
        err = error_from_frame(f"{code} something went wrong".encode())
        assert type(err) is cls and err.code == code
        assert err.description == "something went wrong"
        assert err.fatal == (code not in ("E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"))
    assert {FinFailedError, ReqFailedError, TouchFailedError} == {
        cls for cls in ERRORS.values() if not cls.fatal}
    unknown = error_from_frame(b"E_SOMETHING_NEW text")
    assert type(unknown) is ProtocolError and unknown.code == "E_SOMETHING_NEW" and unknown.fatal


# -- connection -------------------------------------------------------------------------

def test_identify_negotiates_features_and_reports_our_identity(nsqd):
    conn = Connection(tcp(nsqd), msg_timeout=5.0, heartbeat_interval=2.0,
                      output_buffer_size=4096, output_buffer_timeout=0.05, sample_rate=10,
                      client_id="worker-7", hostname="box.example")
    settings = conn.connect()
    try:
        assert settings["version"] == "1.3.0"
        assert settings["msg_timeout"] == 5000
        assert settings["output_buffer_size"] == 4096
        assert settings["output_buffer_timeout"] == 50
        assert settings["sample_rate"] == 10
        assert conn.request(encode_command("SUB", "ident", "ch")).get(timeout=5) == b"OK"
        client = nsqd.channel_stats("ident", "ch")["clients"][0]
        assert client["client_id"] == "worker-7"
        assert client["hostname"] == "box.example"
        assert client["user_agent"] == f"greensq/{__version__}"
        assert client["sample_rate"] == 10
    finally:
        conn.close()


def test_heartbeats_are_answered_with_nop_and_the_connection_stays_up(nsqd):
    log = CommandLog()
    conn = Connection(tcp(nsqd), heartbeat_interval=1.0, on_command=log)
    conn.connect()
    try:
        gevent_wait_until(lambda: log.lines.count(b"NOP") >= 1, timeout=5, message="a NOP")
        assert not conn.closed
        assert conn.request(encode_command("PUB", "hb", body=b"x")).get(timeout=5) == b"OK"
    finally:
        conn.close()


def test_a_command_parameter_with_a_space_is_refused_before_it_can_split_the_line():
    with pytest.raises(ValueError):
        encode_command("PUB", "two words", body=b"x")


# -- producer ---------------------------------------------------------------------------

def test_publish_multi_publish_and_deferred_publish(nsqd):
    nsqd.http("POST", "/topic/create?topic=pubs")
    nsqd.http("POST", "/channel/create?topic=pubs&channel=ch")
    with Producer([tcp(nsqd)]) as producer:
        assert producer.publish("pubs", b"one") == b"OK"
        assert producer.multi_publish("pubs", [b"two", b"three"]) == b"OK"
        assert producer.deferred_publish("pubs", b"later", 60000) == b"OK"
        assert producer.deferred_publish_async("pubs", b"later2", 60000).get(timeout=5) == b"OK"
        assert producer.multi_publish_async("pubs", [b"four"]).get(timeout=5) == b"OK"
    channel = nsqd.channel_stats("pubs", "ch")
    assert channel["depth"] == 4
    assert channel["deferred_count"] == 2


def test_pipelined_publishes_share_one_connection_and_answers_match_in_order(nsqd):
    producer = Producer([tcp(nsqd)])
    producer.connect()
    conn = producer.connection
    results = [producer.publish_async("pipe", b"m%d" % i) for i in range(500)]
    # All 500 went out before any answer was read: they are in flight together.
    assert conn.pending_requests == 500
    assert [r.get(timeout=10) for r in results] == [b"OK"] * 500
    assert producer.connection is conn
    assert nsqd.topic_stats("pipe")["message_count"] == 500
    (client,) = [p for p in nsqd.stats()["producers"] if p["user_agent"].startswith("greensq/")]
    assert client["pub_counts"] == [{"topic": "pipe", "count": 500}]
    producer.close()


def test_a_bad_topic_name_raises_bad_topic_error_and_the_producer_reconnects(nsqd):
    producer = Producer([tcp(nsqd)])
    with pytest.raises(BadTopicError) as info:
        producer.publish("bad$topic", b"x")
    assert info.value.fatal
    assert info.value.description == 'PUB topic name "bad$topic" is not valid'
    # nsqd closed that connection; the next publish opens a new one.
    assert producer.publish("good", b"x") == b"OK"
    result = producer.publish_async("also$bad", b"x")
    with pytest.raises(BadTopicError):
        result.get(timeout=5)
    producer.close()


def test_oversized_messages_and_bodies_raise_typed_errors(nsqd_factory):
    nsqd = nsqd_factory("--max-msg-size=100", "--max-body-size=300")
    producer = Producer([tcp(nsqd)])
    with pytest.raises(BadMessageError) as info:
        producer.publish("big", b"x" * 101)
    assert str(info.value) == "E_BAD_MESSAGE PUB message too big 101 > 100"
    with pytest.raises(BadMessageError):
        producer.multi_publish("big", [b"x" * 101])
    with pytest.raises(BadBodyError) as info:
        producer.multi_publish("big", [b"x" * 100] * 4)
    assert "MPUB body too big" in str(info.value)
    assert producer.publish("big", b"x" * 100) == b"OK"
    producer.close()


def test_producer_fails_over_to_the_next_nsqd(nsqd):
    dead = f"127.0.0.1:{free_port()}"
    producer = Producer([dead, tcp(nsqd)], connect_timeout=2)
    assert producer.publish("failover", b"x") == b"OK"
    assert producer.address == tcp(nsqd)
    producer.close()
    with pytest.raises(NoConnectionsError):
        Producer([dead], connect_timeout=2).publish("failover", b"x")


def test_producer_reconnects_after_an_nsqd_restart(nsqd):
    producer = Producer([tcp(nsqd)])
    assert producer.publish("restart", b"before") == b"OK"
    first = producer.connection
    nsqd.restart()
    assert producer.publish("restart", b"after") == b"OK"
    assert producer.connection is not first
    assert nsqd.topic_stats("restart")["depth"] == 2
    producer.close()


# -- HTTP clients -----------------------------------------------------------------------

def test_nsqd_http_client(nsqd):
    http = NsqdHTTPClient(f"127.0.0.1:{nsqd.http_port}")
    assert http.ping()
    assert http.info()["version"] == "1.3.0"
    http.create_topic("web")
    http.create_channel("web", "ch")
    assert http.pub("web", b"one") == b"OK"
    assert http.pub("web", b"later", defer_ms=60000) == b"OK"
    assert http.mpub("web", [b"a", b"b\nwith newline"]) == b"OK"
    assert http.mpub("web", [b"c", b"d"], binary=False) == b"OK"
    stats = http.stats(topic="web")
    (channel,) = stats["topics"][0]["channels"]
    assert (channel["depth"], channel["deferred_count"]) == (5, 1)
    http.pause_channel("web", "ch")
    assert http.stats(topic="web")["topics"][0]["channels"][0]["paused"] is True
    http.unpause_channel("web", "ch")
    http.empty_channel("web", "ch")
    http.delete_channel("web", "ch")
    http.pause_topic("web")
    http.unpause_topic("web")
    http.empty_topic("web")
    http.delete_topic("web")
    with pytest.raises(HTTPError) as info:
        http.delete_topic("web")
    assert (info.value.status, info.value.message) == (404, "TOPIC_NOT_FOUND")
    with pytest.raises(HTTPError) as info:
        http.pub("bad$topic", b"x")
    assert (info.value.status, info.value.message) == (400, "INVALID_TOPIC")


def test_lookupd_http_client(tmp_path, nsqd_factory):
    lookupd = nsqlookupd_daemon(tmp_path / "lookupd").start()
    try:
        nsqd = nsqd_factory(f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}",
                            "--broadcast-address=127.0.0.1")
        nsqd.http("POST", "/topic/create?topic=found")
        nsqd.http("POST", "/channel/create?topic=found&channel=ch")
        http = LookupdHTTPClient(f"127.0.0.1:{lookupd.http_port}")
        lookup = gevent_wait_until(lambda: _lookup(http, "found"), message="registration")
        assert lookup.channels == ["ch"]
        (node,) = lookup.producers
        assert node.tcp_address == tcp(nsqd)
        assert node.http_port == nsqd.http_port
        assert http.topics() == ["found"]
        assert http.channels("found") == ["ch"]
        assert [n.tcp_address for n in http.nodes()] == [tcp(nsqd)]
        assert http.ping()
        with pytest.raises(HTTPError) as info:
            http.lookup("missing")
        assert info.value.status == 404
    finally:
        lookupd.stop()


def _lookup(http, topic):
    try:
        lookup = http.lookup(topic)
    except HTTPError:
        return None
    return lookup if lookup.producers and lookup.channels else None
