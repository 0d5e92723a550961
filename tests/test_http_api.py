"""nsqd's HTTP API over real HTTP against a real daemon: NSQ's status codes, bodies and
headers (``/ping``, ``/info``, ``/pub``, ``/mpub``, ``/stats``, the topic and channel
admin routes, ``/config/:opt``), with effects checked through ``/stats`` and real V2
consumers.

Most tests share one module-scoped daemon with small limits (each test uses its own
topic names), once without and once with HTTP workers; tests that change daemon-wide
settings start their own.
"""

import http.client
import itertools
import json
import socket
import struct
import time
import uuid

import pytest

from nsq_cases import (
    ADMIN_ROUTE_ERRORS, CHANNEL_KEYS, CLIENT_KEYS, CONFIG_ERRORS, CONFIG_VALUES,
    HTTP_LIMIT_FLAGS, JSON_TYPE, MAX_MSG_SIZE, MAX_REQ_TIMEOUT_MS, MEMORY_KEYS, MPUB_BODIES,
    MPUB_ERRORS, NS, NSQ_CONTENT_TYPE, PRODUCER_KEYS, PUB_ERRORS, ROUTING_ERRORS, TOPIC_KEYS,
    assert_error, assert_ok_empty, call)
from support import FRAME_RESPONSE, Daemon, V2Client, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes

_names = itertools.count()


@pytest.fixture(scope="module", params=[0, 2], ids=lambda count: f"http-workers={count}")
def shared(tmp_path_factory, request):
    """The daemon the tests share: its core serving HTTP itself, and again with HTTP
    workers in front of it (--http-workers), which must answer alike."""
    daemon = Daemon(tmp_path_factory.mktemp("http_api"),
                    [*HTTP_LIMIT_FLAGS, f"--http-workers={request.param}"])
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def name():
    """A fresh valid topic/channel name per call."""
    def make(prefix="t"):
        return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:8]}"
    return make


@pytest.fixture
def clients():
    """V2 clients that are closed at the end of the test."""
    opened = []

    def connect(port):
        client = V2Client(port, timeout=5.0)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def pub(daemon, topic, body, query=""):
    response = call(daemon, "POST", f"/pub?topic={topic}{query}", body)
    assert response[0] == 200 and response[2] == b"OK", response
    return response


def stats(daemon, **params):
    return daemon.stats(**params)


def channel_of(daemon, topic, channel):
    return daemon.channel_stats(topic, channel)


def consume(client, count):
    return [client.read_message() for _ in range(count)]


# -- /ping, /info, routing, headers -----------------------------------------------------

def test_ping_is_plain_ok_without_nsq_header(shared):
    status, headers, body = call(shared, "GET", "/ping")
    assert (status, body) == (200, b"OK")
    assert "x-nsq-content-type" not in headers
    assert headers["content-type"].startswith("text/plain")


def test_info_fields_and_types(shared):
    status, headers, body = call(shared, "GET", "/info")
    assert status == 200
    assert headers["content-type"] == JSON_TYPE
    assert headers["x-nsq-content-type"] == NSQ_CONTENT_TYPE
    info = json.loads(body)
    assert list(info)[:10] == [
        "version", "broadcast_address", "hostname", "http_port", "tcp_port", "start_time",
        "max_heartbeat_interval", "max_output_buffer_size", "max_output_buffer_timeout",
        "max_deflate_level"]
    assert info["version"] == "1.3.0"
    assert (info["tcp_port"], info["http_port"]) == (shared.tcp_port, shared.http_port)
    assert info["hostname"] == socket.gethostname()
    assert isinstance(info["broadcast_address"], str) and info["broadcast_address"]
    assert isinstance(info["start_time"], int)
    assert info["start_time"] == stats(shared)["start_time"]
    assert info["max_heartbeat_interval"] == 60 * NS
    assert info["max_output_buffer_size"] == 65536
    assert isinstance(info["max_output_buffer_timeout"], int)
    assert info["max_output_buffer_timeout"] >= NS   # nanoseconds, not seconds
    assert info["max_deflate_level"] == 6


