"""Drain and publish throughput of Python NSQ clients against the same nsqd:
greensq.client.aio, greensq.client (gevent), ansq, pynsq and gnsq.

    python bench/client_compare.py [--messages=100000] [--size=100] [--loop=uvloop]
        [--clients=aio,ansq,pynsq,gnsq,gevent] [--go-nsqd=PATH]
        [--nsqd-tcp-address=H:P --nsqd-http-address=H:P]

* drain: the topic is filled with ``--messages`` messages (MPUBs from a raw socket
  writer), then the client consumes them all with max_in_flight ``--max-in-flight`` and a
  handler that only counts (each message FINed);
* publish: the client publishes ``--messages`` single PUBs, at most ``--window`` of them
  unanswered at once (its pipelined call where it has one, else that many concurrent
  publishers), and all are answered.

Each client runs alone, in its own process (gnsq monkey-patches, pynsq runs tornado's
loop), against one nsqd: greensq's, started here, Go's (``--go-nsqd``), or one running.
``--loop`` is the event loop of the asyncio clients (aio, ansq): uvloop where installed.
The goal for greensq.client.aio: 100,000 msgs/s or more draining, 3x ansq or more.
ansq and uvloop are the ``bench`` extra: ``pip install -e '.[test,bench]'``.
"""

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nsqbench import run_writer  # noqa: E402

from greensq.http.testing import Daemon  # noqa: E402

CLIENTS = ("aio", "ansq", "pynsq", "gnsq", "gevent")


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the clients, each run in a process of its own -----------------------------------------
# run_<client>(mode, cfg) returns once ``cfg["messages"]`` messages were drained or published.

def asyncio_run(main, loop):
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main)
    import asyncio
    return asyncio.run(main)


def run_aio(mode, cfg):
    import asyncio

    from greensq.client import aio

    count = cfg["messages"]

    async def drain():
        done = asyncio.Event()
        seen = 0

        async def handler(message):
            nonlocal seen
            seen += 1
            if seen == count:
                done.set()

        consumer = aio.Consumer(cfg["topic"], "bench", handler,
                                nsqd_tcp_addresses=[cfg["tcp"]],
                                max_in_flight=cfg["max_in_flight"])
        await consumer.start()
        await done.wait()
        await consumer.close()

    async def publish():
        body = b"x" * cfg["size"]
        async with aio.Producer([cfg["tcp"]]) as producer:
            await producer.connect()
            window = []
            for _ in range(count):
                window.append(producer.publish_async(cfg["topic"], body))
                if len(window) >= cfg["window"]:
                    await window[-cfg["window"] // 2]    # answers come in order
                    window = [f for f in window if not f.done()]
            await asyncio.gather(*window)

    asyncio_run(drain() if mode == "drain" else publish(), cfg["loop"])


def run_ansq(mode, cfg):
    import asyncio

    from ansq import create_reader, create_writer

    count = cfg["messages"]

    async def drain():
        reader = await create_reader(topic=cfg["topic"], channel="bench",
                                     nsqd_tcp_addresses=[cfg["tcp"]])
        for conn in reader.connections:    # ansq's own RDY is 1 per connection
            await conn.rdy(cfg["max_in_flight"])
        seen = 0
        async for message in reader.messages():
            await message.fin()
            seen += 1
            if seen == count:
                break
        await reader.close()

    async def publish():
        body = b"x" * cfg["size"]
        writer = await create_writer(nsqd_tcp_addresses=[cfg["tcp"]])
        share, extra = divmod(count, cfg["window"])

        async def publisher(n):
            for _ in range(n):
                await writer.pub(cfg["topic"], body)

        await asyncio.gather(*[publisher(share + (i < extra)) for i in range(cfg["window"])])
        await writer.close()

    asyncio_run(drain() if mode == "drain" else publish(), cfg["loop"])


def run_pynsq(mode, cfg):
    import nsq
    import tornado.ioloop

    loop = tornado.ioloop.IOLoop.current()
    count = cfg["messages"]
    seen = [0]

    if mode == "drain":
        def handler(message):
            seen[0] += 1
            if seen[0] == count:
                loop.add_callback(loop.stop)
            return True

        nsq.Reader(topic=cfg["topic"], channel="bench", message_handler=handler,
                   nsqd_tcp_addresses=[cfg["tcp"]], max_in_flight=cfg["max_in_flight"])
    else:
        body = b"x" * cfg["size"]
        writer = nsq.Writer([cfg["tcp"]])
        sent = [0]

        def send_one():
            sent[0] += 1
            writer.pub(cfg["topic"], body, callback=on_answer)

        def on_answer(conn, data):
            seen[0] += 1
            if seen[0] == count:
                loop.stop()
            elif sent[0] < count:
                send_one()

        def start():
            if not any(conn.connected() for conn in writer.conns.values()):
                loop.call_later(0.005, start)
                return
            for _ in range(min(cfg["window"], count)):
                send_one()

        loop.add_callback(start)
    loop.start()


def run_gnsq(mode, cfg):
    import gevent
    import gevent.event
    import gnsq

    count = cfg["messages"]
    if mode == "drain":
        done = gevent.event.Event()
        seen = [0]

        def handler(consumer, message):
            seen[0] += 1
            if seen[0] == count:
                done.set()

        consumer = gnsq.Consumer(cfg["topic"], "bench", [cfg["tcp"]],
                                 message_handler=handler,
                                 max_in_flight=cfg["max_in_flight"])
        consumer.start(block=False)
        done.wait()
        consumer.close()
    else:
        body = b"x" * cfg["size"]
        producer = gnsq.Producer([cfg["tcp"]])
        producer.start()
        share, extra = divmod(count, cfg["window"])

        def publisher(n):
            for _ in range(n):
                producer.publish(cfg["topic"], body)

        gevent.joinall([gevent.spawn(publisher, share + (i < extra))
                        for i in range(cfg["window"])])
        producer.close()


def run_gevent(mode, cfg):
    import client_bench

    from greensq.client import Producer

    if mode == "drain":
        client_bench.drain(cfg["tcp"], cfg["topic"], cfg["messages"], cfg["max_in_flight"])
        return
    body = b"x" * cfg["size"]
    producer = Producer([cfg["tcp"]])
    producer.connect()
    window = []
    for _ in range(cfg["messages"]):      # the same window as the asyncio client's
        window.append(producer.publish_async(cfg["topic"], body))
        if len(window) >= cfg["window"]:
            window[-cfg["window"] // 2].get()    # answers come in order
            window = [r for r in window if not r.ready()]
    for result in window:
        result.get()
    producer.close()


# What each client imports, imported before the clock starts.
LIBRARIES = {"aio": "greensq.client.aio", "ansq": "ansq", "pynsq": "nsq", "gnsq": "gnsq",
             "gevent": "client_bench"}


def child(client, mode, cfg):
    """Run one client once; print its wall and CPU seconds as JSON."""
    if client == "gnsq":
        from gevent import monkey
        monkey.patch_all()    # as gnsq's programs do, before anything else is imported
    importlib.import_module(LIBRARIES[client])
    runner = globals()[f"run_{client}"]
    start, cpu = time.perf_counter(), cpu_seconds()
    runner(mode, cfg)
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "cpu": cpu_seconds() - cpu}), flush=True)


