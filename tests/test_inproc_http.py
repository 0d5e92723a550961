"""nsqd's HTTP API in the test process (the fast tier): the Falcon app over the core,
through Falcon's test client, with the tables test_http_api.py runs against a daemon,
and each action's effect on the topics and channels."""

import json
import logging

import pytest

from inprocess import InProcessNsqd
from nsq_cases import (
    ADMIN_ROUTE_ERRORS, CHANNEL_KEYS, CLIENT_KEYS, CONFIG_ERRORS, CONFIG_VALUES,
    HTTP_LIMIT_FLAGS, JSON_TYPE, MEMORY_KEYS, MPUB_BODIES, MPUB_ERRORS, NSQ_CONTENT_TYPE,
    PRODUCER_KEYS, PUB_ERRORS, ROUTING_ERRORS, TOPIC_KEYS, assert_error, assert_ok_empty,
    call)
from support import FRAME_RESPONSE, gevent_wait_until

OK = (FRAME_RESPONSE, b"OK")


@pytest.fixture(scope="module")
def inproc_shared():
    """One core with the tables' small limits, for the tests that touch only their own
    topics or send bad requests."""
    daemon = InProcessNsqd(*HTTP_LIMIT_FLAGS)
    yield daemon
    daemon.close()


def pub(daemon, topic, body, query=""):
    response = call(daemon, "POST", f"/pub?topic={topic}{query}", body)
    assert response[:3:2] == (200, b"OK"), response


# -- /ping, /info, routing ------------------------------------------------------------------

def test_ping_is_plain_ok_without_nsq_header(inproc_server):
    status, headers, body = call(inproc_server, "GET", "/ping")
    assert (status, body) == (200, b"OK")
    assert "x-nsq-content-type" not in headers
    assert headers["content-type"].startswith("text/plain")


def test_info_fields(inproc_server):
    status, headers, body = call(inproc_server, "GET", "/info")
    assert (status, headers["content-type"], headers["x-nsq-content-type"]) == (
        200, JSON_TYPE, NSQ_CONTENT_TYPE)
    info = json.loads(body)
    assert list(info) == [
        "version", "broadcast_address", "hostname", "http_port", "tcp_port", "start_time",
        "max_heartbeat_interval", "max_output_buffer_size", "max_output_buffer_timeout",
        "max_deflate_level"]
    assert (info["version"], info["start_time"]) == ("1.3.0", inproc_server.core.start_time)


@pytest.mark.parametrize("method, path, status, message", ROUTING_ERRORS)
def test_routing_errors(inproc_server, method, path, status, message):
    assert_error(call(inproc_server, method, path, b"x" if method == "POST" else None),
                 status, message)


# -- /pub and /mpub -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/pub", "/put"])
def test_pub_then_consume(inproc_server, path):
    topic = f"pub{path[1:]}"
    body = b"hello \x00\xff\nworld"
    status, headers, data = call(inproc_server, "POST", f"{path}?topic={topic}", body,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, data, headers["x-nsq-content-type"]) == (200, b"OK", NSQ_CONTENT_TYPE)
    consumer = inproc_server.subscribe(topic, "ch", rdy=1)
    msg = consumer.read_message()
    assert (msg.body, msg.attempts) == (body, 1)
    entry = inproc_server.topic_stats(topic)
    assert (entry["message_count"], entry["message_bytes"]) == (1, len(body))


@pytest.mark.parametrize("query, body, status, message", PUB_ERRORS)
@pytest.mark.parametrize("path", ["/pub", "/put"])
def test_pub_errors(inproc_server, path, query, body, status, message):
    assert_error(call(inproc_server, "POST", path + query, body), status, message)


def test_pub_defer_holds_the_message_then_delivers(inproc_server):
    consumer = inproc_server.subscribe("deferred", "ch", rdy=1)
    channel = inproc_server.channel("deferred", "ch")
    pub(inproc_server, "deferred", b"later", "&defer=300")
    assert (len(channel.deferred), channel.depth, len(channel.in_flight)) == (1, 0, 0)
    assert consumer.read_message().body == b"later"
    assert not channel.deferred


def test_rejected_defer_creates_the_topic_but_publishes_nothing(inproc_server):
    assert_error(call(inproc_server, "POST", "/pub?topic=undeferred&defer=x", b"m"),
                 400, "INVALID_DEFER")
    assert inproc_server.core.topics["undeferred"].message_count == 0


