"""nsqd's V2 protocol in the test process (the fast tier): NSQ's replies and error texts
from the tables test_protocol_v2.py runs against a daemon, and each command's effect,
over socket pairs to the core (tests/inprocess.py)."""

import json
import socket
import struct
import time

import pytest

from inprocess import InProcessNsqd
from nsq_cases import (
    BAD_MAGICS, COMMANDS_BEFORE_SUB, HUGE_BODIES, IDENTIFY_BODY_ERRORS, IDENTIFY_FIELD_ERRORS,
    IDENTIFY_NEGOTIATION, NEGOTIATION_KEYS, NOT_OWNER_ERRORS, PUBLISH_ERRORS, SUB_ERRORS,
    SUB_VALID_NAMES, SUBSCRIBED_COMMAND_ERRORS, TRUNCATED_BODIES, UNKNOWN_COMMANDS,
    UNKNOWN_ID, UNKNOWN_ID_ERRORS, V2_LIMIT_FLAGS, assert_fatal, negotiate, size, sized)
from support import FRAME_ERROR, FRAME_MESSAGE, FRAME_RESPONSE, gevent_wait_until

OK = (FRAME_RESPONSE, b"OK")


@pytest.fixture(scope="module")
def inproc_shared():
    """One core with the tables' small limits, for the tests that only send bad input."""
    daemon = InProcessNsqd(*V2_LIMIT_FLAGS)
    yield daemon
    daemon.close()


# -- IDENTIFY -------------------------------------------------------------------------------

def test_identify_feature_negotiation_defaults(inproc_nsqd):
    client = inproc_nsqd.connect()
    reply = client.identify(feature_negotiation=True)
    assert list(reply) == NEGOTIATION_KEYS
    assert reply == {
        "max_rdy_count": 2500, "version": "1.3.0", "max_msg_timeout": 900000,
        "msg_timeout": 60000, "tls_v1": False, "deflate": False, "deflate_level": 6,
        "max_deflate_level": 6, "snappy": False, "sample_rate": 0, "auth_required": False,
        "output_buffer_size": 16384, "output_buffer_timeout": 250,
    }
    assert client.pub("t", b"x") == OK   # no upgrade negotiated: no extra OK first


@pytest.mark.parametrize("fields, expected", IDENTIFY_NEGOTIATION)
def test_identify_negotiated_values(inproc_server, fields, expected):
    reply = negotiate(inproc_server.connect(), fields)
    assert {key: reply[key] for key in expected} == expected


def test_identify_sets_what_the_session_and_stats_show(inproc_nsqd):
    client = inproc_nsqd.connect()
    assert client.identify(client_id="my-id", hostname="my-host", user_agent="tester/1.0",
                           sample_rate=50, msg_timeout=2000, heartbeat_interval=5000) == b"OK"
    session = inproc_nsqd.session(client)
    assert (session.client_id, session.hostname, session.user_agent, session.sample_rate,
            session.msg_timeout, session.heartbeat_interval) == (
        "my-id", "my-host", "tester/1.0", 50, 2.0, 5.0)
    client.sub("t", "ch")
    [entry] = gevent_wait_until(lambda: inproc_nsqd.channel_stats("t", "ch")["clients"])
    assert (entry["client_id"], entry["remote_address"], entry["state"]) == (
        "my-id", client.remote_address, 3)


@pytest.mark.parametrize("fields, error", IDENTIFY_FIELD_ERRORS)
def test_identify_field_errors(inproc_server, fields, error):
    client = inproc_server.connect()
    client.command("IDENTIFY", json.dumps(fields).encode())
    assert_fatal(client, f"E_BAD_BODY IDENTIFY {error}")


def test_identify_after_sub_is_rejected(inproc_server):
    client = inproc_server.connect()
    client.sub("t", "ch")
    client.command("IDENTIFY", b"{}")
    assert_fatal(client, "E_INVALID cannot IDENTIFY in current state")