# -- the parent: one nsqd, each client in turn ---------------------------------------------

def http(address, method, path):
    request = urllib.request.Request(f"http://{address}{path}", method=method, data=b"")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read()


def topic_stats(http_address, topic):
    stats = json.loads(http(http_address, "GET", f"/stats?format=json&topic={topic}"))
    for entry in stats["topics"]:
        if entry["topic_name"] == topic:
            return entry
    return None


def measure(client, mode, cfg, http_address):
    """msgs/s of one run of ``client`` (and its CPU seconds), checked against nsqd."""
    topic = cfg["topic"] = f"compare_{client}_{mode}_{time.monotonic_ns()}"
    http(http_address, "POST", f"/topic/create?topic={topic}")
    if mode == "drain":
        http(http_address, "POST", f"/channel/create?topic={topic}&channel=bench")
        sent, _ = run_writer(cfg["tcp"], topic, cfg["size"], batch=100, runfor=600,
                             count=cfg["messages"])
        assert sent == cfg["messages"], sent
    proc = subprocess.run([sys.executable, __file__, "--child", client, mode, json.dumps(cfg)],
                          capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{client} {mode} failed:\n{proc.stderr.decode()[-3000:]}")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    entry = topic_stats(http_address, topic)
    if mode == "publish":
        assert entry["message_count"] == cfg["messages"], (client, entry["message_count"])
    http(http_address, "POST", f"/topic/delete?topic={topic}")
    return cfg["messages"] / result["seconds"], result["cpu"]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=2500)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=None,
                        help="the asyncio clients' loop (default: uvloop if installed)")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--modes", default="drain,publish")
    parser.add_argument("--go-nsqd", metavar="PATH", help="start this nsqd binary (Go's)")
    parser.add_argument("--nsqd-tcp-address", help="an nsqd already running (else one is started)")
    parser.add_argument("--nsqd-http-address")
    args = parser.parse_args()
    loop = args.loop
    if loop is None:
        try:
            import uvloop  # noqa: F401
            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
    cfg = {"messages": args.messages, "size": args.size, "loop": loop,
           "max_in_flight": args.max_in_flight, "window": args.window}
    with tempfile.TemporaryDirectory() as data:
        nsqd = None
        if args.nsqd_tcp_address:
            cfg["tcp"], http_address = args.nsqd_tcp_address, args.nsqd_http_address
        else:
            nsqd = Daemon(data, [f"--mem-queue-size={args.messages * 2}"],
                          binary=args.go_nsqd).start()
            cfg["tcp"], http_address = nsqd.tcp_address, f"127.0.0.1:{nsqd.http_port}"
        try:
            rates = {}
            for mode in args.modes.split(","):
                for client in args.clients.split(","):
                    rate, cpu = measure(client, mode, dict(cfg), http_address)
                    rates[mode, client] = rate
                    print(f"{mode:8} {client:7} {rate:10,.0f} msgs/s   client CPU {cpu:.2f}s "
                          f"({args.messages / cpu:,.0f} msgs per CPU-second)", flush=True)
        finally:
            if nsqd is not None:
                nsqd.stop()
    for mode in args.modes.split(","):
        if (mode, "aio") in rates and (mode, "ansq") in rates:
            print(f"{mode}: greensq.client.aio is {rates[mode, 'aio'] / rates[mode, 'ansq']:.1f}x "
                  f"ansq (asyncio clients on {loop})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        main()
