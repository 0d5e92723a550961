"""What the platform alone costs, under the loads of ``scenarios.py``: the floors beneath
greensq's per-request and memory figures.

- (i) floor: a gevent server that answers every read with an OK frame, and nothing else
  (no parsing, no topic), under (i)'s load: single PUBs from 32 lock-step publishers.
- (i) with a front: the same server, but each PUB it reads is published to a greensq
  nsqd through greensq's Producer, concurrent ones for a topic coalesced into MPUBs as the
  HTTP workers do, and answered OK once nsqd has: the least a V2 front process beside
  nsqd's core would do (the design's "spread the V2 connection work over workers"). Its
  CPU is the front's and nsqd's together; ``--fronts N`` runs N such processes on one
  port (SO_REUSEPORT).
- (h) / (f) floor: greensq's HTTP server and a Falcon app made by ``create_api`` whose one
  responder reads the body and answers ``OK`` (no topic, no message), under (h)'s and
  (f)'s loads: ``POST /pub`` on 16 keep-alive connections, and on one. Beside it, the
  same server with a plain WSGI function that does the same, to tell the server's share
  from Falcon's.
- (e) floor: memory of a parent and its forked child, idle, as greensq's arbiter and
  worker are: a bare interpreter; then the parent with Gunicorn's arbiter imported and
  the child with gevent patched in and Falcon and httptools imported (the dependencies
  greensq's design asks for, without greensq).

Each line prints the server's rate, its CPU time per request (user + system), and for
memory the PSS and the resident memory with each physical page counted once (as root).
Compare them with ``scenarios.py``'s (i), (h), (f) and (e), and with Go nsqd's there.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from nsqbench import (MIB, cpu_seconds, daemon_cpu_seconds, http_pub_request, http_reply_end,
                      lockstep_load, nsq_reply_end, pub_frame)

from greensq.http.testing import Daemon, free_port, wait_until

OK_FRAME = b"\x00\x00\x00\x06\x00\x00\x00\x00OK"


def serve_reads(listener, on_read):
    """Serve lock-step clients on ``listener`` (an address or a socket): each read goes to
    ``on_read``, and is answered with one OK frame when it returns True."""
    from gevent.server import StreamServer
    from greensq.services.shared.transport import PlainTransport

    def handle(sock, address):
        transport = PlainTransport(sock)
        try:
            while True:
                data = transport.recv_nowait(65536)
                if data is None:
                    data = transport.recv_when_readable(65536)
                if not data:
                    return
                if on_read(data):
                    transport.sendall(OK_FRAME)
        except OSError:
            return

    StreamServer(listener, handle).serve_forever()


def serve_echo(port):
    """Answer every read with one OK frame (a lock-step client sends one PUB a read)."""
    from gevent import monkey

    monkey.patch_all()
    serve_reads(("127.0.0.1", port), lambda data: True)


def serve_front(port, nsqd_address):
    """Answer each PUB (a lock-step client's read holds one whole PUB, after the magic)
    once nsqd has stored it, published through the Coalescer and greensq's Producer."""
    from gevent import monkey

    monkey.patch_all()
    from greensq.client.producer import Producer
    from greensq.http.coalescing import Coalescer
    from greensq.http.idle_spin import IdleSpin

    producer = Producer([nsqd_address])

    def send(topic, bodies):
        if len(bodies) == 1:
            producer.publish(topic, bodies[0])
        else:
            producer.multi_publish(topic, bodies)

    class Limits:
        max_body_size = 5 * MIB

    coalescer = Coalescer(send, Limits())

    def publish(data):
        data = data.removeprefix(b"  V2")
        if not data:
            return False
        line, _, sized_body = data.partition(b"\n")
        coalescer.publish(line.split(b" ")[1].decode(), sized_body[4:])
        return True

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    IdleSpin(50e-6)
    serve_reads(listener, publish)


def serve_http(port, falcon=True):
    """greensq's HTTP server and NSQ-shaped Falcon app (or a WSGI function), with a /pub
    that stores nothing."""
    from gevent import monkey

    monkey.patch_all()
    import socket

    from gevent.pool import Pool
    from greensq.http.nsq_http import create_api, respond_text
    from greensq.http.wsgi_server import ApiServer

    class Pub:
        def on_post(self, req, resp):
            req.stream.read(1 << 20)
            respond_text(resp, "OK")

    def plain_app(environ, start_response):
        environ["wsgi.input"].read(1 << 20)
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                  ("X-NSQ-Content-Type", "nsq; version=1.0")])
        return [b"OK"]

    if falcon:
        app = create_api()
        app.add_route("/pub", Pub())
    else:
        app = plain_app
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    ApiServer(listener, app, spawn=Pool(1000)).serve_forever()


