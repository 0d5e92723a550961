"""NSQ's benchmark scenarios against greensq's nsqd, and beside it any other nsqd binary
(Go's), printed as one table.

  (a) writer only (MPUB batches of 200, 200-byte messages, default --mem-queue-size)
  (b) one reader (RDY 2500) draining the backlog (a) left
  (c) writer and reader together
  (d) one client sending single PUBs, waiting for each OK (it polls its socket for the
      reply, as a Go client's runtime spins before it sleeps; the figure for a client that
      sleeps in recv() is printed beside it)
  (e) PSS idle, and after a backlog of 1,000,000 messages (greensq: arbiter + worker);
      beside it (as root) the same memory with each physical page counted once, which
      does not depend on other processes sharing the interpreter's and C libraries' pages
  (f) HTTP POST /pub, one keep-alive connection, one request at a time
  (g) end-to-end latency p50 / p99 at a steady 10,000 msgs/s
  (h) HTTP POST /pub, 16 keep-alive connections, each one request at a time
  (i) single PUBs from 32 publishers, each waiting for its OK
  (j) writer with --mem-queue-size=0 (every message goes through the disk queues)

Every scenario starts a fresh nsqd in a temporary data directory ((b) drains the one (a)
filled). With ``--nsqd-binary`` (e.g. Go's nsqd) each scenario runs against that binary
right after greensq, so both see the same machine, and the last column is greensq's figure
over the other's. ``--http-workers 0,2`` runs greensq once with each of these numbers of
HTTP workers (nsqd's ``--http-workers``), ``--idle-spin 0,50us`` with each of these
``--idle-spin`` durations. ``--durable`` instead runs each scenario on
greensq in durable mode and then in the default mode (the last column: durable over
default); it picks (a), (b), (c), (d) and (i) unless ``--only`` says otherwise.
``--pure-python`` adds a column for greensq's pure-Python build (its daemons run with
``GREENSQ_PURE_PYTHON=1``) beside the compiled one; with ``--nsqd-binary`` too, each
greensq column gets its ratio to the other binary. The load generators (nsqbench.py) run
in their own processes; the lock-step ones ((f), (h), (i)) spread their connections over
``--client-processes`` processes that multiplex them with epoll, so the client is not the
bottleneck. "CPU/op"
is the user + system time the daemon's processes used during the scenario, divided by
its operations (messages published or drained, requests).

    python bench/scenarios.py [--runfor 10] [--only a,b,...] [--nsqd-binary PATH | --durable]
                              [--pure-python] [--http-workers N[,N...]]
                              [--idle-spin D[,D...]]
"""

import argparse
import contextlib
import multiprocessing
import os
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass

from nsqbench import (
    MIB, connect, daemon_cpu_seconds, daemon_pss, daemon_resident_once, fin_commands,
    http_pub_request, http_reply_end, lockstep_load, nsq_reply_end, pub_frame, run_reader,
    run_writer, subscribe)

from greensq.http.testing import Daemon, wait_until
from greensq.services.shared.compiled import build
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.wire import HEARTBEAT, OK_FRAME

SIZE = 200
BATCH = 200
BACKLOG = 1_000_000

NAMES = {
    "a": "(a) writer, MPUB 200 x 200 B",
    "b": "(b) one reader draining (a)'s backlog",
    "c": "(c) writer + reader together",
    "d": "(d) single PUB, 1 publisher",
    "e": "(e) PSS idle / 1M-message backlog",
    "f": "(f) HTTP /pub, 1 connection",
    "g": "(g) e2e latency at 10,000 msgs/s",
    "h": "(h) HTTP /pub, 16 connections",
    "i": "(i) single PUB, 32 publishers",
    "j": "(j) writer, --mem-queue-size=0",
}


@dataclass
class Result:
    text: str
    rate: float = None      # what the ratio column compares
    cpu_us: float = None    # server CPU per operation
    client_cpu_us: float = None   # the load generator's, where it may limit the rate