# -- SUB, and every error before it ---------------------------------------------------------

@pytest.mark.parametrize("line, error", SUB_ERRORS + COMMANDS_BEFORE_SUB + UNKNOWN_COMMANDS)
def test_fatal_command_errors_before_sub(inproc_server, line, error):
    client = inproc_server.connect()
    client.command(line)
    assert_fatal(client, error)


@pytest.mark.parametrize("topic, channel", SUB_VALID_NAMES)
def test_sub_valid_names(inproc_server, topic, channel):
    client = inproc_server.connect()
    client.command(f"SUB {topic} {channel}")
    assert client.read_frame() == OK
    assert channel in inproc_server.core.topics[topic].channels


def test_sub_twice_and_sub_without_heartbeats(inproc_server):
    client = inproc_server.connect()
    client.sub("t", "ch")
    client.command("SUB t other")
    assert_fatal(client, "E_INVALID cannot SUB in current state")
    client = inproc_server.connect()
    assert client.identify(heartbeat_interval=-1) == b"OK"
    client.command("SUB t ch")
    assert_fatal(client, "E_INVALID cannot SUB with heartbeats disabled")


def test_max_channel_consumers(inproc_nsqd_factory):
    nsqd = inproc_nsqd_factory("--max-channel-consumers=1")
    first = nsqd.subscribe("limited", "ch")
    second = nsqd.connect()
    second.command("SUB limited ch")
    assert_fatal(second, "E_SUB_FAILED SUB failed consumers for limited:ch exceeds limit of 1")
    nsqd.subscribe("limited", "other")   # each channel has its own limit
    first.close()
    channel = nsqd.channel("limited", "ch")
    gevent_wait_until(lambda: channel.client_count == 0, message="the consumer gone")
    nsqd.subscribe("limited", "ch")


# -- PUB / MPUB / DPUB ----------------------------------------------------------------------

def test_pub_mpub_dpub_store_what_they_say(inproc_server):
    client = inproc_server.connect()
    assert client.pub("stored", b"one") == OK
    assert client.mpub("stored", [b"two", b"three"]) == OK
    client.command("DPUB stored 5000", b"four")   # --max-req-timeout is allowed
    assert client.read_frame() == OK
    assert client.pub("stored", b"m" * 1000) == OK   # exactly --max-msg-size
    topic = inproc_server.core.topics["stored"]
    assert (topic.message_count, topic.depth) == (5, 5)   # no channel: the topic keeps them
    assert inproc_server.session(client).pub_counts == {"stored": 5}
    [producer] = [p for p in inproc_server.stats()["producers"]
                  if p["remote_address"] == client.remote_address]
    assert producer["pub_counts"] == [{"topic": "stored", "count": 5}]


# Bad bodies: PUB / MPUB / DPUB's, IDENTIFY's, and sizes too big to be read at all.
BODY_ERRORS = (
    PUBLISH_ERRORS
    + [(b"IDENTIFY\n" + raw, f"E_BAD_BODY {error}") for raw, error in IDENTIFY_BODY_ERRORS]
    + [(line + b"\n" + size(2**31 - 1) + b"abc", error) for line, error in HUGE_BODIES])


@pytest.mark.parametrize("raw, error", BODY_ERRORS)
def test_body_errors(inproc_server, raw, error):
    client = inproc_server.connect()
    client.send(raw)
    assert_fatal(client, error)


@pytest.mark.parametrize("raw, error", TRUNCATED_BODIES)
def test_truncated_bodies(inproc_server, raw, error):
    client = inproc_server.connect()
    client.send(raw)
    client.sock.shutdown(socket.SHUT_WR)
    assert_fatal(client, error)


def test_failed_mpub_creates_the_topic_and_publishes_nothing(inproc_server):
    client = inproc_server.connect()
    client.command("MPUB half", size(2) + sized(b"x") + size(0))
    assert_fatal(client, "E_BAD_MESSAGE MPUB invalid message(1) body size 0")
    topic = inproc_server.core.topics["half"]
    assert (topic.message_count, topic.depth) == (0, 0)