@pytest.mark.parametrize("path", ["/mpub", "/mput"])
@pytest.mark.parametrize("query, body, expected", MPUB_BODIES)
def test_mpub_then_consume(inproc_nsqd_factory, path, query, body, expected):
    nsqd = inproc_nsqd_factory(*HTTP_LIMIT_FLAGS)
    status, _, data = call(nsqd, "POST", f"{path}?topic=t{query}", body)
    assert (status, data) == (200, b"OK")
    assert nsqd.core.topics["t"].message_count == len(expected)
    consumer = nsqd.subscribe("t", "ch", rdy=len(expected))
    assert [consumer.read_message().body for _ in expected] == expected


@pytest.mark.parametrize("query, body, status, message", MPUB_ERRORS)
@pytest.mark.parametrize("path", ["/mpub", "/mput"])
def test_mpub_errors(inproc_server, path, query, body, status, message):
    assert_error(call(inproc_server, "POST", path + query, body), status, message)


# -- /stats ---------------------------------------------------------------------------------

def test_stats_json_shape_and_counts_after_traffic(inproc_nsqd):
    consumer = inproc_nsqd.connect()
    consumer.identify(client_id="cons-1", hostname="cons-host", user_agent="probe/1.0")
    consumer.sub("t", "ch")
    producer = inproc_nsqd.connect()
    assert producer.pub("t", b"tcp-1") == OK
    assert call(inproc_nsqd, "POST", "/mpub?topic=t", b"h1\nh2\nh3\nh4")[0] == 200
    consumer.command("RDY 2")
    first, second = consumer.read_message(), consumer.read_message()
    consumer.command("RDY 0")
    consumer.command(b"FIN " + first.id)
    consumer.command(b"REQ " + second.id + b" 0")
    channel = inproc_nsqd.channel("t", "ch")
    gevent_wait_until(lambda: channel.requeue_count == 1 and not channel.in_flight,
                      message="FIN and REQ taken")

    status, headers, body = call(inproc_nsqd, "GET", "/stats?format=json&topic=t")
    assert (status, headers["content-type"]) == (200, JSON_TYPE)
    doc = json.loads(body)
    assert list(doc) == ["version", "health", "start_time", "topics", "memory", "producers"]
    assert (doc["version"], doc["health"]) == ("1.3.0", "OK")
    assert list(doc["memory"]) == MEMORY_KEYS
    [topic] = doc["topics"]
    assert set(topic) == TOPIC_KEYS
    assert (topic["topic_name"], topic["depth"], topic["message_count"],
            topic["message_bytes"]) == ("t", 0, 5, len(b"tcp-1") + 8)
    [ch] = topic["channels"]
    assert set(ch) == CHANNEL_KEYS
    assert (ch["depth"], ch["in_flight_count"], ch["deferred_count"], ch["message_count"],
            ch["requeue_count"], ch["timeout_count"], ch["client_count"]) == (4, 0, 0, 5, 1, 0, 1)
    [client] = ch["clients"]
    assert list(client) == CLIENT_KEYS
    assert (client["client_id"], client["hostname"], client["user_agent"],
            client["remote_address"]) == ("cons-1", "cons-host", "probe/1.0",
                                          consumer.remote_address)
    assert (client["state"], client["ready_count"], client["message_count"],
            client["finish_count"], client["requeue_count"]) == (3, 0, 2, 1, 1)
    [prod] = doc["producers"]
    assert list(prod) == PRODUCER_KEYS
    assert (prod["remote_address"], prod["pub_counts"]) == (
        producer.remote_address, [{"topic": "t", "count": 1}])


def test_stats_filters_and_includes(inproc_nsqd):
    for path in ("/topic/create?topic=alpha", "/channel/create?topic=alpha&channel=c1",
                 "/channel/create?topic=alpha&channel=c2", "/topic/create?topic=beta",
                 "/channel/create?topic=beta&channel=c1"):
        assert_ok_empty(call(inproc_nsqd, "POST", path))
    [only] = inproc_nsqd.stats(topic="alpha", channel="c2")["topics"]
    assert [c["channel_name"] for c in only["channels"]] == ["c2"]
    assert [t["topic_name"] for t in inproc_nsqd.stats(channel="c2")["topics"]] == ["alpha"]
    assert not inproc_nsqd.stats(topic="missing")["topics"]
    inproc_nsqd.subscribe("alpha", "c1")
    doc = inproc_nsqd.stats(topic="alpha", include_clients="false", include_mem="0")
    assert "memory" not in doc and not doc["producers"]
    assert not doc["topics"][0]["channels"][0]["clients"]
    assert doc["topics"][0]["channels"][0]["client_count"] == 1


