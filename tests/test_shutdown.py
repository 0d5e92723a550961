"""Publishes racing a graceful shutdown are either flushed with the rest or refused.

From the moment SIGTERM arrives, a publish gets its OK only if it is stored and flushed;
otherwise it gets NSQ's refusal (``E_PUB_FAILED``, HTTP 503 ``EXITING``) or a closed
connection. Connections accepted just before the signal that send their magic and a PUB
only afterwards are the sharpest case; steady TCP and HTTP publishers run alongside.
The late connections speak only once the TCP listener has closed (as nsqd
begins to flush) or once nsqd has flushed. Every acknowledged message must be there after the restart.
"""

import http.client
import signal
import socket
import struct
import threading

import pytest

from support import FRAME_RESPONSE, V2Client, consume_expected, wait_until

LATE_CONNECTIONS = 80


class Outcomes:
    """What publishers saw, thread-safe: acknowledged bodies, and every other answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = []
        self.refusals = []

    def record(self, body, reply):
        with self.lock:
            if reply == "OK":
                self.acked.append(body)
            else:
                self.refusals.append(reply)


def read_reply(client):
    """The frame answering a publish, as text; "closed" if the connection ended first."""
    try:
        kind, data = client.read_frame()
    except OSError:
        return "closed"
    text = data.decode()
    return text if kind == FRAME_RESPONSE else f"error {text}"


def late_publisher(sock, body, go, outcomes):
    """Accepted before the signal; sends its magic and a PUB only after it."""
    client = V2Client(sock=sock, magic=b"", timeout=None)
    go.wait()
    try:
        client.send(b"  V2" + b"PUB racing\n" + struct.pack(">i", len(body)) + body)
    except OSError:
        outcomes.record(body, "closed")
        return
    outcomes.record(body, read_reply(client))
    client.close()


def steady_tcp_publisher(port, tag, outcomes):
    try:
        client = V2Client(port)
    except OSError:
        return
    for i in range(100_000):
        body = f"{tag}-{i}".encode()
        try:
            client.command("PUB racing", body)
            reply = read_reply(client)
        except OSError:
            reply = "closed"
        outcomes.record(body, reply)
        if reply != "OK":
            return


def steady_http_publisher(port, tag, outcomes):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(100_000):
        body = f"{tag}-{i}".encode()
        try:
            conn.request("POST", "/pub?topic=racing", body)
            resp = conn.getresponse()
            reply = resp.read().decode() if resp.status == 200 else f"{resp.status} {resp.read()}"
        except (OSError, http.client.HTTPException):
            reply = "closed"
        outcomes.record(body, reply)
        if reply != "OK":
            return


@pytest.mark.parametrize("http_workers", [0, 2], ids=lambda count: f"http-workers={count}")
def test_publishes_racing_sigterm_are_flushed_or_refused(nsqd_factory, http_workers):
    daemon = nsqd_factory("--mem-queue-size=100", f"--http-workers={http_workers}")
    assert daemon.http("POST", "/topic/create?topic=racing")[0] == 200
    assert daemon.http("POST", "/channel/create?topic=racing&channel=ch")[0] == 200
    outcomes = Outcomes()
    closing, stopped = threading.Event(), threading.Event()
    late = [socket.create_connection(("127.0.0.1", daemon.tcp_port)) for _ in
            range(LATE_CONNECTIONS)]
    threads = [threading.Thread(target=late_publisher, args=(
        sock, f"late-{i}".encode(), closing if i % 2 else stopped, outcomes), daemon=True)
               for i, sock in enumerate(late)]
    threads += [threading.Thread(target=steady_tcp_publisher,
                                 args=(daemon.tcp_port, f"tcp{i}", outcomes), daemon=True)
                for i in range(3)]
    threads += [threading.Thread(target=steady_http_publisher,
                                 args=(daemon.http_port, f"http{i}", outcomes), daemon=True)
                for i in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(outcomes.acked) >= 500, message="steady publishers under way")

    daemon.proc.send_signal(signal.SIGTERM)
    # Half the late connections speak once nsqd has begun closing, half once it has
    # flushed everything and is about to exit: the sharpest races.
    daemon.wait_for_log(r"TCP: closing")
    closing.set()
    daemon.wait_for_log(r"NSQ: bye")
    stopped.set()
    assert daemon.proc.wait(30) == 0, daemon.log_text()
    for thread in threads:
        thread.join(10)

    unexpected = [reply for reply in outcomes.refusals if reply not in (
        "closed", "error E_PUB_FAILED PUB failed exiting", "503 b'{\"message\":\"EXITING\"}'")]
    assert not unexpected, unexpected
    daemon.start()
    consume_expected(daemon.tcp_port, "racing", "ch", outcomes.acked, timeout=30)
