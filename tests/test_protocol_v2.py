"""nsqd's TCP protocol V2 over real sockets: exact frames, NSQ's exact error texts, and
whether the connection stays open (E_FIN_FAILED / E_REQ_FAILED / E_TOUCH_FAILED) or is
closed (every other error)."""

import json
import select
import socket
import struct
import threading
import time

import pytest

from nsq_cases import (
    BAD_MAGICS, COMMANDS_BEFORE_SUB, HUGE_BODIES, IDENTIFY_BODY_ERRORS, IDENTIFY_FIELD_ERRORS,
    IDENTIFY_NEGOTIATION, NEGOTIATION_KEYS, NOT_OWNER_ERRORS, PUBLISH_ERRORS, SUB_ERRORS,
    SUB_VALID_NAMES, SUBSCRIBED_COMMAND_ERRORS, TRUNCATED_BODIES, UNKNOWN_COMMANDS,
    UNKNOWN_ID, UNKNOWN_ID_ERRORS, V2_LIMIT_FLAGS, assert_fatal, mpub_body, negotiate, size, sized)
from support import (FRAME_ERROR, FRAME_MESSAGE, FRAME_RESPONSE, Daemon, Message, V2Client,
                     wait_until)

pytestmark = pytest.mark.slow   # starts daemon processes

OK = (FRAME_RESPONSE, b"OK")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("nsqd-v2"), V2_LIMIT_FLAGS).start()
    yield daemon
    daemon.stop()


_names = iter(range(1 << 30))


def unique(prefix="t"):
    return f"{prefix}{next(_names)}_{time.monotonic_ns() % 10**9}"


# -- helpers --------------------------------------------------------------------------------

def connect(daemon):
    return V2Client(daemon.tcp_port, timeout=10)


def subscribed(daemon, topic, channel, rdy=None, **identify):
    client = connect(daemon)
    if identify:
        client.identify(**identify)
    client.sub(topic, channel, rdy=rdy)
    return client


def wait_ready(daemon, topic, channel, ready):
    """Until every client of the channel has the given RDY (the channel has seen it)."""
    def check():
        ch = daemon.channel_stats(topic, channel)
        return ch and ch["clients"] and all(c["ready_count"] == ready for c in ch["clients"])
    wait_until(check, message=f"RDY {ready} on {topic}:{channel}")


