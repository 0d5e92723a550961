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
import os
import resource
import socket
import struct
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support import FRAME_RESPONSE, Daemon, V2Client, children, wait_until  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss(pid):
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def worker_pid(daemon):
    return wait_until(lambda: (children(daemon.proc.pid) or [None])[0], message="worker")


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
            assert reply == struct.pack(">ii", 6, FRAME_RESPONSE) + b"OK", reply
        ready.put(len(socks))
    except Exception as exc:     # report instead of hanging the parent
        ready.put(f"error after {len(socks)} connections: {exc!r}")
        return
    done.wait()
    for sock in socks:
        sock.close()


def check_service(daemon):
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/ping", timeout=10) as r:
        assert r.read() == b"OK"
    producer = V2Client(daemon.tcp_port, timeout=10)
    consumer = V2Client(daemon.tcp_port, timeout=10)
    consumer.sub("idle_bench", "c", rdy=1)
    assert producer.pub("idle_bench", b"hello") == (FRAME_RESPONSE, b"OK")
    assert consumer.read_message().body == b"hello"
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
            pid = worker_pid(daemon)
            check_service(daemon)
            before = rss(pid)
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
            with_conns = rss(pid)
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
