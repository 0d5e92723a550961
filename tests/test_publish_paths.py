"""Publishing along every path nsqd takes loses nothing and keeps replies in order.

A publish reaches its topic in the publisher's own turn when the topic is idle, or
through the topic's mailbox when it is busy (draining a backlog, say); a reply goes out
from the session's reader when the client is waiting for it, or from its writer when the
client keeps sending. These tests mix all of them against one topic and check what the
clients see: every OK, every message delivered once, replies in command order.
"""

import re
import socket
import struct
import threading

import pytest

from support import FRAME_ERROR, FRAME_RESPONSE, V2Client, wait_until

OK = (FRAME_RESPONSE, b"OK")


def pub_command(topic, body):
    return f"PUB {topic}\n".encode() + struct.pack(">i", len(body)) + body


def consume(port, topic, expected, received, rdy=100):
    """FIN messages into ``received`` until ``expected`` distinct bodies arrived."""
    client = V2Client(port, timeout=30)
    try:
        client.identify(heartbeat_interval=2000)
        client.sub(topic, "ch", rdy=rdy)
        while len(received) < expected:
            msg = client.read_message()
            received[msg.body] = received.get(msg.body, 0) + 1
            client.command(b"FIN " + msg.id)
    finally:
        client.close()


def publish_tcp(port, topic, prefix, count, errors, pipelined=False):
    """``count`` PUBs: one at a time, each waiting for its OK, or (``pipelined``) all in
    one write, then every OK. The first reply that is not OK goes into ``errors``."""
    client = V2Client(port, timeout=30)
    try:
        bodies = [f"{prefix}-{i}".encode() for i in range(count)]
        if pipelined:
            client.send(b"".join(pub_command(topic, body) for body in bodies))
        for i, body in enumerate(bodies):
            frame = client.read_frame() if pipelined else client.pub(topic, body)
            if frame != OK:
                errors.append((prefix, i, frame))
                return
    finally:
        client.close()


def publish_http(daemon, topic, prefix, count, errors):
    for i in range(count):
        status, _, body = daemon.http("POST", f"/pub?topic={topic}", f"{prefix}-{i}".encode())
        if (status, body) != (200, b"OK"):
            errors.append((prefix, i, status, body))
            return


