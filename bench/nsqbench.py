"""Load generators that drive any NSQ-compatible nsqd over TCP, like NSQ's bench tools.

They are built not to be the bottleneck: the writer sends one pre-encoded MPUB frame over
and over with a window of unanswered batches, and the reader splits each read into frames
with one pass of the shared frame decoder and answers each burst with one write of FINs.
Both print msgs/s and MB/s. Run them as separate processes from the server (see
bench_writer.py, bench_reader.py).

Beside them: what the bench scripts measure of a process (CPU time, RSS, PSS, resident
pages), and of a daemon they run with greensq.http.testing's ``Daemon``, through its
processes. The module imports only what its load generators need (the frame decoder
among them) and the rest where it is used: floors.py measures the memory of an
interpreter that has imported it.
"""

import argparse
import json
import os
import socket
import struct
import time

from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.wire import HEARTBEAT, OK_FRAME


def connect(address):
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host or "127.0.0.1", int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"  V2")
    return sock


def subscribe(sock, frames, topic, channel, rdy):
    """IDENTIFY (no output buffering), SUB and RDY on a connection whose frames
    ``frames`` (a FrameDecoder) reads."""
    body = json.dumps({"feature_negotiation": True, "output_buffer_timeout": -1}).encode()
    sock.sendall(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
    read_frame(sock, frames)
    sock.sendall(f"SUB {topic} {channel}\n".encode())
    kind, data = read_frame(sock, frames)
    assert data == b"OK", data
    sock.sendall(f"RDY {rdy}\n".encode())


def read_frame(sock, frames):
    """The next ``(frame_type, data)`` from ``sock``, through the FrameDecoder ``frames``
    (which keeps what arrived after it)."""
    while (frame := frames.next_frame()) is None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        frames.feed(data)
    return frame


def mpub_frame(topic, size, batch):
    body = b"x" * size
    payload = struct.pack(">i", batch) + (struct.pack(">i", size) + body) * batch
    return f"MPUB {topic}\n".encode() + struct.pack(">i", len(payload)) + payload


MIB = 1 << 20


def pub_frame(topic, size):
    return f"PUB {topic}\n".encode() + struct.pack(">i", size) + b"x" * size


def busy_recv(sock):
    """A ``recv`` that polls the socket instead of sleeping until data arrives, as Go's
    runtime spins for a moment before it parks a goroutine waiting on the network: a
    client that sleeps adds its own wake-up, tens of microseconds on a virtual machine, to
    every round trip it measures."""
    recv = sock.recv

    def poll(size):
        while True:
            try:
                return recv(size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass

    return poll


def run_writer(address, topic, size, batch, runfor, count=None, window=8, busy_poll=False):
    """Publish ``batch``-message MPUBs (or single PUBs when batch is 1, waiting for each OK
    when window is 1) for ``runfor`` seconds or until ``count`` messages; returns
    ``(messages, seconds)``. With ``busy_poll`` it waits for replies with ``busy_recv``."""
    sock = connect(address)
    recv = busy_recv(sock) if busy_poll else sock.recv
    sendall = sock.sendall
    frame = pub_frame(topic, size) if batch == 1 else mpub_frame(topic, size, batch)
    sent = acked = 0
    pending = b""
    deadline = time.monotonic() + runfor
    start = time.monotonic()
    limit = count if count is not None else float("inf")
    while acked < limit:
        while (sent - acked) < window * batch and sent < limit and time.monotonic() < deadline:
            sendall(frame)
            sent += batch
        if sent == acked:
            break
        pending += recv(65536)
        complete = len(pending) // len(OK_FRAME)
        chunk, pending = pending[:complete * len(OK_FRAME)], pending[complete * len(OK_FRAME):]
        if chunk != OK_FRAME * complete:
            raise RuntimeError(f"unexpected response: {chunk[:200]!r}")
        acked += complete * batch
    elapsed = time.monotonic() - start
    sock.close()
    return acked, elapsed


def message_id(msg_id, body, timestamp, attempts, responder, address):
    """What the reader's FrameDecoder keeps of each message: its ID."""
    return msg_id


def fin_commands(ids):
    """FIN for each message ID, in one bytes (one join for the burst: cheaper than a
    line each)."""
    return b"FIN " + b"\nFIN ".join(ids) + b"\n"


def run_reader(address, topic, channel, rdy, runfor, count=None):
    """Consume (and FIN) for ``runfor`` seconds or until ``count`` messages; returns
    ``(messages, seconds)``."""
    sock = connect(address)
    frames = FrameDecoder(message_id)
    subscribe(sock, frames, topic, channel, rdy)
    sock.settimeout(1.0)
    received = 0
    start = time.monotonic()
    deadline = start + runfor
    limit = count if count is not None else float("inf")
    while received < limit and time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            break
        frames.feed(data)
        ids, responses, _ = frames.decode()
        received += len(ids)
        replies = fin_commands(ids) if ids else b""
        if HEARTBEAT in responses:
            replies += b"NOP\n"
        if replies:
            sock.sendall(replies)
    elapsed = time.monotonic() - start
    sock.close()
    return received, elapsed


def report(label, messages, seconds, size):
    rate = messages / seconds if seconds else 0.0
    print(f"{label}: {messages} msgs in {seconds:.2f}s: {rate:,.0f} msgs/s, "
          f"{rate * size / 1e6:.2f} MB/s", flush=True)
    return rate


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pss_bytes(pid):
    """Proportional set size: resident memory with each shared page divided among the
    processes that map it (so an arbiter and its worker add up)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss for {pid}")


def resident_pages(pid):
    """The physical pages ``pid`` has resident (frame numbers from /proc/<pid>/pagemap,
    which only root may read); None where they cannot be read."""
    import array

    frames = set()
    page = os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, _, end = line.split(None, 1)[0].partition("-")
            first, last = int(start, 16) // page, int(end, 16) // page
            try:
                pagemap.seek(first * 8)
                entries = array.array("Q", pagemap.read((last - first) * 8))
            except OSError:
                continue   # [vsyscall]
            frames.update(entry & ((1 << 55) - 1) for entry in entries if entry >> 63)
    if frames and not any(frames):
        return None        # frame numbers hidden: not root
    return frames


def resident_once_bytes(pids):
    """The memory a daemon's processes hold together, each physical page counted once
    however many of them map it. Unlike PSS it does not depend on what else runs on the
    host (other Python processes share, and so lower the PSS of, the interpreter's and
    the C libraries' pages). None without root."""
    frames = set()
    for pid in pids:
        pages = resident_pages(pid)
        if pages is None:
            return None
        frames |= pages
    return len(frames) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid):
    """User + system CPU time of ``pid``, all its threads included."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- A daemon (greensq.http.testing's ``Daemon``), measured through its processes.

def daemon_cpu_seconds(daemon):
    """CPU time used so far by the daemon's processes."""
    return sum(cpu_seconds(pid) for pid in daemon.pids().values())


def daemon_pss(daemon):
    """PSS in bytes of each of the daemon's processes, by ``pids()``'s names."""
    return {name: pss_bytes(pid) for name, pid in daemon.pids().items()}


def daemon_resident_once(daemon):
    """``resident_once_bytes`` of the daemon's processes (None without root)."""
    return resident_once_bytes(daemon.pids().values())


# --- Lock-step load: many connections, each waiting for its reply before the next request.

def http_reply_end(buf):
    """End of the first complete HTTP response in ``buf`` (0 if incomplete); a response
    other than 200 raises."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return 0
    if not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answered {bytes(buf[:60])!r}")
    head = bytes(buf[:head_end]).lower()
    at = head.find(b"content-length:")
    length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
    end = head_end + 4 + length
    return end if len(buf) >= end else 0


def nsq_reply_end(buf):
    """End of the first complete NSQ frame in ``buf`` (0 if incomplete); anything but OK
    raises."""
    if len(buf) < 4:
        return 0
    end = 4 + int.from_bytes(buf[:4], "big")
    if len(buf) < end:
        return 0
    if buf[:end] != OK_FRAME:
        raise RuntimeError(f"answered {bytes(buf[:60])!r}")
    return end


def http_pub_request(port, topic, size):
    body = b"x" * size
    return (f"POST /pub?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode() + body


def run_lockstep(address, request, reply_end, connections, start_at, stop_at, magic=b""):
    """From ``start_at`` to ``stop_at`` (``time.time()``), keep ``connections``
    connections busy, each sending ``request`` and waiting for its whole reply before
    sending again, multiplexed with epoll; returns the replies received.

    Replies to the same request are alike (an HTTP Date header keeps its length), so once
    ``reply_end`` has parsed one, a read of exactly that many bytes with the same start is
    taken as the next without parsing it again."""
    import select

    host, _, port = address.rpartition(":")
    socks = {}
    for _ in range(connections):
        sock = socket.create_connection((host or "127.0.0.1", int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if magic:
            sock.sendall(magic)
        sock.setblocking(False)
        socks[sock.fileno()] = [sock, b""]
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    time.sleep(max(0.0, start_at - time.time()))
    for sock, _ in socks.values():
        sock.send(request)
    replies = 0
    size, head = -1, None   # a reply's length and first 12 bytes, once seen
    while time.time() < stop_at:
        for fd, _ in poller.poll(0.1):
            state = socks[fd]
            sock = state[0]
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed a connection")
            if not state[1] and len(data) == size and data.startswith(head):
                replies += 1
            else:
                buf = state[1] + data
                end = reply_end(buf)
                if not end:
                    state[1] = buf
                    continue
                size, head = end, buf[:12]
                state[1] = buf[end:]
                replies += 1
            if sock.send(request) != len(request):   # it fits an empty send buffer
                raise RuntimeError("request not sent whole")
    for sock, _ in socks.values():
        sock.close()
    poller.close()
    return replies


def lockstep_load(address, request, reply_end, connections, processes, runfor, magic=b""):
    """``connections`` lock-step connections spread over ``processes`` client processes
    (so the client is not the bottleneck); returns ``(replies, seconds, client CPU
    seconds)``."""
    import multiprocessing
    import resource

    processes = max(1, min(processes, connections))
    shares = [connections // processes + (index < connections % processes)
              for index in range(processes)]
    start_at = time.time() + 0.3 + 0.05 * processes   # every process connected by then
    stop_at = start_at + runfor
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = multiprocessing.get_context("fork").Pool(processes)
    try:
        results = [pool.apply_async(run_lockstep, (address, request, reply_end, share,
                                                   start_at, stop_at, magic))
                   for share in shares]
        replies = sum(result.get() for result in results)
    finally:
        pool.close()
        pool.join()   # reaped, so their CPU time counts in RUSAGE_CHILDREN
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return replies, runfor, client_cpu


def common_args(parser):
    parser.add_argument("--nsqd-tcp-address", default="127.0.0.1:4150")
    parser.add_argument("--topic", default="sub_bench")
    parser.add_argument("--runfor", type=float, default=10.0, help="seconds")
    parser.add_argument("--size", type=int, default=200, help="message size (bytes)")
    return parser


def new_parser(description):
    return common_args(argparse.ArgumentParser(description=description))