@pytest.mark.parametrize("method, path, status, message", ROUTING_ERRORS)
def test_routing_errors(shared, method, path, status, message):
    assert_error(call(shared, method, path, b"x" if method == "POST" else None),
                 status, message)


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/info", None),
    ("GET", "/stats", None),
    ("GET", "/stats?format=json", None),
    ("POST", "/pub?topic=hdr_pub", b"m"),
    ("POST", "/mpub?topic=hdr_mpub", b"a\nb"),
    ("POST", "/topic/create?topic=hdr_create", b""),
    ("GET", "/config/max_msg_size", None),
    ("POST", "/pub", b"m"),
])
def test_api_responses_carry_nsq_content_type(shared, method, path, body):
    status, headers, _ = call(shared, method, path, body)
    assert status in (200, 400), status
    assert headers.get("x-nsq-content-type") == NSQ_CONTENT_TYPE


# -- /pub ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/pub", "/put"])
def test_pub_then_consume_over_tcp(shared, name, clients, path):
    topic = name()
    body = b"hello \x00\xff\nworld"
    status, headers, data = call(shared, "POST", f"{path}?topic={topic}", body)
    assert (status, data) == (200, b"OK")
    assert headers["x-nsq-content-type"] == NSQ_CONTENT_TYPE
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    msg = consumer.read_message()
    assert (msg.body, msg.attempts) == (body, 1)
    assert shared.topic_stats(topic)["message_count"] == 1
    assert shared.topic_stats(topic)["message_bytes"] == len(body)


def test_pub_body_is_verbatim_even_with_form_content_type(shared, name, clients):
    """``curl -d`` sends a form content type; the body is still the message."""
    topic = name()
    body = b"a=b&topic=other"
    status, _, data = call(shared, "POST", f"/pub?topic={topic}", body,
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, data) == (200, b"OK")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    assert consumer.read_message().body == body


def test_pub_defer_holds_the_message_then_delivers(shared, name, clients):
    topic = name()
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=0)
    pub(shared, topic, b"later", "&defer=1000")
    ch = wait_until(lambda: (c := channel_of(shared, topic, "ch")) and c["deferred_count"] == 1
                    and c, message="deferred_count 1")
    assert (ch["depth"], ch["in_flight_count"], ch["message_count"]) == (0, 0, 1)
    wait_until(lambda: channel_of(shared, topic, "ch")["depth"] == 1,
               message="deferred message released to the queue")
    assert channel_of(shared, topic, "ch")["deferred_count"] == 0
    consumer.command("RDY 1")
    assert consumer.read_message().body == b"later"


@pytest.mark.parametrize("defer", ["0", str(MAX_REQ_TIMEOUT_MS)])
def test_pub_defer_bounds_are_accepted(shared, name, defer):
    pub(shared, name(), b"x", f"&defer={defer}")


@pytest.mark.parametrize("query, body, status, message", PUB_ERRORS)
@pytest.mark.parametrize("path", ["/pub", "/put"])
def test_pub_errors(shared, path, query, body, status, message):
    assert_error(call(shared, "POST", path + query, body), status, message)


def test_pub_with_max_size_body_is_accepted(shared, name, clients):
    topic = name()
    pub(shared, topic, b"m" * MAX_MSG_SIZE)
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    assert consumer.read_message().body == b"m" * MAX_MSG_SIZE


def test_rejected_defer_creates_the_topic_but_publishes_nothing(shared, name):
    """NSQ resolves (creates) the topic before it validates ``defer``."""
    topic = name()
    assert_error(call(shared, "POST", f"/pub?topic={topic}&defer=x", b"m"),
                 400, "INVALID_DEFER")
    entry = shared.topic_stats(topic)
    assert entry is not None and entry["message_count"] == 0


