"""Abuse: one client sends what costs nsqd far more to handle than it costs to send
(decompression bombs, endless lines, the largest batches the limits allow, a body cut
short), and nsqd's other clients must not notice.

Each test starts its own nsqd, runs the abuse while a StallMonitor (tests/abuse.py)
keeps doing a /ping and a PUB round trip on connections of its own, and asserts: the
abusive connection got NSQ's answer (an error frame, or the close Go gives it), the other
clients never waited a second, the same worker process is alive afterwards, and its
memory is back under a bound.
"""

import http.client
import socket
import struct
import zlib

import pytest

from abuse import StallMonitor, worker_peak_rss, worker_rss
from support import FRAME_ERROR, FRAME_RESPONSE, V2Client, ping, wait_until
from test_compression import upgrade

snappy = pytest.importorskip("snappy")

MiB = 1 << 20
MAX_LINE = 16 * 1024           # nsqd's command line limit, with its newline
STALL_BOUND = 1.0              # seconds any other client may wait while the abuse runs
NOPS = 3_000_000               # a bomb's commands: seconds of work for the reader


def size(value):
    return struct.pack(">i", value)


def pub_command(topic, body):
    return f"PUB {topic}\n".encode() + size(len(body)) + body


def abuse(nsqd, run, memory_bound=48 * MiB, peak_bound=None):
    """Run ``run()`` (the abuse) under a StallMonitor, then check the other clients, the
    worker (the same process, answering) and its memory: resident ``memory_bound`` at
    most above where it was before, and its peak ``peak_bound`` at most above it. The
    figures are printed (``-s``)."""
    pid = nsqd.worker_pid
    rss_before, peak_before = worker_rss(nsqd), worker_peak_rss(pid)
    with StallMonitor(nsqd) as monitor:
        run()
    rss_after, peak_grown = worker_rss(nsqd), worker_peak_rss(pid) - peak_before
    print(f"worst /ping {monitor.worst['ping']:.3f} s, PUB {monitor.worst['pub']:.3f} s; "
          f"RSS {rss_before / MiB:.0f} -> {rss_after / MiB:.0f} MiB, "
          f"peak +{peak_grown / MiB:.0f} MiB")
    monitor.check(STALL_BOUND)
    assert ping(nsqd.http_port) and nsqd.worker_pid == pid
    if peak_bound is not None:
        assert peak_grown < peak_bound, f"the worker's peak RSS grew {peak_grown / MiB:.0f} MiB"
    assert rss_after - rss_before < memory_bound, (
        f"the worker's RSS grew {(rss_after - rss_before) / MiB:.0f} MiB")


def compressed_client(nsqd, kind, timeout=60):
    client = V2Client(nsqd.tcp_port, timeout=timeout)
    upgrade(client, kind)
    return client