class Scenarios:
    """The scenarios against one kind of nsqd (``binary`` None: greensq)."""

    def __init__(self, tmp, binary, runfor, client_processes, flags=(), env=None):
        self.tmp = tmp
        self.binary = binary
        self.flags = flags
        self.env = env
        self.runfor = runfor
        self.client_processes = client_processes
        self.starts = 0

    def start(self, *flags):
        self.starts += 1
        return Daemon(os.path.join(self.tmp, f"data{self.starts}"), [*self.flags, *flags],
                      binary=self.binary, env=self.env).start()

    def writer_and_reader(self, only):
        """(a), and (b) on the same nsqd."""
        results = {}
        with self.running() as nsqd:
            cpu = daemon_cpu_seconds(nsqd)
            messages, seconds = in_process(run_writer, nsqd.tcp_address, "bench_a", SIZE,
                                           BATCH, self.runfor)
            results["a"] = rate_result(messages, seconds, "msgs/s", nsqd, cpu)
            if "b" in only:
                cpu = daemon_cpu_seconds(nsqd)
                drained, seconds = in_process(run_reader, nsqd.tcp_address, "bench_a",
                                              "ch", 2500, self.runfor * 3, messages)
                results["b"] = rate_result(drained, seconds, "msgs/s", nsqd, cpu)
        return results

    def together(self):
        with self.running() as nsqd:
            cpu = daemon_cpu_seconds(nsqd)
            (sent, sent_seconds), (got, got_seconds) = together(nsqd.tcp_address, self.runfor)
            result = rate_result(sent, sent_seconds, "msgs/s", nsqd, cpu)
            result.text = f"in {sent / sent_seconds:,.0f} / out {got / got_seconds:,.0f} msgs/s"
            return result

    def single_pub(self):
        with self.running() as nsqd:
            cpu = daemon_cpu_seconds(nsqd)
            messages, seconds = in_process(run_writer, nsqd.tcp_address, "bench_d", SIZE, 1,
                                           self.runfor, None, 1, True)
            result = rate_result(messages, seconds, "msgs/s", nsqd, cpu)
            sleeping, sleeping_seconds = in_process(run_writer, nsqd.tcp_address, "bench_d",
                                                    SIZE, 1, self.runfor, None, 1, False)
            result.text += f" (sleeping in recv: {sleeping / sleeping_seconds:,.0f})"
            return result

    def memory(self):
        with self.running() as nsqd:
            time.sleep(1.0)
            idle, idle_once = daemon_pss(nsqd), daemon_resident_once(nsqd)
            in_process(run_writer, nsqd.tcp_address, "bench_e", SIZE, BATCH, 3600, BACKLOG)
            wait_until(lambda: nsqd.topic_stats("bench_e")["depth"] >= BACKLOG, timeout=300,
                       interval=0.2, message="the backlog")
            time.sleep(1.0)
            loaded, loaded_once = daemon_pss(nsqd), daemon_resident_once(nsqd)
        growth = (sum(loaded.values()) - sum(idle.values())) / MIB
        text = f"{format_pss(idle)} / {format_pss(loaded)} MiB (+{growth:.1f})"
        if idle_once is not None and loaded_once is not None:
            text += f"; each page once: {idle_once / MIB:.1f} / {loaded_once / MIB:.1f}"
        return Result(text, rate=sum(idle.values()))

    def lockstep(self, request, reply_end, connections, magic=b""):
        with self.running() as nsqd:
            address = nsqd.tcp_address if magic else f"127.0.0.1:{nsqd.http_port}"
            if not magic:
                request = request(nsqd.http_port)
            cpu = daemon_cpu_seconds(nsqd)
            replies, seconds, client_cpu = lockstep_load(
                address, request, reply_end, connections, self.client_processes,
                self.runfor, magic)
            result = rate_result(replies, seconds, "msgs/s" if magic else "req/s", nsqd, cpu)
            result.client_cpu_us = client_cpu / replies * 1e6 if replies else None
            return result

    def http_pub(self, connections):
        return self.lockstep(lambda port: http_pub_request(port, "bench_http", SIZE),
                             http_reply_end, connections)

    def many_publishers(self, publishers):
        return self.lockstep(pub_frame("bench_i", SIZE), nsq_reply_end, publishers,
                             magic=b"  V2")

    def latency(self):
        with self.running() as nsqd:
            cpu = daemon_cpu_seconds(nsqd)
            p50, p99, count = latency(nsqd.tcp_address, self.runfor)
            cpu_us = (daemon_cpu_seconds(nsqd) - cpu) / count * 1e6 if count else None
            return Result(f"p50 {p50:.2f} ms / p99 {p99:.2f} ms ({count:,} msgs)",
                          cpu_us=cpu_us)

    def disk_writer(self):
        with self.running("--mem-queue-size=0") as nsqd:
            cpu = daemon_cpu_seconds(nsqd)
            messages, seconds = in_process(run_writer, nsqd.tcp_address, "bench_j", SIZE,
                                           BATCH, self.runfor)
            return rate_result(messages, seconds, "msgs/s", nsqd, cpu)

    @contextlib.contextmanager
    def running(self, *flags):
        """A fresh nsqd for the length of a ``with`` block."""
        nsqd = self.start(*flags)
        try:
            yield nsqd
        finally:
            nsqd.stop()

    def run(self, letter, only):
        """``{letter: Result}`` for one scenario ((a) brings (b) along)."""
        if letter == "a":
            return self.writer_and_reader(only)
        runs = {"c": self.together, "d": self.single_pub, "e": self.memory,
                "f": lambda: self.http_pub(1), "g": self.latency,
                "h": lambda: self.http_pub(16), "i": lambda: self.many_publishers(32),
                "j": self.disk_writer}
        return {letter: runs[letter]()}