def measure_server(kind, connections, runfor, client_processes, fronts=1):
    """Start a floor server in its own process (``fronts`` of them, and an nsqd, for the
    "front" kind) and load it; (rate, CPU µs per request of them all)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_path:
        nsqd = Daemon(data_path, []).start() if kind == "front" else None
        argv = [sys.executable, __file__, "--serve", kind, str(port)]
        servers = [subprocess.Popen(argv + ([nsqd.tcp_address] if nsqd else []))
                   for _ in range(fronts if nsqd else 1)]
        try:
            for server in servers:
                wait_until(lambda: _accepts(port, server), timeout=30, interval=0.05,
                           message=f"the {kind} floor server")
            return _load(kind, port, servers, nsqd, connections, runfor, client_processes)
        finally:
            for server in servers:
                server.kill()
                server.wait()
            if nsqd is not None:
                nsqd.stop()


def _load(kind, port, servers, nsqd, connections, runfor, client_processes):
    def cpu():
        return (sum(cpu_seconds(server.pid) for server in servers)
                + (daemon_cpu_seconds(nsqd) if nsqd else 0))

    address = f"127.0.0.1:{port}"
    before = cpu()
    if kind in ("echo", "front"):
        replies, seconds, _ = lockstep_load(address, pub_frame("floor", 200), nsq_reply_end,
                                            connections, client_processes, runfor, b"  V2")
    else:
        replies, seconds, _ = lockstep_load(address, http_pub_request(port, "floor", 200),
                                            http_reply_end, connections, client_processes,
                                            runfor)
    return replies / seconds, (cpu() - before) / replies * 1e6


def _accepts(port, server):
    if server.poll() is not None:
        raise RuntimeError(f"the floor server exited with {server.returncode}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def measure_memory(parent_imports, child_setup):
    """PSS of a parent and its forked child (each page once beside it), both idle."""
    code = f"""
import os, sys, time
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from nsqbench import pss_bytes, resident_once_bytes
{parent_imports}
import gc; gc.freeze()
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
{chr(10).join('    ' + line for line in child_setup.splitlines()) or '    pass'}
    os.write(ready_w, b"x")
    time.sleep(3600)
    os._exit(0)
os.read(ready_r, 1)
time.sleep(1.0)
pids = [os.getpid(), child]
once = resident_once_bytes(pids)
print(sum(pss_bytes(pid) for pid in pids), once if once is not None else -1)
os.kill(child, 9)
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    pss, once = int(out[0]), int(out[1])
    return pss / MIB, (once / MIB if once >= 0 else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runfor", type=float, default=6.0, help="seconds per load")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--fronts", type=int, default=1,
                        help="front processes for the (i) floor with a front")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("nsqd_address", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, port = args.serve
        if kind == "echo":
            serve_echo(int(port))
        elif kind == "front":
            serve_front(int(port), args.nsqd_address)
        else:
            serve_http(int(port), falcon=kind == "http")
        return
    for label, kind, connections in (("(i) floor: OK per read, 32 publishers", "echo", 32),
                                     (f"(i) floor with {args.fronts} front(s) publishing to "
                                      "nsqd, 32 publishers", "front", 32),
                                     ("(h) floor: HTTP + Falcon, 16 connections", "http", 16),
                                     ("(h) floor: HTTP, plain WSGI, 16 connections", "wsgi", 16),
                                     ("(f) floor: HTTP + Falcon, 1 connection", "http", 1)):
        rate, cpu_us = measure_server(kind, connections, args.runfor, args.client_processes,
                                      args.fronts)
        print(f"{label}: {rate:,.0f} requests/s, {cpu_us:.1f} µs CPU/request", flush=True)
    for label, parent, child in (
            ("(e) floor: bare interpreter, parent + child", "", ""),
            ("(e) floor: gunicorn arbiter + gevent/Falcon/httptools worker",
             "import gunicorn.arbiter",
             "from gevent import monkey\nmonkey.patch_all()\nimport falcon, httptools")):
        pss, once = measure_memory(parent, child)
        text = f"{label}: PSS {pss:.1f} MiB"
        if once is not None:
            text += f", each page once {once:.1f} MiB"
        print(text, flush=True)


if __name__ == "__main__":
    main()