# -- /mpub -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/mpub", "/mput"])
@pytest.mark.parametrize("query, body, expected", MPUB_BODIES)
def test_mpub_then_consume_over_tcp(shared, name, clients, path, query, body, expected):
    topic = name()
    status, headers, data = call(shared, "POST", f"{path}?topic={topic}{query}", body)
    assert (status, data) == (200, b"OK")
    assert headers["x-nsq-content-type"] == NSQ_CONTENT_TYPE
    wait_until(lambda: shared.topic_stats(topic)["message_count"] == len(expected),
               message="topic message_count")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=len(expected))
    assert [m.body for m in consume(consumer, len(expected))] == expected


def test_mpub_body_is_verbatim_even_with_form_content_type(shared, name, clients):
    topic = name()
    status, _, data = call(shared, "POST", f"/mpub?topic={topic}", b"k=v\nsecond",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, data) == (200, b"OK")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=2)
    assert [m.body for m in consume(consumer, 2)] == [b"k=v", b"second"]


@pytest.mark.parametrize("query, body, status, message", MPUB_ERRORS)
@pytest.mark.parametrize("path", ["/mpub", "/mput"])
def test_mpub_errors(shared, path, query, body, status, message):
    assert_error(call(shared, "POST", path + query, body), status, message)


def test_malformed_binary_mpub_publishes_nothing(shared, name):
    """All or nothing: a bad second message keeps the good first one out too; the
    topic itself is created before the body is parsed, as NSQ does."""
    topic = name()
    body = struct.pack(">i", 2) + struct.pack(">i", 2) + b"ok" + struct.pack(">i", 0)
    assert_error(call(shared, "POST", f"/mpub?topic={topic}&binary=true", body),
                 413, "BAD_MESSAGE")
    entry = shared.topic_stats(topic)
    assert entry is not None and (entry["message_count"], entry["depth"]) == (0, 0)


# -- /stats ----------------------------------------------------------------------------

def _address(sock):
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_stats_json_shape_and_counts_after_traffic(shared, name, clients):
    topic = name()
    consumer = clients(shared.tcp_port)
    consumer.identify(client_id="cons-1", hostname="cons-host", user_agent="probe/1.0")
    consumer.sub(topic, "ch", rdy=0)
    producer = clients(shared.tcp_port)
    assert producer.pub(topic, b"tcp-1") == (FRAME_RESPONSE, b"OK")
    call(shared, "POST", f"/mpub?topic={topic}", b"h1\nh2\nh3\nh4")
    wait_until(lambda: channel_of(shared, topic, "ch")["depth"] == 5, message="depth 5")

    consumer.command("RDY 2")
    first, second = consume(consumer, 2)
    consumer.command("RDY 0")
    consumer.command(b"FIN " + first.id)
    consumer.command(b"REQ " + second.id + b" 0")

    def settled():
        ch = channel_of(shared, topic, "ch")
        return ch["requeue_count"] == 1 and ch["clients"][0]["finish_count"] == 1 and ch

    ch = wait_until(settled, message="FIN and REQ counted")
    status, headers, body = call(shared, "GET", f"/stats?format=json&topic={topic}")
    assert status == 200 and headers["content-type"] == JSON_TYPE
    doc = json.loads(body)
    assert list(doc) == ["version", "health", "start_time", "topics", "memory", "producers"]
    assert (doc["version"], doc["health"]) == ("1.3.0", "OK")
    assert isinstance(doc["start_time"], int)
    assert list(doc["memory"]) == MEMORY_KEYS

    [entry] = doc["topics"]
    assert set(entry) == TOPIC_KEYS
    assert entry["topic_name"] == topic
    assert (entry["depth"], entry["backend_depth"], entry["message_count"],
            entry["message_bytes"], entry["paused"]) == (0, 0, 5, len(b"tcp-1") + 8, False)
    assert "count" in entry["e2e_processing_latency"]

    [ch] = entry["channels"]
    assert set(ch) == CHANNEL_KEYS
    assert (ch["channel_name"], ch["depth"], ch["backend_depth"], ch["in_flight_count"],
            ch["deferred_count"], ch["message_count"], ch["requeue_count"],
            ch["timeout_count"], ch["client_count"], ch["paused"]) == (
        "ch", 4, 0, 0, 0, 5, 1, 0, 1, False)

    [client] = ch["clients"]
    assert list(client) == CLIENT_KEYS
    assert client["client_id"] == "cons-1" and client["hostname"] == "cons-host"
    assert client["user_agent"] == "probe/1.0" and client["version"] == "V2"
    assert client["remote_address"] == _address(consumer.sock)
    assert (client["state"], client["ready_count"], client["in_flight_count"],
            client["message_count"], client["finish_count"], client["requeue_count"]) == (
        3, 0, 0, 2, 1, 1)
    assert isinstance(client["connect_ts"], int)
    assert (client["tls"], client["tls_cipher_suite"], client["tls_version"]) == (False, "", "")
    assert (client["deflate"], client["snappy"], client["sample_rate"]) == (False, False, 0)

    [prod] = doc["producers"]
    assert list(prod) == PRODUCER_KEYS
    assert prod["remote_address"] == _address(producer.sock)
    assert prod["pub_counts"] == [{"topic": topic, "count": 1}]
    assert prod["state"] == 0


