"""``to_nsq``: publish stdin to a topic, one message per line (or per ``--delimiter``).

As NSQ's to_nsq: every record goes to every ``--nsqd-tcp-address``; empty records are
skipped; ``--rate`` caps the records published per second (with up to a second's worth
saved up, as NSQ does); a publish error is fatal (exit 1); the end of stdin, SIGINT or
SIGTERM ends the run once everything read has been answered (exit 0).

Publishes are pipelined (many unanswered at once, in order) rather than one round trip
each. The last record, when stdin does not end with the delimiter, is published too
without a trailing newline (Go's to_nsq cuts its last byte instead, so ``printf 'a\\nb'``
loses the ``b`` there). stdin is read in a thread, so a quiet terminal or pipe never
stops the connections' heartbeats; on a terminal, progress is logged every few seconds.
"""

import collections
import logging
import os
import sys
import time

import gevent

from greensq.client import NSQError
from greensq.services.shared.goflags import Flag

from . import options, runner
from .client_config import GoNsqConfig, make_producer, producer_opt_flag

PROGRAM = "to_nsq"
log = logging.getLogger("greensq.tools")

WINDOW = 1000             # unanswered publishes per nsqd
READ_SIZE = 65536
PROGRESS_EVERY = 5.0

FLAGS = [
    options.version_flag(),
    Flag("topic", "str", "", "NSQ topic to publish to"),
    Flag("delimiter", "str", "\n", "character to split input from stdin"),
    options.nsqd_tcp_addresses_flag("destination nsqd TCP address (may be given multiple times)"),
    producer_opt_flag(),
    Flag("rate", "int", 0, "Throttle messages to n/second. 0 to disable"),
]


def records(read, delimiter):
    """The records of a byte stream read with ``read()`` (b"" at its end)."""
    rest = b""
    while True:
        data = read()
        if not data:
            break
        pieces = (rest + data).split(delimiter)
        rest = pieces.pop()
        yield from (piece for piece in pieces if piece)
    if delimiter != b"\n" and rest.endswith(b"\n"):
        rest = rest[:-1]
    if rest:
        yield rest


class RateLimit:
    """At most ``rate`` records a second, starting with one and saving up to ``rate``."""

    def __init__(self, rate):
        self.rate = rate
        self.tokens = 1.0
        self.updated = time.monotonic()

    def wait(self):
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            gevent.sleep((1 - self.tokens) / self.rate)


class ToNsq(runner.Tool):
    def __init__(self, opts):
        super().__init__()
        if not opts.topic:
            raise options.ToolError("--topic required")
        if len(opts.delimiter.encode()) != 1:
            raise options.ToolError("--delimiter must be a single byte")
        if not opts.nsqd_tcp_address:
            raise options.ToolError("--nsqd-tcp-address required")
        self.opts = opts
        config = GoNsqConfig(opts.producer_opt, "producer-opt")
        self.producers = [make_producer(PROGRAM, a, config) for a in opts.nsqd_tcp_address]
        self.rate_limit = RateLimit(opts.rate) if opts.rate >= 1 else None
        self.published = 0
        self.outstanding = collections.deque()
        self.publisher = None

    def start(self):
        if self.rate_limit is not None:
            log.info("Throttling messages rate to max:%d/second", self.opts.rate)
        for producer in self.producers:
            producer.connect()
        self.publisher = gevent.spawn(self._publish_stdin)
        if sys.stderr.isatty():
            gevent.spawn(self._progress_loop)

    def stop(self):
        """Stop reading (a read may be waiting for input: it is abandoned), wait for the
        answers to what was published, disconnect."""
        self.publisher.kill()
        try:
            self._drain(0)
        except NSQError as exc:
            runner.fatal(str(exc))
        for producer in self.producers:
            producer.close()

    def _drain(self, keep):
        """Wait for answers until at most ``keep`` publishes are unanswered."""
        while len(self.outstanding) > keep:
            self.outstanding.popleft().get()

    def _read(self):
        threadpool = gevent.get_hub().threadpool
        return threadpool.apply(os.read, (sys.stdin.fileno(), READ_SIZE))

    def _publish_stdin(self):
        try:
            for record in records(self._read, self.opts.delimiter.encode()):
                if self.rate_limit is not None:
                    self.rate_limit.wait()
                for producer in self.producers:
                    self.outstanding.append(producer.publish_async(self.opts.topic, record))
                self.published += 1
                self._drain(WINDOW * len(self.producers))
            self._drain(0)
        except (NSQError, OSError) as exc:
            runner.fatal(str(exc))
        self.finished.set()

    def _progress_loop(self):
        last, started = 0, time.monotonic()
        while True:
            gevent.sleep(PROGRESS_EVERY)
            count = self.published
            log.info("%d messages published (%d/s, %d/s overall)", count,
                     (count - last) / PROGRESS_EVERY,
                     count / (time.monotonic() - started))
            last = count


def main(argv=None):
    opts = options.parse(PROGRAM, FLAGS, argv)
    runner.run(lambda: ToNsq(opts))


if __name__ == "__main__":
    main()
