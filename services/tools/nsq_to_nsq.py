"""``nsq_to_nsq``: relay topics to other nsqd, optionally filtering JSON messages.

As NSQ's nsq_to_nsq: every ``--topic`` is consumed on ``--channel`` and each message
is published (PUB, pipelined) to one ``--destination-nsqd-tcp-address`` chosen by
``--mode`` (``hostpool``, ``round-robin``, ``epsilon-greedy``; any other value means
round-robin, as in Go), on ``--destination-topic`` or the topic it came from. A message
is FINished only once the destination answered OK; an error or a lost connection
requeues it with backoff. ``--status-every`` logs publish timing summaries; the JSON
filters are described in :mod:`.json_filter`.
"""

import functools
import logging
import time

from greensq.client import NSQError
from greensq.services.shared.goflags import Flag
from greensq.services.shared.names import is_valid_name

from . import options, runner
from .client_config import (
    GoNsqConfig, consumer_opt_flag, make_consumer, make_producer, producer_opt_flag)
from .destinations import Destinations
from .json_filter import BACKOFF, PASS, JsonFilter, decode_object
from .timer_metrics import TimerMetrics

PROGRAM = "nsq_to_nsq"
log = logging.getLogger("greensq.tools")

FLAGS = [
    options.version_flag(),
    options.channel_flag("nsq_to_nsq"),
    Flag("destination-topic", "str", "", "use this destination topic for all consumed topics "
         "(default is consumed topic name)"),
    options.max_in_flight_flag(),
    Flag("status-every", "int", 250, "the # of requests between logging status (per "
         "destination), 0 disables"),
    Flag("mode", "str", "hostpool", "the upstream request mode options: round-robin, "
         "hostpool (default), epsilon-greedy"),
    options.nsqd_tcp_addresses_flag(),
    Flag("destination-nsqd-tcp-address", "strlist", [],
         "destination nsqd TCP address (may be given multiple times)"),
    options.lookupd_http_addresses_flag(),
    options.topics_flag(),
    Flag("whitelist-json-field", "strlist", [],
         "for JSON messages: pass this field (may be given multiple times)"),
    Flag("require-json-field", "str", "",
         "for JSON messages: only pass messages that contain this field"),
    Flag("require-json-value", "str", "", "for JSON messages: only pass messages in which "
         "the required field has this value"),
    consumer_opt_flag(),
    producer_opt_flag(),
]


def check(opts):
    """NSQ's start-up checks, in NSQ's order and words."""
    if not opts.topic or not opts.channel:
        raise options.ToolError("--topic and --channel are required")
    if not all(is_valid_name(topic) for topic in opts.topic):
        raise options.ToolError("--topic is invalid")
    if opts.destination_topic and not is_valid_name(opts.destination_topic):
        raise options.ToolError("--destination-topic is invalid")
    if not is_valid_name(opts.channel):
        raise options.ToolError("--channel is invalid")
    options.check_sources(opts)
    if not opts.destination_nsqd_tcp_address:
        raise options.ToolError("--destination-nsqd-tcp-address required")


class NsqToNsq(runner.Tool):
    def __init__(self, opts):
        super().__init__()
        check(opts)
        self.opts = opts
        addresses = opts.destination_nsqd_tcp_address
        producer_config = GoNsqConfig(opts.producer_opt, "producer-opt")
        self.producers = {a: make_producer(PROGRAM, a, producer_config) for a in addresses}
        mode = opts.mode if opts.mode in ("hostpool", "epsilon-greedy") else "round-robin"
        self.destinations = Destinations(addresses, mode)
        every = opts.status_every if len(addresses) > 1 else 0
        self.address_metrics = {a: TimerMetrics(every, f"[{a}]:") for a in addresses}
        self.metrics = TimerMetrics(opts.status_every, "[aggregate]:")
        self.filter = JsonFilter(opts.require_json_field, opts.require_json_value,
                                 opts.whitelist_json_field)
        consumer_config = GoNsqConfig(opts.consumer_opt)
        self.consumers = [
            make_consumer(PROGRAM, opts, topic,
                          functools.partial(self.handle, opts.destination_topic or topic),
                          consumer_config)
            for topic in opts.topic]

    def start(self):
        for consumer in self.consumers:
            consumer.start()

    def stop(self):
        for consumer in self.consumers:
            consumer.close()
        for producer in self.producers.values():
            producer.close()

    def handle(self, destination_topic, message):
        body = message.body
        if self.filter.active:
            obj = decode_object(body)
            if obj is None:
                log.error("ERROR: Unable to decode json: %s", body.decode("utf-8", "replace"))
                return
            verdict = self.filter.verdict(obj)
            if verdict == BACKOFF:
                log.error("ERROR: missing field to check required value")
                message.requeue()
                return
            if verdict != PASS:
                return
            body = self.filter.rewrite(obj, body)
        address = self.destinations.pick()
        started = time.monotonic()
        try:
            answer = self.producers[address].publish_async(destination_topic, body)
        except NSQError as exc:
            self._published(message, address, started, exc)
            return
        message.enable_async()
        answer.rawlink(lambda result: self._published(message, address, started,
                                                      result.exception))

    def _published(self, message, address, started, error):
        """The destination's answer to one relayed message: FIN, or REQ with backoff."""
        self.destinations.mark(address, ok=error is None, seconds=time.monotonic() - started)
        if error is None:
            message.finish()
        else:
            log.error("%s: publish failed: %s", address, error)
            message.requeue()
        self.address_metrics[address].status(started)
        self.metrics.status(started)


def main(argv=None):
    opts = options.parse(PROGRAM, FLAGS, argv)
    runner.run(lambda: NsqToNsq(opts))


if __name__ == "__main__":
    main()
