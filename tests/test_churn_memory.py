"""Connections, and the ephemeral topics and channels they make, leave nothing behind.

Each test churns tens of thousands of connections through nsqd in one way: V2 clients
that IDENTIFY, SUB and close; that send a command line too long; that SUB to an
ephemeral topic and channel, deleted when they leave; that IDENTIFY over and over; HTTP
keep-alive connections, a thousand open at a time. A warm-up round of the same comes
first (so the allocator's high-water marks and caches count as the start); then the
worker's memory must come back to where it was: its RSS and the blocks Python's
allocator holds, both from ``/stats``. A connection that left 6 KB behind would show as
60 MB here. The worker's cyclic collector seldom runs (http/worker.py), so what is left
in a reference cycle counts as left behind.
"""

import json
import resource
import socket
import struct
import threading

import pytest

from support import Daemon, free_port, ping, wait_until

CONNECTIONS = 10_000
WARM_UP = 2_000
THREADS = 16
MAX_LINE = 16 * 1024                 # nsqd's command line limit
RSS_MARGIN = 8 * 1024 * 1024         # the allocator's noise; a leak here is 10x more
OBJECTS_MARGIN = 10_000              # blocks; a connection's objects number 50 or more
OK = struct.pack(">ii", 6, 0) + b"OK"


@pytest.fixture
def nsqd(tmp_path):
    """nsqd logging warnings only: a few INFO lines per connection would cost it as much
    as the connections do."""
    daemon = Daemon(tmp_path / "data", ["--log-level=warn"],
                    tcp_address=f"127.0.0.1:{free_port()}",
                    http_address=f"127.0.0.1:{free_port()}")
    daemon.start(wait=False)
    try:
        wait_until(lambda: ping(daemon.http_port), message="/ping")
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log_text()


def identify(**fields):
    body = json.dumps(fields).encode()
    return b"IDENTIFY\n" + struct.pack(">i", len(body)) + body


def exchange(port, data, answer_size):
    """Connect, send the magic and ``data``, read ``answer_size`` bytes (or until nsqd
    closes), close; what was read."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"  V2" + data)
        try:
            while len(received) < answer_size:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
    return received


def churn(count, connect):
    """``connect(i)`` for i in range(count), from THREADS threads at once."""
    numbers = iter(range(count))
    lock = threading.Lock()
    failures = []

    def work():
        while not failures:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            try:
                connect(i)
            except Exception as exc:   # reported by the test, not lost in a thread
                failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]


def memory(nsqd):
    figures = nsqd.stats(include_mem="true")["memory"]
    return figures["heap_in_use_bytes"], figures["heap_objects"]


def assert_back_to(nsqd, start, what):
    """The worker's RSS and allocated blocks come back near ``start`` (nsqd may still
    be closing the last connections when the clients are done)."""
    start_rss, start_objects = start
    figures = []

    def back():
        figures.append(memory(nsqd))
        rss, objects = figures[-1]
        return rss <= start_rss + RSS_MARGIN and objects <= start_objects + OBJECTS_MARGIN

    try:
        wait_until(back, timeout=15, interval=0.2)
    except AssertionError:
        rss, objects = figures[-1]
        raise AssertionError(
            f"after {what}: RSS {start_rss / 2**20:.1f} -> {rss / 2**20:.1f} MiB, "
            f"allocated blocks {start_objects} -> {objects}") from None


def churn_and_check(nsqd, connect, what):
    churn(WARM_UP, connect)
    start = memory(nsqd)
    churn(CONNECTIONS, lambda i: connect(WARM_UP + i))
    assert_back_to(nsqd, start, f"{CONNECTIONS} connections that {what}")


def test_identify_sub_close(nsqd):
    def connect(i):
        data = identify(client_id=f"churn{i}", heartbeat_interval=60_000) + b"SUB churn ch\n"
        assert exchange(nsqd.tcp_port, data, 2 * len(OK)) == 2 * OK

    churn_and_check(nsqd, connect, "IDENTIFY, SUB and close")


def test_line_too_long(nsqd):
    def connect(i):
        exchange(nsqd.tcp_port, b"X" * (MAX_LINE + 1), 1)

    churn_and_check(nsqd, connect, "send a line too long")
    assert "line too long" in nsqd.log_text()


def test_ephemeral_topic_and_channel(nsqd):
    def connect(i):
        data = identify() + b"SUB churn%d#ephemeral ch#ephemeral\n" % i
        assert exchange(nsqd.tcp_port, data, 2 * len(OK)) == 2 * OK

    churn_and_check(nsqd, connect, "made and left an ephemeral topic and channel")
    wait_until(lambda: not nsqd.stats()["topics"], message="ephemeral topics deleted")


def test_identify_again_and_again(nsqd):
    """Every IDENTIFY restarts the client's heartbeats (NSQ allows IDENTIFY until SUB):
    the earlier heartbeat's entry must not stay behind until it would have been due."""
    batch, batches, clients = 1_000, 25, 8
    commands = identify(heartbeat_interval=60_000) * batch

    def identify_often(sock):
        for _ in range(batches):
            sock.sendall(commands)
            expected = batch * len(OK)
            received = 0
            while received < expected:
                chunk = sock.recv(65536)
                assert chunk, "nsqd closed the connection"
                received += len(chunk)

    what = f"{clients} clients IDENTIFYing {batch * batches} times each"
    socks = [socket.create_connection(("127.0.0.1", nsqd.tcp_port), timeout=30)
             for _ in range(clients)]
    try:
        for sock in socks:
            sock.sendall(b"  V2")
        identify_often(socks[0])      # the warm-up
        start = memory(nsqd)
        churn(clients, lambda i: identify_often(socks[i]))
        assert_back_to(nsqd, start, what)
    finally:
        for sock in socks:
            sock.close()
    assert_back_to(nsqd, start, what + ", once they closed")


def test_http_keep_alive_connections(nsqd):
    """A thousand keep-alive connections open at once live through a collection of the
    youngest generation, so whatever cycles they leave reach an older one, which the
    worker seldom collects."""
    at_once, rounds = 1_000, 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = at_once + 256              # this process's sockets, and some to spare
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    request = b"GET /ping HTTP/1.1\r\nHost: churn\r\n\r\n"

    def open_ask_close():
        socks = []
        try:
            for _ in range(at_once):
                sock = socket.create_connection(("127.0.0.1", nsqd.http_port), timeout=30)
                socks.append(sock)
                sock.sendall(request)
            for sock in socks:
                answer = b""
                while not answer.endswith(b"\r\n\r\nOK"):
                    chunk = sock.recv(4096)
                    assert chunk, answer
                    answer += chunk
        finally:
            for sock in socks:
                sock.close()

    open_ask_close()          # the warm-up
    start = memory(nsqd)
    for _ in range(rounds):
        open_ask_close()
    assert_back_to(nsqd, start, f"{rounds} times {at_once} HTTP keep-alive connections")