def test_stats_text_format(inproc_nsqd):
    assert_ok_empty(call(inproc_nsqd, "POST", "/topic/create?topic=texts"))
    assert_ok_empty(call(inproc_nsqd, "POST", "/channel/create?topic=texts&channel=reader"))
    call(inproc_nsqd, "POST", "/mpub?topic=texts", b"a\nb\nc")
    status, headers, body = call(inproc_nsqd, "GET", "/stats")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    lines = body.decode().splitlines()
    assert lines[0].startswith("nsqd v1.3.0") and "Health: OK" in lines
    at = lines.index(next(line for line in lines if line.startswith("   [texts          ]")))
    assert lines[at].startswith(f"   [{'texts':<15}] depth: {0:<5} be-depth: {0:<5} "
                                f"msgs: {3:<8} e2e%: ")
    assert lines[at + 1].startswith(
        f"      [{'reader':<25}] depth: {3:<5} be-depth: {0:<5} inflt: {0:<4} def: {0:<4} "
        f"re-q: {0:<5} timeout: {0:<5} msgs: {3:<8} e2e%: ")


# -- topic and channel actions --------------------------------------------------------------

def test_create_is_idempotent_and_reads_the_post_form(inproc_nsqd):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        assert_ok_empty(call(inproc_nsqd, "POST", "/topic/create", "topic=made", form))
    assert_ok_empty(call(inproc_nsqd, "POST", "/channel/create", "topic=made&channel=c", form))
    assert list(inproc_nsqd.core.topics) == ["made"]
    assert list(inproc_nsqd.core.topics["made"].channels) == ["c"]


def test_topic_pause_holds_messages_at_the_topic(inproc_nsqd):
    consumer = inproc_nsqd.subscribe("t", "ch", rdy=5)
    topic, channel = inproc_nsqd.core.topics["t"], inproc_nsqd.channel("t", "ch")
    assert_ok_empty(call(inproc_nsqd, "POST", "/topic/pause?topic=t"))
    assert topic.paused
    pub(inproc_nsqd, "t", b"held-1")
    pub(inproc_nsqd, "t", b"held-2")
    assert (topic.depth, channel.depth, channel.message_count) == (2, 0, 0)
    assert "*P [t              ]" in call(inproc_nsqd, "GET", "/stats")[2].decode()
    assert_ok_empty(call(inproc_nsqd, "POST", "/topic/unpause?topic=t"))
    assert [consumer.read_message().body for _ in range(2)] == [b"held-1", b"held-2"]
    assert (topic.paused, topic.depth) == (False, 0)


def test_channel_pause_delivers_nothing_until_unpaused(inproc_nsqd):
    consumer = inproc_nsqd.subscribe("t", "ch", rdy=1)
    channel = inproc_nsqd.channel("t", "ch")
    assert_ok_empty(call(inproc_nsqd, "POST", "/channel/pause?topic=t&channel=ch"))
    pub(inproc_nsqd, "t", b"waiting")
    assert (channel.paused, channel.depth, len(channel.in_flight)) == (True, 1, 0)
    assert_ok_empty(call(inproc_nsqd, "POST", "/channel/unpause?topic=t&channel=ch"))
    assert consumer.read_message().body == b"waiting"
    assert (channel.paused, channel.depth, len(channel.in_flight)) == (False, 0, 1)


@pytest.mark.parametrize("path", ["/topic/empty?topic=t", "/channel/empty?topic=t&channel=ch"])
def test_empty_drops_the_queue(inproc_nsqd, path):
    assert_ok_empty(call(inproc_nsqd, "POST", "/topic/create?topic=t"))
    if path.startswith("/channel"):
        assert_ok_empty(call(inproc_nsqd, "POST", "/channel/create?topic=t&channel=ch"))
    call(inproc_nsqd, "POST", "/mpub?topic=t", b"1\n2\n3")
    holder = inproc_nsqd.core.topics["t"]
    holder = holder.channels.get("ch", holder)
    assert holder.depth == 3
    assert_ok_empty(call(inproc_nsqd, "POST", path))
    assert holder.depth == 0
    pub(inproc_nsqd, "t", b"after")
    assert inproc_nsqd.subscribe("t", "ch", rdy=5).read_message().body == b"after"