def test_stats_filters(shared, name, clients):
    alpha, beta = name("alpha"), name("beta")
    for topic, channels in ((alpha, ("c1", "c2")), (beta, ("c1",))):
        assert_ok_empty(call(shared, "POST", f"/topic/create?topic={topic}"))
        for channel in channels:
            assert_ok_empty(call(shared, "POST",
                                 f"/channel/create?topic={topic}&channel={channel}"))

    [only] = stats(shared, topic=alpha)["topics"]
    assert only["topic_name"] == alpha
    assert [c["channel_name"] for c in only["channels"]] == ["c1", "c2"]

    [only] = stats(shared, topic=alpha, channel="c2")["topics"]
    assert [c["channel_name"] for c in only["channels"]] == ["c2"]

    # A channel filter alone keeps only the topics that have that channel.
    listed = stats(shared, channel="c2")["topics"]
    names = [t["topic_name"] for t in listed]
    assert alpha in names and beta not in names
    assert all([c["channel_name"] for c in t["channels"]] == ["c2"] for t in listed)
    assert names == sorted(names)

    assert not stats(shared, topic=name("missing"))["topics"]


def test_stats_include_clients_and_include_mem(shared, name, clients):
    topic = name()
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    producer = clients(shared.tcp_port)
    assert producer.pub(topic, b"p") == (FRAME_RESPONSE, b"OK")
    consumer.read_message()

    full = stats(shared, topic=topic)
    assert len(full["topics"][0]["channels"][0]["clients"]) == 1 and full["producers"]

    for value in ("false", "0"):
        doc = stats(shared, topic=topic, include_clients=value)
        ch = doc["topics"][0]["channels"][0]
        assert not ch["clients"] and ch["client_count"] == 1
        assert not doc["producers"]
        assert "memory" in doc

    for value in ("false", "0"):
        doc = stats(shared, topic=topic, include_mem=value)
        assert "memory" not in doc
        assert doc["topics"][0]["channels"][0]["clients"]
    assert "memory" in stats(shared, topic=topic, include_mem="bogus")
    assert stats(shared, topic=topic, include_clients="bogus")["producers"]


@pytest.mark.parametrize("query", ["", "?format=text", "?format=anything"])
def test_stats_text_format(shared, name, query):
    topic = name()
    assert_ok_empty(call(shared, "POST", f"/topic/create?topic={topic}"))
    assert_ok_empty(call(shared, "POST", f"/channel/create?topic={topic}&channel=reader"))
    call(shared, "POST", f"/mpub?topic={topic}", b"a\nb\nc")
    wait_until(lambda: channel_of(shared, topic, "reader")["depth"] == 3, message="depth 3")

    status, headers, body = call(shared, "GET", "/stats" + query)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert headers["x-nsq-content-type"] == NSQ_CONTENT_TYPE
    lines = body.decode().splitlines()
    assert lines[0].startswith("nsqd v1.3.0")
    assert "Health: OK" in lines
    topic_line = (f"   [{topic:<15}] depth: {0:<5} be-depth: {0:<5} msgs: {3:<8} e2e%: ")
    channel_line = (f"      [{'reader':<25}] depth: {3:<5} be-depth: {0:<5} inflt: {0:<4} "
                    f"def: {0:<4} re-q: {0:<5} timeout: {0:<5} msgs: {3:<8} e2e%: ")
    at = [i for i, line in enumerate(lines) if line.startswith(topic_line)]
    assert at, body.decode()
    assert lines[at[0] + 1].startswith(channel_line), body.decode()