def expect_no_frame(client, seconds):
    """Fail if any frame other than a heartbeat arrives within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        frame = client.received_frame()
        if frame is not None:
            raise AssertionError(f"unexpected frame {frame!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _, _ = select.select([client.sock], [], [], remaining)
        if ready:
            client._fill()


def collect_messages(clients, count, timeout=10.0, fin=True):
    """``count`` messages from several consumers, read as they arrive; FINs each one.
    Returns one list of Message per client."""
    got = [[] for _ in clients]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < count:
        progressed = False
        for index, client in enumerate(clients):
            frame = client.received_frame()
            if frame is None:
                continue
            progressed = True
            kind, data = frame
            assert kind == FRAME_MESSAGE, frame
            timestamp, attempts, msg_id = struct.unpack(">qH16s", data[:26])
            got[index].append(Message(msg_id, attempts, timestamp, data[26:]))
            if fin:
                client.command(b"FIN " + msg_id)
        if progressed:
            continue
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"got {sum(map(len, got))} of {count} messages"
        ready, _, _ = select.select([c.sock for c in clients], [], [], remaining)
        for client in clients:
            if client.sock in ready:
                client._fill()
    return got


def ping_ok(daemon):
    status, _, body = daemon.http("GET", "/ping")
    return status == 200 and body == b"OK"


def assert_healthy(daemon):
    """/ping answers and a fresh connection can publish and consume."""
    assert ping_ok(daemon)
    topic = unique("health")
    producer = connect(daemon)
    assert producer.pub(topic, b"still alive") == OK
    consumer = subscribed(daemon, topic, "ch", rdy=1)
    assert consumer.read_message().body == b"still alive"
    producer.close()
    consumer.close()


# -- IDENTIFY -------------------------------------------------------------------------------

def test_identify_feature_negotiation_defaults(nsqd):
    client = connect(nsqd)
    client.command("IDENTIFY", json.dumps({"feature_negotiation": True}).encode())
    kind, data = client.read_frame()
    assert kind == FRAME_RESPONSE
    reply = json.loads(data)
    assert list(reply) == NEGOTIATION_KEYS
    assert reply == {
        "max_rdy_count": 2500, "version": "1.3.0", "max_msg_timeout": 900000,
        "msg_timeout": 60000, "tls_v1": False, "deflate": False, "deflate_level": 6,
        "max_deflate_level": 6, "snappy": False, "sample_rate": 0, "auth_required": False,
        "output_buffer_size": 16384, "output_buffer_timeout": 250,
    }
    # No upgrade was negotiated, so no extra OK frame follows: the next reply is PUB's.
    assert client.pub("t", b"x") == OK


@pytest.mark.parametrize("fields, expected", IDENTIFY_NEGOTIATION)
def test_identify_negotiated_values(server, fields, expected):
    client = connect(server)
    reply = negotiate(client, fields)
    assert {key: reply[key] for key in expected} == expected
    assert client.pub(unique(), b"x") == OK


@pytest.mark.parametrize("body", [b"{}", b'{"feature_negotiation": false}',
                                  b'{"client_id": "x", "heartbeat_interval": 5000}'])
def test_identify_without_feature_negotiation_is_plain_ok(server, body):
    client = connect(server)
    client.command("IDENTIFY", body)
    assert client.read_frame() == OK
    # A second IDENTIFY before SUB is allowed.
    client.command("IDENTIFY", body)
    assert client.read_frame() == OK
    assert client.pub(unique(), b"x") == OK


def test_identify_sets_client_stats(server):
    topic = unique()
    client = connect(server)
    assert client.identify(client_id="my-id", hostname="my-host", user_agent="tester/1.0",
                           sample_rate=50) == b"OK"
    client.sub(topic, "ch")
    entry = wait_until(lambda: (server.channel_stats(topic, "ch") or {}).get("clients"))[0]
    assert (entry["client_id"], entry["hostname"], entry["user_agent"], entry["sample_rate"],
            entry["state"]) == ("my-id", "my-host", "tester/1.0", 50, 3)


@pytest.mark.parametrize("fields, error", IDENTIFY_FIELD_ERRORS)
def test_identify_validation_errors(server, fields, error):
    client = connect(server)
    client.command("IDENTIFY", json.dumps(fields).encode())
    assert_fatal(client, f"E_BAD_BODY IDENTIFY {error}")


@pytest.mark.parametrize("raw, error", IDENTIFY_BODY_ERRORS)
def test_identify_body_errors(server, raw, error):
    client = connect(server)
    client.send(b"IDENTIFY\n" + raw)
    assert_fatal(client, f"E_BAD_BODY {error}")


def test_identify_after_sub_is_rejected(server):
    client = subscribed(server, unique(), "ch")
    client.command("IDENTIFY", b"{}")
    assert_fatal(client, "E_INVALID cannot IDENTIFY in current state")


# -- SUB ------------------------------------------------------------------------------------

def test_sub_ok_and_state(server):
    topic = unique()
    client = connect(server)
    client.command(f"SUB {topic} ch")
    assert client.read_frame() == OK
    entry = wait_until(lambda: (server.channel_stats(topic, "ch") or {}).get("clients"))[0]
    assert entry["state"] == 3


@pytest.mark.parametrize("line, error", SUB_ERRORS)
def test_sub_errors(server, line, error):
    client = connect(server)
    client.command(line)
    assert_fatal(client, error)


@pytest.mark.parametrize("topic, channel", SUB_VALID_NAMES)
def test_sub_valid_name_edges(server, topic, channel):
    client = connect(server)
    client.command(f"SUB {topic} {channel}")
    assert client.read_frame() == OK


def test_sub_twice(server):
    client = subscribed(server, unique(), "ch")
    client.command(f"SUB {unique()} ch")
    assert_fatal(client, "E_INVALID cannot SUB in current state")


def test_sub_with_heartbeats_disabled(server):
    client = connect(server)
    assert client.identify(heartbeat_interval=-1) == b"OK"
    client.command(f"SUB {unique()} ch")
    assert_fatal(client, "E_INVALID cannot SUB with heartbeats disabled")


def test_max_channel_consumers(nsqd_factory):
    daemon = nsqd_factory("--max-channel-consumers=1")
    first = subscribed(daemon, "limited", "ch")
    second = connect(daemon)
    second.command("SUB limited ch")
    assert_fatal(second, "E_SUB_FAILED SUB failed consumers for limited:ch exceeds limit of 1")
    # Other channels have their own limit.
    subscribed(daemon, "limited", "other")
    # A slot frees up when the consumer leaves.
    first.close()
    wait_until(lambda: daemon.channel_stats("limited", "ch")["client_count"] == 0)
    third = connect(daemon)
    third.command("SUB limited ch")
    assert third.read_frame() == OK


# -- PUB / MPUB / DPUB ----------------------------------------------------------------------

def test_pub_mpub_dpub_ok(server):
    topic = unique()
    client = connect(server)
    assert client.pub(topic, b"one") == OK
    assert client.mpub(topic, [b"two", b"three"]) == OK
    client.command(f"DPUB {topic} 0", b"four")
    assert client.read_frame() == OK
    client.command(f"DPUB {topic} 5000", b"five")  # max-req-timeout is allowed
    assert client.read_frame() == OK
    assert client.pub(topic, b"m" * 1000) == OK  # exactly --max-msg-size
    assert wait_until(lambda: server.topic_stats(topic)["message_count"] == 6)
    stats = server.stats()
    [producer] = [p for p in stats["producers"]
                  if any(c["topic"] == topic for c in p.get("pub_counts", []))]
    assert producer["pub_counts"] == [{"topic": topic, "count": 6}]


def test_mpub_exactly_max_body_size(server):
    topic = unique()
    client = connect(server)
    # count(4) + 4 * (4 + 1000) = 4020; then a body of exactly 5000 bytes.
    bodies = [b"x" * 1000] * 4 + [b"y" * (5000 - 4020 - 4)]
    payload = mpub_body(bodies)
    assert len(payload) == 5000
    client.command(f"MPUB {topic}", payload)
    assert client.read_frame() == OK
    wait_until(lambda: server.topic_stats(topic)["message_count"] == 5)


@pytest.mark.parametrize("raw, error", PUBLISH_ERRORS)
def test_publish_errors(server, raw, error):
    client = connect(server)
    client.send(raw)
    assert_fatal(client, error)


@pytest.mark.parametrize("raw, error", TRUNCATED_BODIES)
def test_truncated_bodies(server, raw, error):
    client = connect(server)
    client.send(raw)
    client.sock.shutdown(socket.SHUT_WR)
    assert_fatal(client, error)


def test_failed_mpub_publishes_nothing(server):
    topic = unique()
    client = connect(server)
    client.command(f"MPUB {topic}", size(2) + sized(b"x") + size(0))
    assert_fatal(client, "E_BAD_MESSAGE MPUB invalid message(1) body size 0")
    # NSQ creates the topic before reading the body, but puts none of the batch.
    entry = wait_until(lambda: server.topic_stats(topic), message="topic created")
    assert entry["message_count"] == 0 and entry["depth"] == 0


@pytest.mark.parametrize("line, error", HUGE_BODIES)
def test_huge_body_rejected_without_reading_it(server, line, error):
    client = connect(server)
    # Only the size is sent: the error must come back without the server waiting for
    # (or allocating) the 2 GB it claims.
    client.send(line + b"\n" + size(2**31 - 1) + b"abc")
    assert_fatal(client, error)
    assert_healthy(server)


# -- RDY / FIN / REQ / TOUCH / CLS / NOP ----------------------------------------------------

@pytest.mark.parametrize("line, error", SUBSCRIBED_COMMAND_ERRORS)
def test_subscribed_command_errors(server, line, error):
    client = subscribed(server, unique(), "ch")
    client.command(line)
    if error is None:
        assert client.read_frame() == (FRAME_RESPONSE, b"CLOSE_WAIT")
    else:
        assert_fatal(client, error)


@pytest.mark.parametrize("line, error", COMMANDS_BEFORE_SUB)
def test_commands_before_sub(server, line, error):
    client = connect(server)
    client.command(line)
    assert_fatal(client, error)


@pytest.mark.parametrize("line", [b"RDY 0", b"RDY 200", b"RDY", b"RDY "])
def test_rdy_accepted_silently(server, line):
    client = subscribed(server, unique(), "ch")
    client.command(line)
    assert client.pub(unique(), b"x") == OK  # no reply to RDY came first


@pytest.mark.parametrize("verb, line, error", UNKNOWN_ID_ERRORS)
def test_unknown_message_id_is_not_fatal(server, verb, line, error):
    topic = unique()
    client = subscribed(server, topic, "ch")
    for _ in range(2):
        client.command(line % UNKNOWN_ID)
        assert client.read_frame() == (FRAME_ERROR, (error % UNKNOWN_ID.decode()).encode())
    # The connection is still fully usable.
    client.command("RDY 1")
    producer = connect(server)
    assert producer.pub(topic, b"after") == OK
    msg = client.read_message()
    assert msg.body == b"after"
    client.command(b"FIN " + msg.id)
    wait_until(lambda: server.channel_stats(topic, "ch")["in_flight_count"] == 0)


@pytest.mark.parametrize("line, error", NOT_OWNER_ERRORS)
def test_message_owned_by_another_client(server, line, error):
    topic = unique()
    owner = subscribed(server, topic, "ch", rdy=1)
    other = subscribed(server, topic, "ch")
    assert connect(server).pub(topic, b"mine") == OK
    msg = owner.read_message()
    other.command(line % msg.id)
    assert other.read_frame() == (FRAME_ERROR, (error % msg.id.decode()).encode())
    # The owner can still finish it, and the other client is still connected.
    owner.command(b"FIN " + msg.id)
    wait_until(lambda: server.channel_stats(topic, "ch")["in_flight_count"] == 0)
    other.command(b"FIN " + UNKNOWN_ID)
    assert other.read_frame()[0] == FRAME_ERROR


def test_cls_stops_deliveries(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=10)
    producer = connect(server)
    assert producer.pub(topic, b"first") == OK
    first = client.read_message()
    client.command("CLS")
    assert client.read_frame() == (FRAME_RESPONSE, b"CLOSE_WAIT")
    client.command("RDY 10")  # ignored while closing: no reply, no error
    assert producer.mpub(topic, [b"a", b"b", b"c"]) == OK
    wait_until(lambda: server.channel_stats(topic, "ch")["depth"] == 3)
    # FIN is still allowed while closing.
    client.command(b"FIN " + first.id)
    wait_until(lambda: server.channel_stats(topic, "ch")["in_flight_count"] == 0)
    # Commands still work, and no message came before the PUB reply.
    assert client.pub(unique(), b"x") == OK
    assert server.channel_stats(topic, "ch")["depth"] == 3
    [entry] = server.channel_stats(topic, "ch")["clients"]
    assert (entry["state"], entry["ready_count"], entry["finish_count"]) == (4, 0, 1)
    client.command(f"SUB {topic} ch")
    assert_fatal(client, "E_INVALID cannot SUB in current state")


def test_nop_has_no_reply(server):
    client = connect(server)
    client.command("NOP")
    client.command("NOP extra params")
    assert client.pub(unique(), b"x") == OK
    subscribed_client = subscribed(server, unique(), "ch")
    subscribed_client.command("NOP")
    subscribed_client.command("CLS")
    assert subscribed_client.read_frame() == (FRAME_RESPONSE, b"CLOSE_WAIT")


def test_pipelined_commands_answer_in_order(server):
    topic = unique()
    client = connect(server)
    client.send(b"".join(b"PUB %s\n" % topic.encode() + sized(b"%d" % i) for i in range(50))
                + b"NOP\nPUB bad!\n" + sized(b"x"))
    for _ in range(50):
        assert client.read_frame() == OK
    assert_fatal(client, 'E_BAD_TOPIC PUB topic name "bad!" is not valid')
    wait_until(lambda: server.topic_stats(topic)["message_count"] == 50)


# -- delivery semantics ---------------------------------------------------------------------

def test_message_frame_layout(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=1)
    before = time.time_ns()
    assert connect(server).pub(topic, b"\x00binary\xffbody") == OK
    kind, data = client.read_frame()
    after = time.time_ns()
    assert kind == FRAME_MESSAGE
    timestamp, attempts, msg_id = struct.unpack(">qH16s", data[:26])
    assert before - 10**9 <= timestamp <= after + 10**9
    assert attempts == 1
    assert len(msg_id) == 16 and all(c in b"0123456789abcdef" for c in msg_id)
    assert data[26:] == b"\x00binary\xffbody"


@pytest.mark.parametrize("delay", [0, 300])
def test_req_redelivers_with_attempts_incremented(server, delay):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=1)
    assert connect(server).pub(topic, b"again") == OK
    msg = client.read_message()
    assert msg.attempts == 1
    client.command(b"REQ %s %d" % (msg.id, delay))
    if delay:
        # Deferred first: not handed out again before the delay.
        ch = wait_until(lambda: (lambda c: c if c["deferred_count"] == 1 else None)(
            server.channel_stats(topic, "ch")), message="deferred")
        assert ch["in_flight_count"] == 0 and ch["depth"] == 0
    again = client.read_message()
    assert (again.id, again.attempts, again.body) == (msg.id, 2, b"again")
    client.command(b"FIN " + again.id)
    ch = wait_until(lambda: (lambda c: c if c["in_flight_count"] == 0 else None)(
        server.channel_stats(topic, "ch")))
    assert ch["requeue_count"] == 1 and ch["depth"] == 0 and ch["deferred_count"] == 0
    assert ch["clients"][0]["requeue_count"] == 1
    assert ch["clients"][0]["finish_count"] == 1


def test_req_timeout_above_max_is_clamped(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=1)
    assert connect(server).pub(topic, b"later") == OK
    msg = client.read_message()
    client.command(b"REQ %s 999999999" % msg.id)  # clamped to --max-req-timeout, not fatal
    wait_until(lambda: server.channel_stats(topic, "ch")["deferred_count"] == 1)
    assert client.pub(unique(), b"x") == OK


def test_message_timeout_redelivers(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=1, msg_timeout=1000)
    assert connect(server).pub(topic, b"slow") == OK
    msg = client.read_message()
    again = client.read_message()  # never FINed: back after the 1s msg_timeout
    assert (again.id, again.attempts, again.body) == (msg.id, 2, b"slow")
    ch = server.channel_stats(topic, "ch")
    assert ch["timeout_count"] == 1 and ch["in_flight_count"] == 1
    client.command(b"FIN " + again.id)
    wait_until(lambda: server.channel_stats(topic, "ch")["in_flight_count"] == 0)


def test_touch_extends_the_deadline(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=1, msg_timeout=1000)
    assert connect(server).pub(topic, b"touched") == OK
    msg = client.read_message()
    for _ in range(5):  # 2.5 s in all, well past the 1 s timeout
        client.command(b"TOUCH " + msg.id)
        expect_no_frame(client, 0.5)
    ch = server.channel_stats(topic, "ch")
    assert ch["timeout_count"] == 0 and ch["in_flight_count"] == 1
    client.command(b"FIN " + msg.id)
    ch = wait_until(lambda: (lambda c: c if c["in_flight_count"] == 0 else None)(
        server.channel_stats(topic, "ch")))
    assert ch["timeout_count"] == 0 and ch["depth"] == 0


def test_dpub_is_delivered_after_its_delay(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=1)
    producer = connect(server)
    producer.command(f"DPUB {topic} 1500", b"deferred")
    assert producer.read_frame() == OK
    ch = wait_until(lambda: (lambda c: c if c["deferred_count"] == 1 else None)(
        server.channel_stats(topic, "ch")), message="deferred_count 1")
    assert ch["in_flight_count"] == 0 and ch["depth"] == 0, "delivered before its delay"
    msg = client.read_message()
    assert (msg.body, msg.attempts) == (b"deferred", 1)
    wait_until(lambda: server.channel_stats(topic, "ch")["deferred_count"] == 0)


def test_multicast_to_every_channel(server):
    topic = unique()
    bodies = [b"m%d" % i for i in range(20)]
    one = subscribed(server, topic, "one", rdy=50)
    two = subscribed(server, topic, "two", rdy=50)
    assert connect(server).mpub(topic, bodies) == OK
    got_one, = collect_messages([one], 20)
    got_two, = collect_messages([two], 20)
    assert [m.body for m in got_one] == bodies
    assert [m.body for m in got_two] == bodies
    for name in ("one", "two"):
        wait_until(lambda: server.channel_stats(topic, name)["in_flight_count"] == 0)
        assert server.channel_stats(topic, name)["message_count"] == 20


def test_distribution_over_consumers_of_one_channel(server):
    topic = unique()
    consumers = [subscribed(server, topic, "ch", rdy=10) for _ in range(2)]
    wait_ready(server, topic, "ch", 10)
    bodies = [b"d%d" % i for i in range(60)]
    assert connect(server).mpub(topic, bodies) == OK
    got = collect_messages(consumers, 60)
    assert all(got), "each consumer gets some messages"
    received = [m.body for part in got for m in part]
    assert sorted(received) == sorted(bodies) and len(set(received)) == 60
    wait_until(lambda: server.channel_stats(topic, "ch")["in_flight_count"] == 0)
    assert server.channel_stats(topic, "ch")["depth"] == 0
    expect_no_frame(consumers[0], 0.2)


def test_rdy_bounds_in_flight(server):
    topic = unique()
    client = subscribed(server, topic, "ch", rdy=2)
    wait_ready(server, topic, "ch", 2)
    assert connect(server).mpub(topic, [b"r%d" % i for i in range(5)]) == OK
    first = [client.read_message(), client.read_message()]

    def settled(in_flight, depth):
        ch = server.channel_stats(topic, "ch")
        return ch["in_flight_count"] == in_flight and ch["depth"] == depth

    wait_until(lambda: settled(2, 3))
    assert not client.unread, "more than RDY messages were sent"
    client.command(b"FIN " + first[0].id)
    third = client.read_message()
    wait_until(lambda: settled(2, 2))
    assert not client.unread
    assert third.body == b"r2"
    # RDY 0 stops new deliveries even when in-flight drains.
    client.command("RDY 0")
    client.command(b"FIN " + first[1].id)
    client.command(b"FIN " + third.id)
    wait_until(lambda: settled(0, 2))
    assert client.pub(unique(), b"x") == OK  # a reply, not a message, came next


def test_rdy_without_count_means_one(server):
    topic = unique()
    client = subscribed(server, topic, "ch")
    client.command("RDY")
    wait_ready(server, topic, "ch", 1)
    assert connect(server).mpub(topic, [b"a", b"b"]) == OK
    client.read_message()
    wait_until(lambda: server.channel_stats(topic, "ch")["depth"] == 1)
    assert not client.unread


def test_ephemeral_channel_goes_with_its_last_consumer(server):
    topic = unique()
    client = subscribed(server, topic, "ch#ephemeral")
    durable = subscribed(server, topic, "durable")
    assert server.channel_stats(topic, "ch#ephemeral") is not None
    client.close()
    wait_until(lambda: server.channel_stats(topic, "ch#ephemeral") is None,
               message="ephemeral channel deleted")
    assert server.channel_stats(topic, "durable") is not None
    durable.close()


def test_ephemeral_topic_goes_with_its_last_channel(server):
    topic = unique() + "#ephemeral"
    client = subscribed(server, topic, "ch#ephemeral")
    assert connect(server).pub(topic, b"x") == OK
    assert server.topic_stats(topic) is not None
    client.close()
    wait_until(lambda: server.topic_stats(topic) is None, message="ephemeral topic deleted")


# -- heartbeats -----------------------------------------------------------------------------

def test_heartbeat_frames_arrive_and_answering_keeps_the_connection(server):
    client = connect(server)
    # Let the session's writer start on the default interval before IDENTIFY changes it.
    assert client.pub(unique(), b"x") == OK
    assert client.identify(heartbeat_interval=1000) == b"OK"
    for _ in range(3):  # 3 intervals > the 2-interval read deadline
        assert client.read_frame(skip_heartbeats=False) == (FRAME_RESPONSE, b"_heartbeat_")
        client.command("NOP")
    assert client.pub(unique(), b"x") == OK


def test_heartbeats_leave_when_due(server):
    # Clients time them: ansq expects exactly one heartbeat 1.1 s after an IDENTIFY with
    # heartbeat_interval 1000. Each of three heartbeats is measured from the IDENTIFY
    # answer; one late outlier on a busy machine is tolerated, a coarse timer is not.
    client = connect(server)
    assert client.identify(heartbeat_interval=1000) == b"OK"
    start = time.monotonic()
    lateness = []
    for beat in range(1, 4):
        assert client.read_frame(skip_heartbeats=False) == (FRAME_RESPONSE, b"_heartbeat_")
        lateness.append(time.monotonic() - start - beat)
        client.command("NOP")
    assert min(lateness) > -0.005, lateness
    assert sorted(lateness)[1] < 0.03, lateness


def test_silent_client_is_disconnected(server):
    client = connect(server)
    # Let the session's writer start on the default interval before IDENTIFY changes it.
    assert client.pub(unique(), b"x") == OK
    assert client.identify(heartbeat_interval=1000) == b"OK"
    assert client.is_closed(timeout=8.0), "a client that never answers must be dropped"
    assert client.received_frame(skip_heartbeats=False) == (FRAME_RESPONSE, b"_heartbeat_")


# -- hostile input --------------------------------------------------------------------------

@pytest.mark.parametrize("magic", BAD_MAGICS)
def test_bad_protocol_magic(server, magic):
    client = V2Client(server.tcp_port, magic=magic)
    client.send(b"PUB t\n" + sized(b"x"))
    assert_fatal(client, "E_BAD_PROTOCOL")


@pytest.mark.parametrize("line, error", UNKNOWN_COMMANDS)
def test_unknown_commands(server, line, error):
    client = connect(server)
    client.command(line)
    assert_fatal(client, error)


def test_crlf_line_endings(server):
    topic = unique()
    client = connect(server)
    client.send(b"PUB %s\r\n" % topic.encode() + sized(b"x") + b"NOP\r\n")
    assert client.read_frame() == OK
    client.send(b"SUB %s ch\r\n" % topic.encode())
    assert client.read_frame() == OK


@pytest.mark.parametrize("with_newline", [True, False])
def test_command_line_over_16k_closes_the_connection(server, with_newline):
    client = connect(server)
    client.send(b"PUB " + b"a" * 20000 + (b"\n" + sized(b"x") if with_newline else b""))
    assert client.is_closed()
    assert not client.unread, "no frame is sent for an over-long line"
    assert ping_ok(server)


@pytest.mark.parametrize("length, closed", [(16383, False), (16384, True)])
def test_command_line_limit_boundary(server, length, closed):
    """NSQ's 16 KiB reader buffer must hold the whole line including its newline."""
    client = connect(server)
    name = b"a" * (length - len(b"PUB "))
    client.send(b"PUB " + name + b"\n" + sized(b"x"))
    if closed:
        assert client.is_closed()
        assert not client.unread
    else:
        assert_fatal(client, f'E_BAD_TOPIC PUB topic name "{name.decode()}" is not valid')