def rate_result(operations, seconds, unit, nsqd, cpu_before):
    rate = operations / seconds if seconds else 0.0
    used = daemon_cpu_seconds(nsqd) - cpu_before
    return Result(f"{rate:,.0f} {unit}", rate, used / operations * 1e6 if operations else None)


def format_pss(pss):
    total = sum(pss.values()) / MIB
    if len(pss) == 1:
        return f"{total:.1f}"
    return f"{' + '.join(f'{value / MIB:.1f}' for value in pss.values())} = {total:.1f}"


def in_process(target, *args):
    """Run ``target(*args)`` in a child process and return its result."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(target, args)


def _writer(address, runfor):
    return run_writer(address, "bench_c", SIZE, BATCH, runfor)


def _reader(address, runfor):
    return run_reader(address, "bench_c", "ch", 2500, runfor)


def together(address, runfor):
    """``((published, seconds), (consumed, seconds))`` with a writer and a reader at once."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        # Subscribe first so the channel exists before the first message.
        reader = pool.apply_async(_reader, (address, runfor + 1))
        time.sleep(0.5)
        writer = pool.apply_async(_writer, (address, runfor))
        return writer.get(), reader.get()


def _latency_publisher(address, rate, runfor):
    sock = connect(address)
    interval = 1.0 / rate
    start = time.monotonic()
    sent = 0
    pending = b""
    while True:
        now = time.monotonic()
        if now - start > runfor:
            break
        due = int((now - start) / interval) + 1
        frames = []
        while sent < due:
            body = struct.pack(">d", time.time()).ljust(SIZE, b"x")
            frames.append(b"PUB bench_g\n" + struct.pack(">i", len(body)) + body)
            sent += 1
        if frames:
            sock.sendall(b"".join(frames))
        sock.setblocking(False)
        try:
            pending += sock.recv(65536)
        except BlockingIOError:
            pass
        sock.setblocking(True)
        if pending.count(OK_FRAME):
            pending = pending[len(pending) - len(pending) % len(OK_FRAME):]
        time.sleep(max(0.0, start + sent * interval - time.monotonic()))
    sock.close()
    return sent


def _id_and_sent_at(msg_id, body, timestamp, attempts, responder, address):
    """What the latency reader keeps of a message: its ID, and when it was published."""
    return msg_id, struct.unpack_from(">d", body)[0]


def _latency_reader(address, runfor):
    sock = connect(address)
    frames = FrameDecoder(_id_and_sent_at)
    subscribe(sock, frames, "bench_g", "ch", 2500)
    sock.settimeout(1.0)
    latencies = []
    deadline = time.monotonic() + runfor
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            continue
        now = time.time()
        frames.feed(data)
        messages, responses, _ = frames.decode()
        latencies += [now - sent_at for _, sent_at in messages]
        replies = fin_commands([msg_id for msg_id, _ in messages]) if messages else b""
        if HEARTBEAT in responses:
            replies += b"NOP\n"
        if replies:
            sock.sendall(replies)
    return latencies