# -- topic and channel admin routes -----------------------------------------------------

def test_topic_and_channel_create(shared, name):
    topic = name()
    assert_ok_empty(call(shared, "POST", f"/topic/create?topic={topic}"))
    assert_ok_empty(call(shared, "POST", f"/topic/create?topic={topic}"))   # idempotent
    entry = shared.topic_stats(topic)
    assert (entry["channels"], entry["depth"], entry["message_count"]) == ([], 0, 0)
    assert_ok_empty(call(shared, "POST", f"/channel/create?topic={topic}&channel=c"))
    assert channel_of(shared, topic, "c")["depth"] == 0


def test_admin_routes_read_the_post_form(shared, name):
    topic = name()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_ok_empty(call(shared, "POST", "/topic/create", f"topic={topic}", form))
    assert_ok_empty(call(shared, "POST", "/channel/create", f"topic={topic}&channel=f", form))
    assert channel_of(shared, topic, "f") is not None


def test_topic_pause_holds_messages_at_the_topic(shared, name, clients):
    topic = name()
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=5)
    assert_ok_empty(call(shared, "POST", f"/topic/pause?topic={topic}"))
    assert shared.topic_stats(topic)["paused"] is True
    pub(shared, topic, b"held-1")
    pub(shared, topic, b"held-2")
    wait_until(lambda: shared.topic_stats(topic)["depth"] == 2, message="topic depth 2")
    ch = channel_of(shared, topic, "ch")
    assert (ch["depth"], ch["in_flight_count"], ch["message_count"]) == (0, 0, 0)
    text = call(shared, "GET", "/stats")[2].decode()
    assert f"*P [{topic:<15}]" in text

    assert_ok_empty(call(shared, "POST", f"/topic/unpause?topic={topic}"))
    assert [m.body for m in consume(consumer, 2)] == [b"held-1", b"held-2"]
    entry = shared.topic_stats(topic)
    assert (entry["paused"], entry["depth"]) == (False, 0)


def test_channel_pause_delivers_nothing_until_unpaused(shared, name, clients):
    topic = name()
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    wait_until(lambda: channel_of(shared, topic, "ch")["clients"][0]["ready_count"] == 1,
               message="RDY 1 applied")
    assert_ok_empty(call(shared, "POST", f"/channel/pause?topic={topic}&channel=ch"))
    assert channel_of(shared, topic, "ch")["paused"] is True
    pub(shared, topic, b"waiting")
    wait_until(lambda: channel_of(shared, topic, "ch")["depth"] == 1, message="depth 1")
    ch = channel_of(shared, topic, "ch")
    assert (ch["in_flight_count"], ch["clients"][0]["message_count"]) == (0, 0)
    text = call(shared, "GET", "/stats")[2].decode()
    assert f"   *P [{'ch':<25}]" in text

    assert_ok_empty(call(shared, "POST", f"/channel/unpause?topic={topic}&channel=ch"))
    assert consumer.read_message().body == b"waiting"
    ch = channel_of(shared, topic, "ch")
    assert (ch["paused"], ch["depth"], ch["in_flight_count"]) == (False, 0, 1)


