"""Throughput of greensq.client against a local greensq nsqd (started here).

    python bench/client_bench.py [--messages=200000] [--size=100]

1. consumer: a Consumer with a no-op handler drains a pre-filled backlog from one nsqd
   (target: 50,000 msgs/s or more);
2. producer: a Producer publishes single messages (PUB), pipelined, up to ``--window``
   unanswered at once (target: 30,000 msgs/s or more).

The client runs in this process on gevent (no monkey-patching); nsqd runs in its own.
"""

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from nsqbench import report  # noqa: E402

from greensq.client import Consumer, NsqdHTTPClient, Producer  # noqa: E402
from greensq.http.testing import Daemon  # noqa: E402


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_cpu(count, cpu):
    """The client's own cost, to tell a slow client from a slow nsqd."""
    print(f"    client CPU {cpu:.2f}s: {count / cpu:,.0f} msgs per client CPU-second",
          flush=True)


def prefill(address, topic, count, size, batch=1000):
    body = b"x" * size
    producer = Producer([address])
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        producer.multi_publish(topic, [body] * n)
        sent += n
    producer.close()


def drain(address, topic, count, max_in_flight):
    """Consume ``count`` messages of ``topic``'s channel "bench" with a no-op handler."""
    done = Event()
    seen = [0]

    def handler(message):
        seen[0] += 1
        if seen[0] == count:
            done.set()

    consumer = Consumer(topic, "bench", handler, nsqd_tcp_addresses=[address],
                        max_in_flight=max_in_flight).start()
    if not done.wait(120):
        raise SystemExit(f"consumer saw only {seen[0]} of {count} messages")
    consumer.close()


def publish_pipelined(address, topic, count, size, window):
    """PUB ``count`` messages, up to ``window`` unanswered at once; all answered."""
    producer = Producer([address])
    producer.connect()
    body = b"x" * size
    outstanding = []
    for _ in range(count):
        outstanding.append(producer.publish_async(topic, body))
        if len(outstanding) >= window:
            outstanding[0].get()
            # Answers come in order: everything before the newest answered one is done.
            outstanding = [r for r in outstanding if not r.ready()]
    for result in outstanding:
        result.get()
    producer.close()


def bench_consumer(nsqd, topic, count, size, max_in_flight):
    http = NsqdHTTPClient(f"127.0.0.1:{nsqd.http_port}")
    http.create_topic(topic)
    http.create_channel(topic, "bench")
    prefill(nsqd.tcp_address, topic, count, size)
    start, cpu = time.perf_counter(), cpu_seconds()
    drain(nsqd.tcp_address, topic, count, max_in_flight)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rate = report("consumer (no-op handler, drain backlog)", count, seconds, size)
    client_cpu(count, cpu)
    return rate


def bench_producer(nsqd, topic, count, size, window):
    start, cpu = time.perf_counter(), cpu_seconds()
    publish_pipelined(nsqd.tcp_address, topic, count, size, window)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rate = report(f"producer (PUB, pipelined, window {window})", count, seconds, size)
    client_cpu(count, cpu)
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=2500)
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        nsqd = Daemon(data, [f"--mem-queue-size={args.messages * 2}"]).start()
        try:
            consumer_rate = bench_consumer(nsqd, "client_bench_sub", args.messages,
                                           args.size, args.max_in_flight)
            producer_rate = bench_producer(nsqd, "client_bench_pub", args.messages,
                                           args.size, args.window)
        finally:
            nsqd.stop()
    print(f"consumer {consumer_rate:,.0f} msgs/s (target 50,000); "
          f"producer {producer_rate:,.0f} msgs/s (target 30,000)")


if __name__ == "__main__":
    gevent.get_hub()
    main()
