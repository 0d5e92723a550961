"""Publishers and consumers for the replication tests on lab hosts (tests/replication_lab.py).

Run with one JSON argument: ``hosts`` (name -> address: each nsqd's TCP port is 4150,
HTTP 4151), ``lookupd`` (HTTP addresses), ``topic``, ``channel``, ``interval`` (seconds
between one publisher's publishes) and ``drain_timeout``. For each host it runs three
publishers of its own, one per way to publish: TCP PUB, TCP MPUB (``batch`` bodies) and
HTTP ``/pub``, each only to that host (no failover: a publish to a dead host fails, and
was never acknowledged). Every body is unique, ``<host>-<way>-<n>``. A consumer finds
the nsqds through nsqlookupd and records every delivery: the body, when, and from which
nsqd.

It prints ``{"acked": N, "received": M, "failed": F}`` once a second. On a line ``stop`` on
stdin it stops publishing, waits up to ``drain_timeout`` seconds for every acknowledged
body, and prints the report as the last line: ``acked`` (body -> time acknowledged),
``deliveries`` ([body, time, nsqd address] in order), ``failed`` (publishes refused or
unanswered, by host).
"""

import json
import sys
import time

import gevent
import gevent.event
from gevent.fileobject import FileObjectThread

from greensq.client import Consumer, Producer
from greensq.client.errors import NSQError
from greensq.client.http import NsqdHTTPClient


def main(config):
    acked = {}
    received = set()
    deliveries = []
    failed = {name: 0 for name in config["hosts"]}
    stopping = gevent.event.Event()
    drained = gevent.event.Event()
    interval = config["interval"]
    batch = config.get("batch", 5)

    def publisher(name, address, way):
        producer = None
        http = NsqdHTTPClient(f"{address}:4151", timeout=5.0)
        sequence = 0
        while not stopping.is_set():
            count = batch if way == "mpub" else 1
            bodies = [f"{name}-{way}-{sequence + i}" for i in range(count)]
            sequence += count
            try:
                if way == "http":
                    http.pub(config["topic"], bodies[0].encode())
                else:
                    if producer is None:
                        producer = Producer([f"{address}:4150"], timeout=5.0)
                    if way == "pub":
                        producer.publish(config["topic"], bodies[0].encode())
                    else:
                        producer.multi_publish(config["topic"], [b.encode() for b in bodies])
                now = time.time()
                for body in bodies:
                    acked[body] = now
            except (NSQError, OSError, gevent.Timeout):
                failed[name] += 1
                if producer is not None:
                    producer.close()
                    producer = None
            stopping.wait(interval)
        if producer is not None:
            producer.close()

    def handler(message):
        body = message.body.decode()
        deliveries.append((body, time.time(), message.nsqd_address))
        received.add(body)
        if stopping.is_set() and received.issuperset(acked):
            drained.set()

    def report(**extra):
        line = {"acked": len(acked), "received": len(received),
                "failed": sum(failed.values()), **extra}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def report_forever():
        while not stopping.wait(1.0):
            report()

    consumer = Consumer(config["topic"], config["channel"], handler,
                        lookupd_http_addresses=config["lookupd"], max_in_flight=200,
                        lookupd_poll_interval=1.0, lookupd_poll_jitter=0.1)
    consumer.start()
    workers = [gevent.spawn(publisher, name, address, way)
               for name, address in config["hosts"].items() for way in ("pub", "mpub", "http")]
    reporter = gevent.spawn(report_forever)
    stdin = FileObjectThread(sys.stdin)
    while stdin.readline().strip() not in ("stop", ""):
        pass
    stopping.set()
    gevent.joinall(workers)
    reporter.join()
    if received.issuperset(acked):
        drained.set()
    drained.wait(config["drain_timeout"])
    consumer.close(timeout=1.0)     # a connection to a dead host would hold it 10 s
    report(done=True, acked_at=acked, deliveries=deliveries, failed_by_host=failed)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