def test_waiting_pipelining_and_http_publishers_lose_nothing(nsqd_factory):
    # A small memory queue and a backlog published before the channel exists, so the
    # topic is busy draining (and publishes queue in its mailbox) while new ones arrive.
    daemon = nsqd_factory("--mem-queue-size=100")
    topic = "paths"
    backlog = [f"backlog-{i}".encode() for i in range(2000)]
    client = V2Client(daemon.tcp_port)
    for start in range(0, len(backlog), 500):
        assert client.mpub(topic, backlog[start:start + 500]) == OK
    client.close()

    publishers = [(False, f"wait{n}", 300) for n in range(3)] + [(True, "burst", 500)]
    expected = len(backlog) + sum(count for _, _, count in publishers) + 100
    received, errors = {}, []
    consumer = threading.Thread(target=consume,
                                args=(daemon.tcp_port, topic, expected, received))
    consumer.start()
    threads = [threading.Thread(target=publish_tcp, args=(daemon.tcp_port, topic, prefix,
                                                          count, errors, pipelined))
               for pipelined, prefix, count in publishers]
    threads.append(threading.Thread(target=publish_http,
                                    args=(daemon, topic, "http", 100, errors)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    consumer.join(60)

    assert errors == []
    assert not consumer.is_alive(), f"consumer got {len(received)} of {expected}"
    assert set(received) == set(backlog) | {
        f"{prefix}-{i}".encode() for _, prefix, count in publishers for i in range(count)
    } | {f"http-{i}".encode() for i in range(100)}
    assert set(received.values()) == {1}
    wait_until(lambda: daemon.channel_stats(topic, "ch")["in_flight_count"] == 0)
    assert daemon.channel_stats(topic, "ch")["depth"] == 0
    assert daemon.topic_stats(topic)["message_count"] == expected


def test_replies_to_a_pipelined_burst_keep_command_order(nsqd):
    client = V2Client(nsqd.tcp_port)
    burst = b"".join(pub_command("ordered", b"m%d" % i) for i in range(50))
    burst += b"PUB ordered\n" + struct.pack(">i", 0)   # fatal: invalid message body size
    client.send(burst)
    for _ in range(50):
        assert client.read_frame() == OK
    assert client.read_frame() == (FRAME_ERROR, b"E_BAD_MESSAGE PUB invalid message body size 0")
    assert client.is_closed()
    assert nsqd.topic_stats("ordered")["message_count"] == 50


# -- batches bigger than one turn of the hub (services/shared/batches.py) -------------------------

BIG_BATCH = 5000     # several slices of SLICE (1024) messages, and several /mpub windows


def read_in_order(port, topic, count):
    """The bodies of the first ``count`` messages a single consumer gets, in order."""
    client = V2Client(port, timeout=30)
    client.sub(topic, "ch", rdy=1000)
    bodies = []
    for _ in range(count):
        msg = client.read_message()
        bodies.append(msg.body)
        client.command(b"FIN " + msg.id)
    client.close()
    return bodies


def mpub_body(bodies):
    return struct.pack(">i", len(bodies)) + b"".join(
        struct.pack(">i", len(body)) + body for body in bodies)


@pytest.mark.parametrize("path", ["tcp", "http", "http-binary"])
def test_a_batch_of_many_slices_is_stored_whole_and_in_order(nsqd, path):
    # Bodies of many lengths, so slices and /mpub's windows end anywhere in a message.
    bodies = [b"%d-" % i + b"x" * (i * 7 % 300) for i in range(BIG_BATCH)]
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("sliced", "ch")        # the channel exists before the batch arrives
    consumer.close()
    if path == "tcp":
        producer = V2Client(nsqd.tcp_port)
        assert producer.mpub("sliced", bodies) == OK
        producer.close()
    elif path == "http":
        lines = b"".join(body + (b"\n\n" if i % 100 == 0 else b"\n")    # empty lines too
                         for i, body in enumerate(bodies))
        assert nsqd.http("POST", "/mpub?topic=sliced", lines)[::2] == (200, b"OK")
    else:
        status, _, reply = nsqd.http("POST", "/mpub?topic=sliced&binary=true", mpub_body(bodies))
        assert (status, reply) == (200, b"OK")
    assert read_in_order(nsqd.tcp_port, "sliced", BIG_BATCH) == bodies
    assert nsqd.channel_stats("sliced", "ch")["message_count"] == BIG_BATCH


def test_a_bad_message_at_the_end_of_a_big_batch_refuses_all_of_it(nsqd_factory):
    nsqd = nsqd_factory("--max-msg-size=300")
    bodies = [b"m"] * BIG_BATCH
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("all_or_none", bodies[:-1] + [b"x" * 301]) == (
        FRAME_ERROR, b"E_BAD_MESSAGE MPUB message too big 301 > 300")
    assert producer.is_closed()
    lines = b"\n".join(bodies[:-1] + [b"x" * 301])
    status, _, reply = nsqd.http("POST", "/mpub?topic=all_or_none", lines)
    assert (status, reply) == (413, b'{"message":"MSG_TOO_BIG"}')
    assert nsqd.topic_stats("all_or_none")["message_count"] == 0


def http_exchange(port, request):
    """The raw bytes of one HTTP answer (its Date line blanked), over a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith((b"OK", b"}")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_the_common_pub_sends_the_bytes_falcon_s_pub_sends(nsqd_factory, version):
    # The server answers "POST /pub?topic=t" before it makes a WSGI environ; "&x=" keeps
    # a request on Falcon's path. A full bounded queue gives both their 503.
    nsqd = nsqd_factory("--mem-queue-size=0", "--max-bytes-per-topic=100")

    def answer(query, body=b"x" * 40):
        return http_exchange(nsqd.http_port, (
            f"POST /pub?{query} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}"
            "\r\n\r\n").encode() + body)

    accepted = answer("topic=a")
    assert accepted == answer("topic=b&x=")
    assert accepted.startswith(f"HTTP/{version} 200 OK\r\n".encode())
    while answer("topic=full").split(b" ", 2)[1] == b"200":
        pass
    refused = answer("topic=full")
    assert refused == answer("topic=full&x=")
    assert refused.endswith(b'{"message":"QUEUE_FULL"}')