def test_channel_empty_drops_depth(shared, name, clients):
    topic = name()
    assert_ok_empty(call(shared, "POST", f"/topic/create?topic={topic}"))
    assert_ok_empty(call(shared, "POST", f"/channel/create?topic={topic}&channel=ch"))
    call(shared, "POST", f"/mpub?topic={topic}", b"1\n2\n3")
    wait_until(lambda: channel_of(shared, topic, "ch")["depth"] == 3, message="depth 3")
    assert_ok_empty(call(shared, "POST", f"/channel/empty?topic={topic}&channel=ch"))
    wait_until(lambda: channel_of(shared, topic, "ch")["depth"] == 0, message="emptied")
    pub(shared, topic, b"after")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=5)
    assert consumer.read_message().body == b"after"
    ch = channel_of(shared, topic, "ch")
    assert (ch["depth"], ch["in_flight_count"]) == (0, 1)


def test_topic_empty_drops_depth(shared, name, clients):
    topic = name()
    call(shared, "POST", f"/mpub?topic={topic}", b"1\n2\n3")
    wait_until(lambda: shared.topic_stats(topic)["depth"] == 3, message="topic depth 3")
    assert_ok_empty(call(shared, "POST", f"/topic/empty?topic={topic}"))
    wait_until(lambda: shared.topic_stats(topic)["depth"] == 0, message="topic emptied")
    pub(shared, topic, b"after")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=5)
    assert consumer.read_message().body == b"after"
    assert channel_of(shared, topic, "ch")["in_flight_count"] == 1


def test_channel_delete_closes_its_consumers(shared, name, clients):
    topic = name()
    doomed, survivor = clients(shared.tcp_port), clients(shared.tcp_port)
    doomed.sub(topic, "doomed", rdy=1)
    survivor.sub(topic, "kept", rdy=1)
    assert_ok_empty(call(shared, "POST", f"/channel/delete?topic={topic}&channel=doomed"))
    assert doomed.is_closed()
    assert [c["channel_name"] for c in shared.topic_stats(topic)["channels"]] == ["kept"]
    pub(shared, topic, b"still")
    assert survivor.read_message().body == b"still"
    assert_error(call(shared, "POST", f"/channel/delete?topic={topic}&channel=doomed"),
                 404, "CHANNEL_NOT_FOUND")


def test_topic_delete_closes_consumers_and_removes_it(shared, name, clients):
    topic = name()
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    pub(shared, topic, b"x")
    consumer.read_message()
    assert_ok_empty(call(shared, "POST", f"/topic/delete?topic={topic}"))
    assert consumer.is_closed()
    assert shared.topic_stats(topic) is None
    assert_error(call(shared, "POST", f"/topic/delete?topic={topic}"), 404, "TOPIC_NOT_FOUND")


@pytest.mark.parametrize("path, status, message", ADMIN_ROUTE_ERRORS)
def test_admin_route_errors(shared, path, status, message):
    assert_ok_empty(call(shared, "POST", "/topic/create?topic=exists"))
    assert_error(call(shared, "POST", path), status, message)


# -- /config/:opt ----------------------------------------------------------------------

@pytest.mark.parametrize("opt, expected", CONFIG_VALUES)
def test_config_get(shared, opt, expected):
    status, headers, body = call(shared, "GET", f"/config/{opt}")
    assert (status, json.loads(body)) == (200, expected), body
    assert headers["x-nsq-content-type"] == NSQ_CONTENT_TYPE


@pytest.mark.parametrize("method, opt, body, status, message", CONFIG_ERRORS)
def test_config_errors(shared, method, opt, body, status, message):
    assert_error(call(shared, method, f"/config/{opt}", body), status, message)
    assert json.loads(call(shared, "GET", "/config/log_level")[2]) == 2


def test_config_put_log_level_and_lookupd_addresses(nsqd_factory):
    daemon = nsqd_factory("--msg-timeout=1s")
    assert json.loads(call(daemon, "GET", "/config/msg_timeout")[2]) == NS

    status, headers, body = call(daemon, "PUT", "/config/log_level", b"debug")
    assert (status, json.loads(body)) == (200, 1)
    assert headers["x-nsq-content-type"] == NSQ_CONTENT_TYPE
    assert json.loads(call(daemon, "GET", "/config/log_level")[2]) == 1
    assert json.loads(call(daemon, "PUT", "/config/log_level", b"WARN")[2]) == 3

    addresses = ["127.0.0.1:1", "127.0.0.1:2"]
    status, _, body = call(daemon, "PUT", "/config/nsqlookupd_tcp_addresses",
                           json.dumps(addresses))
    assert (status, json.loads(body)) == (200, addresses)
    assert json.loads(call(daemon, "GET", "/config/nsqlookupd_tcp_addresses")[2]) == addresses
    status, _, body = call(daemon, "PUT", "/config/nsqlookupd_tcp_addresses", b"[]")
    assert (status, json.loads(body)) == (200, [])
    assert call(daemon, "GET", "/ping")[2] == b"OK"