def test_deleting_closes_consumers_and_ends_the_actors(inproc_nsqd):
    doomed = inproc_nsqd.subscribe("t", "doomed", rdy=1)
    kept = inproc_nsqd.subscribe("t", "kept", rdy=1)
    topic, channel = inproc_nsqd.core.topics["t"], inproc_nsqd.channel("t", "doomed")
    assert_ok_empty(call(inproc_nsqd, "POST", "/channel/delete?topic=t&channel=doomed"))
    assert doomed.is_closed()
    assert list(topic.channels) == ["kept"]
    pub(inproc_nsqd, "t", b"still")
    assert kept.read_message().body == b"still"
    assert_error(call(inproc_nsqd, "POST", "/channel/delete?topic=t&channel=doomed"),
                 404, "CHANNEL_NOT_FOUND")
    assert_ok_empty(call(inproc_nsqd, "POST", "/topic/delete?topic=t"))
    assert kept.is_closed()
    assert not inproc_nsqd.core.topics
    for actor in (channel, topic):
        actor.greenlet.join(timeout=5)
        assert actor.greenlet.dead, f"{actor.label} still runs after its delete"
    assert_error(call(inproc_nsqd, "POST", "/topic/delete?topic=t"), 404, "TOPIC_NOT_FOUND")


@pytest.mark.parametrize("path, status, message", ADMIN_ROUTE_ERRORS)
def test_admin_route_errors(inproc_server, path, status, message):
    assert_ok_empty(call(inproc_server, "POST", "/topic/create?topic=exists"))
    assert_error(call(inproc_server, "POST", path), status, message)


def test_actions_are_in_the_metadata_and_survive_a_restart(inproc_nsqd_factory):
    nsqd = inproc_nsqd_factory("--mem-queue-size=2")
    call(nsqd, "POST", "/mpub?topic=kept", b"1\n2\n3\n4\n5")   # the topic keeps them
    assert_ok_empty(call(nsqd, "POST", "/channel/create?topic=kept&channel=paused"))
    assert_ok_empty(call(nsqd, "POST", "/channel/pause?topic=kept&channel=paused"))
    assert_ok_empty(call(nsqd, "POST", "/topic/create?topic=gone"))
    assert_ok_empty(call(nsqd, "POST", "/topic/delete?topic=gone"))
    channel = nsqd.channel("kept", "paused")
    assert (channel.depth, channel.backend_depth) == (5, 3)   # 2 in memory, 3 on disk
    nsqd.restart()
    assert list(nsqd.core.topics) == ["kept"]
    channel = nsqd.core.topics["kept"].channels["paused"]
    assert channel.paused and channel.depth == 5
    assert_ok_empty(call(nsqd, "POST", "/channel/unpause?topic=kept&channel=paused"))
    consumer = nsqd.subscribe("kept", "paused", rdy=5)
    assert sorted(consumer.read_message().body for _ in range(5)) == [b"1", b"2", b"3", b"4",
                                                                      b"5"]


# -- /config/:opt ---------------------------------------------------------------------------

@pytest.mark.parametrize("opt, expected", CONFIG_VALUES)
def test_config_get(inproc_server, opt, expected):
    status, headers, body = call(inproc_server, "GET", f"/config/{opt}")
    assert (status, json.loads(body), headers["x-nsq-content-type"]) == (
        200, expected, NSQ_CONTENT_TYPE)


@pytest.mark.parametrize("method, opt, body, status, message", CONFIG_ERRORS)
def test_config_errors(inproc_server, method, opt, body, status, message):
    assert_error(call(inproc_server, method, f"/config/{opt}", body), status, message)
    assert json.loads(call(inproc_server, "GET", "/config/log_level")[2]) == 2


def test_config_put_log_level(inproc_nsqd):
    logger = logging.getLogger("greensq")
    level = logger.level
    try:
        status, _, body = call(inproc_nsqd, "PUT", "/config/log_level", b"debug")
        assert (status, json.loads(body), logger.level) == (200, 1, logging.DEBUG)
        assert json.loads(call(inproc_nsqd, "PUT", "/config/log_level", b"WARN")[2]) == 3
        assert json.loads(call(inproc_nsqd, "GET", "/config/log_level")[2]) == 3
    finally:
        logger.setLevel(level)
