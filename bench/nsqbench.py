"""Load generators that drive any NSQ-compatible nsqd over TCP, like NSQ's bench tools.

They are built not to be the bottleneck: the writer sends one pre-encoded MPUB frame over
and over with a window of unanswered batches, and the reader parses frames straight out of
its receive buffer and answers each burst with one write of FINs. Both print msgs/s and
MB/s. Run them as separate processes from the server (see bench_writer.py, bench_reader.py).
"""

import argparse
import json
import os
import socket
import struct
import time

OK_FRAME = struct.pack(">ii", 6, 0) + b"OK"
HEARTBEAT = b"_heartbeat_"


def connect(address):
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host or "127.0.0.1", int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"  V2")
    return sock


def identify(sock, **fields):
    body = json.dumps(fields).encode()
    sock.sendall(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
    read_frame(sock)


def read_frame(sock):
    header = recv_exactly(sock, 8)
    size, kind = struct.unpack(">ii", header)
    return kind, recv_exactly(sock, size - 4)


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def mpub_frame(topic, size, batch):
    body = b"x" * size
    payload = struct.pack(">i", batch) + (struct.pack(">i", size) + body) * batch
    return f"MPUB {topic}\n".encode() + struct.pack(">i", len(payload)) + payload


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


def run_reader(address, topic, channel, rdy, runfor, count=None):
    """Consume (and FIN) for ``runfor`` seconds or until ``count`` messages; returns
    ``(messages, bytes, seconds)``."""
    sock = connect(address)
    identify(sock, feature_negotiation=True, output_buffer_timeout=-1)
    sock.sendall(f"SUB {topic} {channel}\n".encode())
    kind, data = read_frame(sock)
    assert data == b"OK", data
    sock.sendall(f"RDY {rdy}\n".encode())
    sock.settimeout(1.0)
    unpack = struct.Struct(">ii").unpack_from
    received = received_bytes = 0
    buf = b""
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
        buf += data
        pos, end, fins = 0, len(buf), []
        while end - pos >= 8:
            size, kind = unpack(buf, pos)
            if end - pos < size + 4:
                break
            if kind == 2:
                fins.append(b"FIN " + buf[pos + 18:pos + 34] + b"\n")
                received_bytes += size - 30
            elif buf[pos + 8:pos + 4 + size] == HEARTBEAT:
                fins.append(b"NOP\n")
            pos += size + 4
        buf = buf[pos:]
        received += sum(1 for f in fins if f[0:1] == b"F")
        if fins:
            sock.sendall(b"".join(fins))
    elapsed = time.monotonic() - start
    sock.close()
    return received, received_bytes, elapsed


def report(label, messages, seconds, size):
    rate = messages / seconds if seconds else 0.0
    print(f"{label}: {messages} msgs in {seconds:.2f}s: {rate:,.0f} msgs/s, "
          f"{rate * size / 1e6:.2f} MB/s", flush=True)
    return rate


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def common_args(parser):
    parser.add_argument("--nsqd-tcp-address", default="127.0.0.1:4150")
    parser.add_argument("--topic", default="sub_bench")
    parser.add_argument("--runfor", type=float, default=10.0, help="seconds")
    parser.add_argument("--size", type=int, default=200, help="message size (bytes)")
    return parser


def new_parser(description):
    return common_args(argparse.ArgumentParser(description=description))


class NsqdProcess:
    """greensq's nsqd in a subprocess on free ports (for the bench drivers)."""

    def __init__(self, data_path, *flags, python=None):
        """``python``: the interpreter (and so the greensq checkout) to run nsqd with."""
        import re
        import subprocess
        import sys
        import threading

        os.makedirs(data_path, exist_ok=True)
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "greensq.http.nsqd_launcher",
             "--tcp-address=127.0.0.1:0",
             "--http-address=127.0.0.1:0", f"--data-path={data_path}", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ports = {}
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                match = re.search(rb"(TCP|HTTP): listening on .*:(\d+)", line)
                if match:
                    ports[match.group(1).decode()] = int(match.group(2))
                    if len(ports) == 2:
                        ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(15):
            raise RuntimeError("nsqd did not start")
        self.tcp_address = f"127.0.0.1:{ports['TCP']}"
        self.http_port = ports["HTTP"]

    @property
    def worker_pid(self):
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
            return int(fh.read().split()[0])

    def stats(self):
        import urllib.request

        url = f"http://127.0.0.1:{self.http_port}/stats?format=json&include_clients=false"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())

    def topic_depth(self, topic):
        for entry in self.stats()["topics"]:
            if entry["topic_name"] == topic:
                return entry["depth"]
        return 0

    def stop(self):
        import signal

        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