def test_pipelined_commands_answer_in_order(inproc_server):
    client = inproc_server.connect()
    client.send(b"".join(b"PUB piped\n" + sized(b"%d" % i) for i in range(50))
                + b"NOP\nPUB bad!\n" + sized(b"x"))
    for _ in range(50):
        assert client.read_frame() == OK
    assert_fatal(client, 'E_BAD_TOPIC PUB topic name "bad!" is not valid')
    assert inproc_server.core.topics["piped"].message_count == 50


# -- RDY / FIN / REQ / TOUCH / CLS / NOP ----------------------------------------------------

@pytest.mark.parametrize("line, error", SUBSCRIBED_COMMAND_ERRORS)
def test_subscribed_command_errors(inproc_server, line, error):
    client = inproc_server.connect()
    client.sub("t", "ch")
    client.command(line)
    if error is None:
        assert client.read_frame() == (FRAME_RESPONSE, b"CLOSE_WAIT")
    else:
        assert_fatal(client, error)


@pytest.mark.parametrize("line, count", [(b"RDY 0", 0), (b"RDY 200", 200), (b"RDY", 1),
                                         (b"RDY ", 0)])
def test_rdy_is_taken_silently(inproc_nsqd_factory, line, count):
    nsqd = inproc_nsqd_factory(*V2_LIMIT_FLAGS)
    client = nsqd.subscribe("t", "ch")
    client.command(line)
    nsqd.wait_ready(client, count)
    assert client.pub("other", b"x") == OK   # no reply to RDY came first


@pytest.mark.parametrize("verb, line, error", UNKNOWN_ID_ERRORS)
def test_unknown_message_id_is_not_fatal(inproc_nsqd, verb, line, error):
    client = inproc_nsqd.subscribe("t", "ch")
    for _ in range(2):
        client.command(line % UNKNOWN_ID)
        assert client.read_frame() == (FRAME_ERROR, (error % UNKNOWN_ID.decode()).encode())
    client.command("RDY 1")
    assert inproc_nsqd.connect().pub("t", b"after") == OK
    msg = client.read_message()
    assert msg.body == b"after"
    client.command(b"FIN " + msg.id)
    channel = inproc_nsqd.channel("t", "ch")
    gevent_wait_until(lambda: not channel.in_flight, message="FIN taken")


@pytest.mark.parametrize("line, error", NOT_OWNER_ERRORS)
def test_message_owned_by_another_client(inproc_nsqd, line, error):
    owner = inproc_nsqd.subscribe("t", "ch", rdy=1)
    other = inproc_nsqd.subscribe("t", "ch")
    assert inproc_nsqd.connect().pub("t", b"mine") == OK
    msg = owner.read_message()
    other.command(line % msg.id)
    assert other.read_frame() == (FRAME_ERROR, (error % msg.id.decode()).encode())
    owner.command(b"FIN " + msg.id)
    channel = inproc_nsqd.channel("t", "ch")
    gevent_wait_until(lambda: not channel.in_flight, message="the owner's FIN taken")


def test_fin_counts_and_frees_the_message(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=1)
    assert inproc_nsqd.connect().pub("t", b"done") == OK
    msg = client.read_message()
    channel = inproc_nsqd.channel("t", "ch")
    assert list(channel.in_flight) == [msg.id]
    client.command(b"FIN " + msg.id)
    gevent_wait_until(lambda: not channel.in_flight, message="FIN taken")
    [consumer] = channel.consumers
    assert (consumer.finish_count, consumer.in_flight_count, channel.depth) == (1, 0, 0)


