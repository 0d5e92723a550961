"""Throughput of the utilities against a local greensq nsqd (started here).

    python bench/tools_bench.py [--messages=300000] [--http-messages=30000]

1. nsq_to_file: the archive rate of a pre-filled channel of 200-byte messages, plain and
   gzipped, with NSQ's default --max-in-flight (200: an fsync every 200 messages, with
   nothing more coming meanwhile) and with --max-in-flight=2500 (target: 100,000 msgs/s
   or more archived without gzip). --sync-interval=100ms, so that the last messages,
   too few to starve the consumer, wait 0.1 s rather than NSQ's default 30 s;
2. nsq_to_http: requests/s delivered (POST, --n 100, keep-alive) to a local gevent WSGI
   server that answers 200 at once.

Each tool runs as its own process, as it would in production; the rate is counted from
its subscription (seen in /stats) until every message is FINished, and its CPU time is
shown too, since the machine's speed varies.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nsqbench import cpu_seconds, report, run_writer  # noqa: E402

from greensq.http.testing import Daemon, ToolProcess, wait_until  # noqa: E402

SIZE = 200

# TCP_NODELAY on the listener (accepted sockets inherit it): pywsgi writes headers and
# body apart, which Nagle's algorithm and delayed ACKs would turn into 40 ms a request.
HTTP_SERVER = textwrap.dedent("""
    import socket
    from gevent import socket as gevent_socket
    from gevent.pywsgi import WSGIServer

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    listener = gevent_socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    server = WSGIServer(listener, app, log=None)
    server.start()
    print(server.server_port, flush=True)
    server.serve_forever()
""")


def prefill(nsqd, topic, channel_name, count):
    for path in (f"/topic/create?topic={topic}",
                 f"/channel/create?topic={topic}&channel={channel_name}"):
        status, _, body = nsqd.http("POST", path)
        assert status == 200, body
    run_writer(nsqd.tcp_address, topic, SIZE, 200, runfor=3600, count=count)


def drain(nsqd, topic, channel_name, count, name, args, label):
    """Run the utility ``name`` until ``count`` messages of the channel are FINished;
    report."""
    def subscribed():
        ch = nsqd.channel_stats(topic, channel_name)
        return ch and ch["client_count"]

    def finished():
        ch = nsqd.channel_stats(topic, channel_name)
        return not (ch["depth"] or ch["in_flight_count"] or ch["message_count"] < count)

    tool = ToolProcess(name, args).start()
    try:
        wait_until(subscribed, timeout=60, interval=0.01, message=f"{name} to subscribe")
        start, cpu = time.perf_counter(), cpu_seconds(tool.proc.pid)
        nsqd_cpu = cpu_seconds(nsqd.worker_pid)
        wait_until(finished, timeout=3600, interval=0.02, message=f"{name} to drain")
        seconds, cpu = time.perf_counter() - start, cpu_seconds(tool.proc.pid) - cpu
        nsqd_cpu = cpu_seconds(nsqd.worker_pid) - nsqd_cpu
    finally:
        tool.stop(timeout=60)
    rate = report(label, count, seconds, SIZE)
    print(f"    tool CPU {cpu:.2f}s ({count / cpu:,.0f} msgs per tool CPU-second), "
          f"nsqd CPU {nsqd_cpu:.2f}s", flush=True)
    return rate


def bench_nsq_to_file(nsqd, count, tmp):
    rates = {}
    for gzip in (False, True):
        for max_in_flight in (200, 2500):
            topic = f"archive_{int(gzip)}_{max_in_flight}"
            prefill(nsqd, topic, "nsq_to_file", count)
            out = os.path.join(tmp, topic)
            args = [f"--topic={topic}", f"--nsqd-tcp-address={nsqd.tcp_address}",
                    f"--output-dir={out}", f"--max-in-flight={max_in_flight}",
                    "--sync-interval=100ms", "--log-level=warn"] + (["--gzip"] if gzip else [])
            label = (f"nsq_to_file {'gzip' if gzip else 'plain'}, "
                     f"--max-in-flight={max_in_flight}")
            rates[gzip, max_in_flight] = drain(nsqd, topic, "nsq_to_file", count,
                                               "nsq_to_file", args, label)
    return rates


def bench_nsq_to_http(nsqd, count):
    server = subprocess.Popen([sys.executable, "-c", HTTP_SERVER], stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())
        prefill(nsqd, "deliver", "nsq_to_http", count)
        args = ["--topic=deliver", f"--nsqd-tcp-address={nsqd.tcp_address}",
                f"--post=http://127.0.0.1:{port}/", "--status-every=0"]
        return drain(nsqd, "deliver", "nsq_to_http", count, "nsq_to_http", args,
                     "nsq_to_http POST, --n 100")
    finally:
        server.terminate()
        server.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--http-messages", type=int, default=30_000)
    parser.add_argument("--only", choices=("nsq_to_file", "nsq_to_http"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nsqd = Daemon(os.path.join(tmp, "nsqd"), [f"--mem-queue-size={args.messages}"]).start()
        try:
            if args.only != "nsq_to_http":
                files = bench_nsq_to_file(nsqd, args.messages, tmp)
                print(f"nsq_to_file plain {files[False, 2500]:,.0f} msgs/s (target 100,000), "
                      f"gzip {files[True, 2500]:,.0f} msgs/s; with NSQ's default "
                      f"--max-in-flight {files[False, 200]:,.0f} / {files[True, 200]:,.0f}")
            if args.only != "nsq_to_file":
                http = bench_nsq_to_http(nsqd, args.http_messages)
                print(f"nsq_to_http {http:,.0f} requests/s")
        finally:
            nsqd.stop()


if __name__ == "__main__":
    main()