def test_consumer_that_never_reads_does_not_stall_the_server(nsqd):
    topic = "flood"
    stuck = V2Client(nsqd.tcp_port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sub(topic, "ch", rdy=2500)
    wait_ready(nsqd, topic, "ch", 2500)
    producer = connect(nsqd)
    body = b"z" * (256 * 1024)
    for _ in range(10):  # 10 x 16 x 256 KiB = 40 MiB that the stuck consumer never reads
        assert producer.mpub(topic, [body] * 16) == OK
    wait_until(lambda: nsqd.topic_stats(topic)["message_count"] == 160)
    assert ping_ok(nsqd)
    assert_healthy(nsqd)
    # A new channel of the same topic gets new messages despite the stuck sibling.
    other = subscribed(nsqd, topic, "other", rdy=5)
    wait_ready(nsqd, topic, "other", 5)
    assert producer.pub(topic, b"tail") == OK
    assert other.read_message().body == b"tail"
    stuck.close()


def test_publisher_that_never_reads_replies_does_not_stall_the_server(nsqd):
    topic = "firehose"
    count = 20000
    flood = connect(nsqd)
    payload = b"".join(b"PUB firehose\n" + sized(b"%d" % i) for i in range(count))
    done = threading.Event()

    def send_all():
        try:
            flood.send(payload)
        except OSError:
            pass
        done.set()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # Whatever the flood is doing, the server answers others.
    assert_healthy(nsqd)
    # Now read the replies: every PUB got its OK, in order, and every message is there.
    for _ in range(count):
        assert flood.read_frame() == OK
    assert done.wait(10)
    wait_until(lambda: nsqd.topic_stats(topic)["message_count"] == count)
    assert_healthy(nsqd)