def test_cls_stops_deliveries(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=10)
    producer = inproc_nsqd.connect()
    assert producer.pub("t", b"first") == OK
    first = client.read_message()
    client.command("CLS")
    assert client.read_frame() == (FRAME_RESPONSE, b"CLOSE_WAIT")
    client.command("RDY 10")   # ignored while closing: no reply, no error
    assert producer.mpub("t", [b"a", b"b", b"c"]) == OK
    channel = inproc_nsqd.channel("t", "ch")
    gevent_wait_until(lambda: channel.depth == 3, message="depth 3")
    client.command(b"FIN " + first.id)   # still allowed while closing
    assert client.pub("other", b"x") == OK   # a reply, not a message, comes next
    [consumer] = channel.consumers
    assert (consumer.closing, consumer.ready_count, consumer.finish_count, channel.depth) == (
        True, 0, 1, 3)
    client.command("SUB t ch")
    assert_fatal(client, "E_INVALID cannot SUB in current state")


def test_nop_has_no_reply(inproc_server):
    client = inproc_server.connect()
    client.command("NOP")
    client.command("NOP extra params")
    assert client.pub("t", b"x") == OK


# -- delivery -------------------------------------------------------------------------------

def test_message_frame_layout(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=1)
    before = time.time_ns()
    assert inproc_nsqd.connect().pub("t", b"\x00binary\xffbody") == OK
    kind, data = client.read_frame()
    after = time.time_ns()
    assert kind == FRAME_MESSAGE
    timestamp, attempts, msg_id = struct.unpack(">qH16s", data[:26])
    assert before - 10**9 <= timestamp <= after + 10**9
    assert attempts == 1
    assert len(msg_id) == 16 and all(c in b"0123456789abcdef" for c in msg_id)
    assert data[26:] == b"\x00binary\xffbody"


def test_ephemeral_channel_and_topic_go_with_their_last_consumer(inproc_nsqd):
    client = inproc_nsqd.subscribe("t#ephemeral", "ch#ephemeral")
    kept = inproc_nsqd.subscribe("durable", "ch#ephemeral")
    durable = inproc_nsqd.subscribe("durable", "ch")
    topics = inproc_nsqd.core.topics
    client.close()
    gevent_wait_until(lambda: "t#ephemeral" not in topics, message="ephemeral topic deleted")
    kept.close()
    gevent_wait_until(lambda: list(topics["durable"].channels) == ["ch"],
                      message="ephemeral channel deleted")
    assert durable.pub("durable", b"x") == OK


def test_a_heartbeat_arrives_and_a_nop_answers_it(inproc_nsqd):
    client = inproc_nsqd.connect()
    assert client.identify(heartbeat_interval=1000) == b"OK"
    assert client.read_frame(skip_heartbeats=False) == (FRAME_RESPONSE, b"_heartbeat_")
    client.command("NOP")
    assert client.pub("t", b"x") == OK


# -- hostile input --------------------------------------------------------------------------

@pytest.mark.parametrize("magic", BAD_MAGICS)
def test_bad_protocol_magic(inproc_server, magic):
    client = inproc_server.connect(magic=magic)
    client.send(b"PUB t\n" + sized(b"x"))
    assert_fatal(client, "E_BAD_PROTOCOL")


def test_crlf_line_endings(inproc_server):
    client = inproc_server.connect()
    client.send(b"PUB crlf\r\n" + sized(b"x") + b"NOP\r\n")
    assert client.read_frame() == OK
    client.send(b"SUB crlf ch\r\n")
    assert client.read_frame() == OK


@pytest.mark.parametrize("length, closed", [(16383, False), (16384, True)])
def test_command_line_limit(inproc_server, length, closed):
    """NSQ's 16 KiB reader buffer must hold the whole line, its newline included; a longer
    line closes the connection without a frame."""
    client = inproc_server.connect()
    name = b"a" * (length - len(b"PUB "))
    client.send(b"PUB " + name + b"\n" + sized(b"x"))
    if closed:
        assert client.is_closed()
        assert not client.unread
    else:
        assert_fatal(client, f'E_BAD_TOPIC PUB topic name "{name.decode()}" is not valid')