def deflate_raw(data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def snappy_raw(data):
    return snappy.StreamCompressor().compress(data)   # chunks, without the stream id


# -- decompression bombs ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["deflate", "snappy"])
def test_compressed_bomb_of_commands_does_not_stall_other_clients(nsqd, kind):
    """A few KB on the wire that inflate to millions of NOPs: the reader works through
    them, but gives every other client its turn between commands."""
    client = compressed_client(nsqd, kind)
    inflated = b"NOP\n" * NOPS + pub_command("abuse_bomb", b"last")
    wire = (deflate_raw if kind == "deflate" else snappy_raw)(inflated)
    assert len(wire) < len(inflated) // 15

    def run():
        client.sock.sock.sendall(wire)
        # The PUB behind the bomb is answered once every NOP before it was read.
        assert client.read_frame() == (FRAME_RESPONSE, b"OK")

    abuse(nsqd, run)
    assert nsqd.topic_stats("abuse_bomb")["message_count"] == 1
    client.sock.sock.close()


def test_compressed_line_without_newline_is_closed_without_inflating_it(nsqd):
    """64 KB of deflate that inflate to 64 MiB with no newline, on several connections:
    Go drops each connection once a line outgrows its 16 KiB buffer, having inflated
    little more than that; so must greensq, whose memory must not follow the bombs."""
    clients = [compressed_client(nsqd, "deflate", timeout=30) for _ in range(4)]
    wire = deflate_raw(b"A" * (64 * MiB))
    assert len(wire) < 100_000

    def run():
        for client in clients:
            client.sock.sock.sendall(wire)
        for client in clients:
            assert V2Client.is_closed(client, timeout=30)
            assert not client.unread             # closed as Go closes it: no frame

    abuse(nsqd, run, memory_bound=32 * MiB, peak_bound=48 * MiB)
    nsqd.wait_for_log(r"failed to read command")


def test_plain_oversize_lines_and_command_floods(nsqd):
    """A plain line longer than 16 KiB is dropped as Go drops it, a line of exactly
    16 KiB is a command, and a connection that floods commands faster than nsqd handles
    them does not stall the others."""
    longest = V2Client(nsqd.tcp_port)
    longest.send(b"NOP" + b" " * (MAX_LINE - 4) + b"\n" + pub_command("abuse_plain", b"x"))
    assert longest.read_frame() == (FRAME_RESPONSE, b"OK")
    longest.close()

    oversize = [V2Client(nsqd.tcp_port) for _ in range(4)]
    flood = V2Client(nsqd.tcp_port, timeout=60)

    def run():
        for client in oversize:
            client.send(b"NOP" + b" " * MAX_LINE + b"\n")
        flood.send(b"NOP\n" * NOPS + pub_command("abuse_plain", b"last"))
        assert flood.read_frame() == (FRAME_RESPONSE, b"OK")
        for client in oversize:
            assert client.is_closed() and not client.unread

    abuse(nsqd, run)
    assert nsqd.topic_stats("abuse_plain")["message_count"] == 2


# -- the largest batches -----------------------------------------------------------------

def test_huge_http_mpub(nsqd):
    """/mpub of 2.6 million one-byte lines, the most the default 5 MiB body holds: one
    OK after all are stored, no stall, and memory near the body's size."""
    count = 2_600_000
    body = b"x\n" * count

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", nsqd.http_port, timeout=120)
        conn.request("POST", "/mpub?topic=abuse_http", body)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"OK")
        conn.close()

    abuse(nsqd, run, peak_bound=64 * MiB)
    assert nsqd.topic_stats("abuse_http")["depth"] == count


def test_huge_tcp_mpub(nsqd):
    """MPUB of a million one-byte messages (the default 5 MiB body's most) into a topic
    with two channels: one OK, every copy stored, in order, no stall."""
    count = 1_000_000
    assert nsqd.http("POST", "/topic/create?topic=abuse_tcp")[0] == 200
    for channel in ("one", "two"):
        status, _, _ = nsqd.http("POST", f"/channel/create?topic=abuse_tcp&channel={channel}")
        assert status == 200
    body = size(count) + (size(1) + b"m") * count
    client = V2Client(nsqd.tcp_port, timeout=120)

    def run():
        client.send(b"MPUB abuse_tcp\n" + size(len(body)) + body)
        assert client.read_frame() == (FRAME_RESPONSE, b"OK")

    abuse(nsqd, run, peak_bound=64 * MiB)
    client.close()
    for channel in ("one", "two"):
        assert nsqd.channel_stats("abuse_tcp", channel)["depth"] == count


# -- a batch cut short -----------------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    (b"\x00\x00", b"E_BAD_BODY MPUB failed to read message count"),
    (size(2) + size(3) + b"abc" + b"\x00", b"E_BAD_MESSAGE MPUB failed to read message(1) body size"),
    (size(2) + size(3) + b"abc" + size(3) + b"a", b"E_BAD_MESSAGE MPUB failed to read message body"),
], ids=["count", "size", "body"])
def test_truncated_mpub_then_eof_gets_go_error(nsqd, body, expected):
    """A body shorter than its size, then EOF: Go reads the messages off the stream and
    answers where it ran out, before closing."""
    client = V2Client(nsqd.tcp_port)

    def run():
        client.send(b"MPUB abuse_cut\n" + size(100) + body)
        client.sock.shutdown(socket.SHUT_WR)
        assert client.read_frame() == (FRAME_ERROR, expected)
        assert client.is_closed()

    abuse(nsqd, run)
    wait_until(lambda: nsqd.topic_stats("abuse_cut") is not None, message="the topic")
    assert nsqd.topic_stats("abuse_cut")["message_count"] == 0
