"""A steady publisher and a consumer through nsqlookupd, for the rolling-restart test.

Run with one JSON argument: ``nsqd`` (TCP addresses, the publisher fails over along
them), ``lookupd`` (HTTP addresses, for the consumer), ``topic``, ``channel`` and
``interval`` (seconds between publishes). Every body is unique. While running it prints
``{"acked": N, "received": M}`` once a second; on a line ``stop`` on stdin it stops
publishing, waits up to ``drain_timeout`` seconds for every acknowledged body to arrive,
and prints the final report: counts, the acknowledged bodies that never arrived, and
how many publishes failed (those were never acknowledged, so may be lost).
"""

import json
import sys

import gevent
import gevent.event
from gevent.fileobject import FileObjectThread

from greensq.client import Consumer, Producer
from greensq.client.errors import NSQError


def main(config):
    acked, received = set(), set()
    outstanding = set()              # acknowledged, not received yet
    published = gevent.event.Event()   # the publisher has stopped: ``acked`` is final
    drained = gevent.event.Event()     # set once published and nothing is outstanding
    failed = 0
    deliveries = 0
    stopping = gevent.event.Event()

    def publish_forever():
        nonlocal failed
        producer = Producer(config["nsqd"], timeout=5.0)
        sequence = 0
        while not stopping.is_set():
            sequence += 1
            body = f"msg-{sequence}"
            try:
                producer.publish(config["topic"], body.encode())
                acked.add(body)
                if body not in received:
                    outstanding.add(body)
            except (NSQError, OSError, gevent.Timeout):
                failed += 1
            stopping.wait(config["interval"])
        producer.close()

    def handler(message):
        nonlocal deliveries
        deliveries += 1
        body = message.body.decode()
        received.add(body)
        outstanding.discard(body)
        if published.is_set() and not outstanding:
            drained.set()

    def progress():
        return {"acked": len(acked), "received": len(received)}

    consumer = Consumer(config["topic"], config["channel"], handler,
                        lookupd_http_addresses=config["lookupd"], max_in_flight=50,
                        lookupd_poll_interval=1.0, lookupd_poll_jitter=0.1)
    consumer.start()
    publisher = gevent.spawn(publish_forever)
    reporter = gevent.spawn(report_every_second, stopping, progress)
    wait_for_stop()
    stopping.set()
    publisher.join()
    published.set()
    reporter.join()
    if not outstanding:
        drained.set()
    drained.wait(config["drain_timeout"])
    consumer.close()
    write_line({**progress(), "missing": sorted(outstanding), "failed_publishes": failed,
                "deliveries": deliveries, "done": True})


def write_line(document):
    """One JSON line on stdout, flushed: the test reads them as they come."""
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def report_every_second(stopping, progress):
    """``progress()`` as a line each second until ``stopping`` is set."""
    while not stopping.wait(1.0):
        write_line(progress())


def wait_for_stop():
    """Block this greenlet until a line ``stop`` on stdin, or its end."""
    stdin = FileObjectThread(sys.stdin)
    while stdin.readline().strip() not in ("stop", ""):
        pass


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
