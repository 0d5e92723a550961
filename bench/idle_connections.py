"""Memory held by thousands of idle V2 connections.

Starts nsqd (a temporary data directory, free ports), measures its worker's RSS, opens
N idle connections (magic + IDENTIFY, then nothing) from a child process, measures the
RSS again, checks that nsqd still answers /ping and carries a PUB/SUB round trip while
they are open, and prints the figures.

    python bench/idle_connections.py [--connections 5000]
"""

import argparse
import json
import multiprocessing
import resource
import socket
import struct
import tempfile
import time

from nsqbench import OK_FRAME, connect, pub_frame, read_frame, rss_bytes

from greensq.http.testing import Daemon

FRAME_RESPONSE, FRAME_MESSAGE = 0, 2


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
    consumer.sendall(b"SUB idle_bench c\nRDY 1\n")
    assert read_frame(consumer) == (FRAME_RESPONSE, b"OK")
    producer.sendall(pub_frame("idle_bench", 5))
    assert read_frame(producer) == (FRAME_RESPONSE, b"OK")
    kind, data = read_frame(consumer)
    assert kind == FRAME_MESSAGE and data[26:] == b"x" * 5, (kind, data)
    producer.close()
    consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    limit = raise_fd_limit()
    print(f"RLIMIT_NOFILE soft limit (bench): {limit}")

    with tempfile.TemporaryDirectory() as data:
        daemon = Daemon(data).start()
        try:
            pid = daemon.worker_pid
            check_service(daemon)
            before = rss_bytes(pid)
            ctx = multiprocessing.get_context("fork")
            ready, done = ctx.Queue(), ctx.Event()
            child = ctx.Process(target=hold_connections,
                                args=(daemon.tcp_port, args.connections, ready, done))
            started = time.monotonic()
            child.start()
            opened = ready.get(timeout=300)
            elapsed = time.monotonic() - started
            if not isinstance(opened, int):
                raise SystemExit(f"bench client failed: {opened}")
            with_conns = rss_bytes(pid)
            check_service(daemon)
            clients = sum(len(ch.get("clients", [])) for t in daemon.stats()["topics"]
                          for ch in t["channels"])
            done.set()
            child.join(60)
            print(f"nsqd worker pid {pid}")
            print(f"idle V2 connections opened: {opened} in {elapsed:.1f}s")
            print(f"worker RSS before:           {before / 2**20:8.1f} MiB")
            print(f"worker RSS with connections: {with_conns / 2**20:8.1f} MiB")
            print(f"per connection:              {(with_conns - before) / opened / 1024:8.1f} KiB")
            print(f"/ping and PUB/SUB while open: OK (subscribed clients in /stats: {clients})")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
