"""Consume messages through nsqlookupd, as a client on any host would; print what came.

Run with one JSON argument: ``topic``, ``channel``, ``lookupd`` (HTTP addresses),
``count`` (stop after that many distinct bodies) and ``timeout`` (seconds). Prints the
distinct bodies received, as a JSON list of strings, and exits 0, even when fewer came:
the caller compares. It needs only greensq (the deploy tests pipe it to a host's python).
"""

import json
import sys

import gevent.event

from greensq.client import Consumer


def main(config):
    bodies = set()
    enough = gevent.event.Event()

    def handler(message):
        bodies.add(message.body.decode())
        if len(bodies) >= config["count"]:
            enough.set()

    consumer = Consumer(config["topic"], config["channel"], handler,
                        lookupd_http_addresses=config["lookupd"], max_in_flight=100,
                        lookupd_poll_interval=1.0, lookupd_poll_jitter=0.1)
    consumer.start()
    enough.wait(config["timeout"])
    consumer.close()
    print(json.dumps(sorted(bodies)))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