# -- keep-alive and pipelining ----------------------------------------------------------

def test_keep_alive_connection_serves_many_pubs(shared, name):
    topic = name()
    conn = http.client.HTTPConnection("127.0.0.1", shared.http_port, timeout=10)
    try:
        sock = None
        for i in range(200):
            conn.request("POST", f"/pub?topic={topic}", body=f"m{i}".encode())
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"OK")
            assert not resp.will_close
            sock = sock or conn.sock
            assert conn.sock is sock            # the same connection throughout
    finally:
        conn.close()
    assert shared.topic_stats(topic)["message_count"] == 200


def test_pipelined_requests_on_one_socket(shared, name, clients):
    topic = name()
    count = 50
    requests = b"".join(
        (f"POST /pub?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
         f"Content-Length: {len(f'p{i}')}\r\n\r\np{i}").encode() for i in range(count))
    with socket.create_connection(("127.0.0.1", shared.http_port), timeout=10) as sock:
        sock.sendall(requests)
        reader = sock.makefile("rb")

        class _Shim:
            """One buffered reader for every response (each one closes its 'file')."""

            def makefile(self, *args, **kwargs):
                return self

            def __getattr__(self, attr):
                return getattr(reader, attr)

            def close(self):
                pass

        try:
            for _ in range(count):
                resp = http.client.HTTPResponse(_Shim())
                resp.begin()
                assert (resp.status, resp.read()) == (200, b"OK")
        finally:
            reader.close()                  # else the socket outlives the ``with``
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=count)
    assert [m.body for m in consume(consumer, count)] == [f"p{i}".encode()
                                                          for i in range(count)]


# -- request heads as clients write them -------------------------------------------------

def raw_request(port, head, body=b""):
    """One request written byte for byte (the head with ``Connection: close``); the
    response's status, lower-cased headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head_bytes, _, data = received.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, data


def test_request_headers_are_case_insensitive_and_folded_lines_accepted(shared, name,
                                                                         clients):
    topic = name()
    status, headers, data = raw_request(
        shared.http_port,
        f"POST /pub?topic={topic} HTTP/1.1\r\nhOsT: 127.0.0.1\r\n"
        "X-Folded: first part\r\n  second part\r\ncontent-LENGTH: 5\r\n".encode(),
        b"hello")
    assert (status, data) == (200, b"OK")
    # An HTTP date (IMF-fixdate), as every response carries.
    assert time.strptime(headers["date"], "%a, %d %b %Y %H:%M:%S GMT")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    assert consumer.read_message().body == b"hello"


def test_chunked_request_body_wins_over_content_length(shared, name, clients):
    topic = name()
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    status, _, data = raw_request(
        shared.http_port,
        f"POST /pub?topic={topic} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n".encode(), chunked)
    assert (status, data) == (200, b"OK")
    consumer = clients(shared.tcp_port)
    consumer.sub(topic, "ch", rdy=1)
    assert consumer.read_message().body == b"hello world"


def test_request_head_with_a_line_that_is_no_header_is_a_400(shared, name):
    # As Go's net/http answers it: "malformed MIME header line".
    topic = name()
    status, _, _ = raw_request(
        shared.http_port,
        f"POST /pub?topic={topic} HTTP/1.1\r\nHost: x\r\nnot a header\r\n"
        "Content-Length: 2\r\n".encode(), b"ok")
    assert status == 400
    assert shared.topic_stats(topic) is None
