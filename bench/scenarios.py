"""NSQ's benchmark scenarios against greensq's nsqd, printed as one table.

Starts nsqd in a temporary data directory and drives it with the load generators in
nsqbench.py, each in its own process:

  (a) writer only (MPUB batches of 200, 200-byte messages, default --mem-queue-size)
  (b) one reader (RDY 2500) draining the backlog (a) left
  (c) writer and reader together
  (d) one client sending single PUBs, waiting for each OK (it polls its socket for the
      reply, as a Go client's runtime spins before it sleeps; the figure for a client that
      sleeps in recv() is printed beside it)
  (e) RSS idle, and after (a) with its backlog
  (f) HTTP /pub requests/s from one keep-alive client
  (g) end-to-end latency p50 / p99 at a steady 10,000 msgs/s

    python bench/scenarios.py [--runfor 10] [--only a,b,...]
"""

import argparse
import multiprocessing
import socket
import struct
import tempfile
import time

from nsqbench import NsqdProcess, connect, identify, read_frame, rss_bytes, run_reader, run_writer

SIZE = 200
BATCH = 200


def in_process(target, *args):
    """Run ``target(*args)`` in a child process and return its result."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(target, args)


def scenario_writer(nsqd, runfor):
    messages, seconds = in_process(run_writer, nsqd.tcp_address, "bench_a", SIZE, BATCH, runfor)
    return messages / seconds, messages


def scenario_reader(nsqd, runfor, backlog):
    messages, _, seconds = in_process(
        run_reader, nsqd.tcp_address, "bench_a", "ch", 2500, runfor * 3, backlog)
    return messages / seconds


def _writer_then_rate(address, runfor):
    messages, seconds = run_writer(address, "bench_c", SIZE, BATCH, runfor)
    return messages / seconds


def _reader_then_rate(address, runfor):
    messages, _, seconds = run_reader(address, "bench_c", "ch", 2500, runfor)
    return messages / seconds


def scenario_together(nsqd, runfor):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        # Subscribe first so the channel exists before the first message.
        reader = pool.apply_async(_reader_then_rate, (nsqd.tcp_address, runfor + 1))
        time.sleep(0.5)
        writer = pool.apply_async(_writer_then_rate, (nsqd.tcp_address, runfor))
        return writer.get(), reader.get()


def scenario_single_pub(nsqd, runfor, busy_poll):
    messages, seconds = in_process(run_writer, nsqd.tcp_address, "bench_d", SIZE, 1, runfor,
                                   None, 1, busy_poll)
    return messages / seconds


def _http_pub_rate(port, runfor):
    """One keep-alive connection, one /pub at a time: a pre-encoded request and just
    enough response parsing to find each response's end (so the client is cheap)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"x" * SIZE
    request = (b"POST /pub?topic=bench_f HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    count = 0
    buf = b""
    deadline = time.monotonic() + runfor
    start = time.monotonic()
    while time.monotonic() < deadline:
        sock.sendall(request)
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end].lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                if len(buf) >= head_end + 4 + length:
                    break
            buf += sock.recv(65536)
        if not buf.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"/pub answered {buf[:40]!r}")
        buf = buf[head_end + 4 + length:]
        count += 1
    sock.close()
    return count / (time.monotonic() - start)


def scenario_http(nsqd, runfor):
    return in_process(_http_pub_rate, nsqd.http_port, runfor)


def _latency_publisher(address, rate, runfor):
    sock = connect(address)
    interval = 1.0 / rate
    start = time.monotonic()
    sent = 0
    ok = struct.pack(">ii", 6, 0) + b"OK"
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
        pending = pending[len(pending) - len(pending) % len(ok):] if pending.count(ok) else pending
        time.sleep(max(0.0, start + sent * interval - time.monotonic()))
    sock.close()
    return sent


def _latency_reader(address, runfor):
    sock = connect(address)
    identify(sock, feature_negotiation=True, output_buffer_timeout=-1)
    sock.sendall(b"SUB bench_g ch\n")
    read_frame(sock)
    sock.sendall(b"RDY 2500\n")
    sock.settimeout(1.0)
    latencies = []
    buf = b""
    deadline = time.monotonic() + runfor
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            continue
        now = time.time()
        buf += data
        pos, fins = 0, []
        while len(buf) - pos >= 8:
            size, kind = struct.unpack_from(">ii", buf, pos)
            if len(buf) - pos < size + 4:
                break
            if kind == 2:
                sent_at = struct.unpack_from(">d", buf, pos + 34)[0]
                latencies.append(now - sent_at)
                fins.append(b"FIN " + buf[pos + 18:pos + 34] + b"\n")
            else:
                fins.append(b"NOP\n")
            pos += size + 4
        buf = buf[pos:]
        if fins:
            sock.sendall(b"".join(fins))
    return latencies


def scenario_latency(nsqd, runfor, rate=10_000):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        reader = pool.apply_async(_latency_reader, (nsqd.tcp_address, runfor + 2))
        time.sleep(0.5)
        pool.apply(_latency_publisher, (nsqd.tcp_address, rate, runfor))
        latencies = sorted(reader.get())
    warm = latencies[len(latencies) // 20:] or latencies  # drop the warm-up tail
    warm.sort()

    def pct(p):
        return warm[min(len(warm) - 1, int(len(warm) * p))] * 1000

    return pct(0.50), pct(0.99), len(latencies)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runfor", type=float, default=10.0)
    parser.add_argument("--only", default="a,b,c,d,e,f,g")
    args = parser.parse_args()
    only = set(args.only.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nsqd = NsqdProcess(f"{tmp}/data")
        idle = rss_bytes(nsqd.worker_pid)
        backlog = 0
        if only & {"a", "b", "e"}:
            rate, backlog = scenario_writer(nsqd, args.runfor)
            rows.append(("(a) writer, default --mem-queue-size", f"{rate:,.0f} msgs/s", "150,000"))
            loaded = rss_bytes(nsqd.worker_pid)
            rows.append(("(e) RSS idle / with backlog",
                         f"{idle / 1e6:.1f} MB / {loaded / 1e6:.1f} MB ({backlog:,} msgs)",
                         "60 MB"))
        if "b" in only and backlog:
            rate = scenario_reader(nsqd, args.runfor, backlog)
            rows.append(("(b) one reader draining the backlog", f"{rate:,.0f} msgs/s", "120,000"))
        if "c" in only:
            w, r = scenario_together(nsqd, args.runfor)
            rows.append(("(c) writer + reader together",
                         f"in {w:,.0f} / out {r:,.0f} msgs/s", "100,000"))
        if "d" in only:
            polling = scenario_single_pub(nsqd, args.runfor, busy_poll=True)
            sleeping = scenario_single_pub(nsqd, args.runfor, busy_poll=False)
            rows.append(("(d) single PUB, wait for each OK",
                         f"{polling:,.0f} msgs/s (client sleeping in recv: {sleeping:,.0f})",
                         "15,000"))
        if "f" in only:
            rows.append(("(f) HTTP /pub, keep-alive client",
                         f"{scenario_http(nsqd, args.runfor):,.0f} req/s", "5,000"))
        if "g" in only:
            p50, p99, count = scenario_latency(nsqd, args.runfor)
            rows.append(("(g) e2e latency at 10,000 msgs/s",
                         f"p50 {p50:.2f} ms / p99 {p99:.2f} ms ({count:,} msgs)", "p99 5 ms"))
        nsqd.stop()
    width = max(len(r[0]) for r in rows)
    print(f"{'scenario':<{width}}  {'measured':<45}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<45}  {target}")


if __name__ == "__main__":
    main()