def latency(address, runfor, rate=10_000):
    """``(p50 ms, p99 ms, messages)`` end to end at a steady ``rate``."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        reader = pool.apply_async(_latency_reader, (address, runfor + 2))
        time.sleep(0.5)
        pool.apply(_latency_publisher, (address, rate, runfor))
        latencies = sorted(reader.get())
    warm = latencies[len(latencies) // 20:] or latencies  # drop the warm-up tail
    warm.sort()

    def pct(p):
        return warm[min(len(warm) - 1, int(len(warm) * p))] * 1000

    return pct(0.50), pct(0.99), len(latencies)


def binary_label(binary):
    """"go nsqd" for Go's nsqd (its ``--version`` says "built w/go..."), else the path
    (another greensq checkout's ``nsqd``, to compare before and after a change)."""
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return "go nsqd" if "built w/go" in version else binary


def print_table(letters, columns):
    """``columns``: [(server name, {letter: Result})]; each column but the last gets its
    ratio to the last."""
    header = ["scenario"]
    for name, _ in columns:
        header += [name, "CPU/op"]
    reference = columns[-1][0]
    header += [f"{name} / {reference}" for name, _ in columns[:-1]]
    rows = [header]
    for letter in letters:
        if letter == "b" and "a" not in letters:
            continue
        row = [NAMES[letter]]
        results = [results.get(letter) for _, results in columns]
        for result in results:
            row += [result.text if result else "-",
                    f"{result.cpu_us:.1f} µs" if result and result.cpu_us else ""]
        last = results[-1]
        for result in results[:-1]:
            row.append(f"{result.rate / last.rate:.2f}"
                       if result and result.rate and last and last.rate else "")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runfor", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--only", help="comma-separated scenario letters (default: all)")
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--nsqd-binary", help="another nsqd (e.g. Go's) to run beside greensq")
    side.add_argument("--durable", action="store_true",
                      help="greensq --durable beside greensq's default mode")
    parser.add_argument("--pure-python", action="store_true",
                        help="greensq's pure-Python build (GREENSQ_PURE_PYTHON=1) beside it")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="processes of the lock-step load generators (f, h, i)")
    parser.add_argument("--http-workers", metavar="N[,N...]",
                        help="run greensq with each of these --http-workers counts")
    parser.add_argument("--idle-spin", metavar="D[,D...]",
                        help="run greensq with each of these --idle-spin durations")
    args = parser.parse_args()
    if args.pure_python and args.durable:
        parser.error("--pure-python compares builds in the default mode: not with --durable")
    only = args.only or ("a,b,c,d,i" if args.durable else ",".join(NAMES))
    letters = [letter for letter in NAMES if letter in only.split(",")]
    if "b" in letters and "a" not in letters:
        letters.insert(0, "a")   # (b) drains what (a) publishes
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"greensq's build: {build()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        def scenarios(name, binary=None, flags=(), env=None):
            return name, Scenarios(tempfile.mkdtemp(dir=tmp), binary,
                                   args.runfor, args.client_processes, flags, env)

        counts = args.http_workers.split(",") if args.http_workers else [None]
        spins = args.idle_spin.split(",") if args.idle_spin else [None]
        servers = []
        for count in counts:
            for spin in spins:
                name, flags = "greensq", []
                if count is not None:
                    name, flags = f"{name} -w{count}", [*flags, f"--http-workers={count}"]
                if spin is not None:
                    name, flags = f"{name} spin {spin}", [*flags, f"--idle-spin={spin}"]
                servers.append(scenarios(name, flags=flags))
        if args.pure_python:
            servers.append(scenarios("greensq pure", env={"GREENSQ_PURE_PYTHON": "1"}))
        if args.durable:
            servers.insert(0, scenarios("greensq --durable", flags=("--durable",)))
        elif args.nsqd_binary:
            servers.append(scenarios(binary_label(args.nsqd_binary), args.nsqd_binary))
        columns = [(name, {}) for name, _ in servers]
        for letter in letters:
            if letter == "b":
                continue   # run with (a)
            for (name, scenarios), (_, results) in zip(servers, columns):
                results.update(scenarios.run(letter, letters))
                result = results[letter]
                client = (f", client {result.client_cpu_us:.1f} µs CPU/op"
                          if result.client_cpu_us else "")
                print(f"  {NAMES[letter]} [{name}]: {result.text}{client}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print_table(letters, columns)


if __name__ == "__main__":
    main()
