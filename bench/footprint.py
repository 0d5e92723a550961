"""What one idle connection, one topic and one channel cost an nsqd in memory, beside any
other nsqd binary (Go's).

For each of the three, a fresh nsqd (temporary data directory, free ports) is measured
at rest, then with N of them: idle V2 connections (magic and IDENTIFY, then nothing, held
by a child process), topics (POST /topic/create), or channels of one topic (POST
/channel/create); the figure is the growth of the daemon's resident memory (RSS, every
process of it) divided by N. While the connections are open, /ping must answer and a
message must go from a publisher to a subscriber.

    python bench/footprint.py [--connections 10000] [--topics 10000] [--channels 5000]
                              [--nsqd-binary PATH]
"""

import argparse
import http.client
import json
import multiprocessing
import resource
import socket
import struct
import tempfile
import time

from nsqbench import OK_FRAME, connect, pub_frame, read_frame, rss_bytes

from greensq.http.testing import Daemon
from greensq.services.shared.frames import FrameDecoder

FRAME_RESPONSE, FRAME_MESSAGE = 0, 2
KIB = 1024


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hold_connections(port, count, ready, done):
    """Child process: open ``count`` idle V2 connections, report, hold until told."""
    raise_fd_limit()
    identify = json.dumps({"client_id": "idle", "hostname": "bench",
                           "feature_negotiation": False}).encode()
    request = b"  V2IDENTIFY\n" + struct.pack(">i", len(identify)) + identify
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(request)
            socks.append(sock)
        for sock in socks:       # every IDENTIFY answered: the session exists server-side
            reply = b""
            while len(reply) < 10:
                chunk = sock.recv(10 - len(reply))
                if not chunk:
                    raise ConnectionError("closed by nsqd")
                reply += chunk
            assert reply == OK_FRAME, reply
        ready.put(len(socks))
    except Exception as exc:     # report instead of hanging the parent
        ready.put(f"error after {len(socks)} connections: {exc!r}")
        return
    done.wait()
    for sock in socks:
        sock.close()


def check_service(daemon):
    """/ping answers, and a message published reaches a subscriber."""
    assert daemon.http("GET", "/ping")[::2] == (200, b"OK")
    consumer, producer = connect(daemon.tcp_address), connect(daemon.tcp_address)
    for sock in (consumer, producer):
        sock.settimeout(10)
    consumer_frames, producer_frames = FrameDecoder(), FrameDecoder()
    consumer.sendall(b"SUB footprint_bench c\nRDY 1\n")
    assert read_frame(consumer, consumer_frames) == (FRAME_RESPONSE, b"OK")
    producer.sendall(pub_frame("footprint_bench", 5))
    assert read_frame(producer, producer_frames) == (FRAME_RESPONSE, b"OK")
    kind, data = read_frame(consumer, consumer_frames)
    assert kind == FRAME_MESSAGE and data[26:] == b"x" * 5, (kind, data)
    producer.close()
    consumer.close()


def daemon_rss(daemon):
    return sum(rss_bytes(pid) for pid in daemon.pids().values())


def connections(daemon, count):
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=hold_connections, args=(daemon.tcp_port, count, ready, done))
    child.start()
    opened = ready.get(timeout=600)
    if not isinstance(opened, int):
        raise SystemExit(f"bench client failed: {opened}")
    rss = daemon_rss(daemon)
    check_service(daemon)
    done.set()
    child.join(60)
    return rss


def post_many(daemon, paths):
    """POST each of ``paths`` on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=30)
    for path in paths:
        conn.request("POST", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, (path, resp.status)
    conn.close()


def topics(daemon, count):
    post_many(daemon, (f"/topic/create?topic=footprint{i}" for i in range(count)))
    return daemon_rss(daemon)


def channels(daemon, count):
    post_many(daemon, ["/topic/create?topic=footprint"])
    post_many(daemon, (f"/channel/create?topic=footprint&channel=c{i}" for i in range(count)))
    return daemon_rss(daemon)


def measure(binary, what, count):
    """Bytes of resident memory one of ``what`` costs the daemon (``binary``: None for
    greensq's nsqd)."""
    with tempfile.TemporaryDirectory() as data:
        daemon = Daemon(data, binary=binary).start()
        try:
            check_service(daemon)
            before = daemon_rss(daemon)
            after = what(daemon, count)
            return (after - before) / count
        finally:
            daemon.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--topics", type=int, default=10000)
    parser.add_argument("--channels", type=int, default=5000)
    parser.add_argument("--nsqd-binary", help="another nsqd to measure beside greensq's")
    args = parser.parse_args()
    raise_fd_limit()
    daemons = [("greensq", None)] + ([("other", args.nsqd_binary)] if args.nsqd_binary else [])
    print(f"{'per':<18}" + "".join(f"{name:>14}" for name, _ in daemons))
    for label, what, count in (("idle connection", connections, args.connections),
                               ("topic", topics, args.topics),
                               ("channel", channels, args.channels)):
        started = time.monotonic()
        figures = [measure(binary, what, count) for _, binary in daemons]
        print(f"{label:<18}" + "".join(f"{f / KIB:>10.1f} KiB" for f in figures)
              + f"   ({count:,}, {time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
