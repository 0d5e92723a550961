"""``nsq_tail``: print the messages of one or more topics to stdout, one per line.

As NSQ's nsq_tail: by default it reads on a new ephemeral channel
(``tailNNNNNN#ephemeral``), so it takes a copy of the stream without disturbing anyone;
``--print-topic`` prefixes each line with ``topic | ``; ``-n`` stops after that many
messages in all. Messages that arrive after the last one wanted are requeued, not
dropped (Go's nsq_tail exits without answering them).
"""

import logging
import random

from greensq.services.shared.goflags import Flag

from . import options, runner
from .client_config import GoNsqConfig, consumer_opt_flag, make_consumer

PROGRAM = "nsq_tail"
log = logging.getLogger("greensq.tools")

FLAGS = [
    options.version_flag(),
    options.channel_flag("", "NSQ channel"),
    options.max_in_flight_flag(),
    Flag("n", "int", 0, "total messages to show (will wait if starved)"),
    Flag("count", "int", 0, "total messages to show (same as -n)", alias_of="n"),
    Flag("print-topic", "bool", False, "print topic name where message was received"),
    options.topics_flag("NSQ topic (may be given multiple times)"),
    options.nsqd_tcp_addresses_flag(),
    options.lookupd_http_addresses_flag(),
    consumer_opt_flag(),
]


class NsqTail(runner.Tool):
    def __init__(self, opts):
        super().__init__()
        options.check_sources(opts)
        if not opts.topic:
            raise options.ToolError("--topic required")
        if not opts.channel:
            opts.channel = "tail%06d#ephemeral" % random.randrange(999999)
        if 0 < opts.n < opts.max_in_flight:
            opts.max_in_flight = opts.n   # do not ask for more than we will show
        self.opts = opts
        self.shown = 0
        config = GoNsqConfig(opts.consumer_opt)
        self.consumers = [make_consumer(PROGRAM, opts, topic, self._handler(topic), config)
                          for topic in opts.topic]

    def _handler(self, topic):
        prefix = f"{topic} | ".encode() if self.opts.print_topic else b""

        def show(message):
            wanted = self.opts.n
            if wanted and self.shown >= wanted:
                message.requeue(delay=0, backoff=False)
                return
            self.shown += 1
            runner.write_stdout(prefix + message.body + b"\n")
            if wanted and self.shown >= wanted:
                self.finished.set()

        return show

    def start(self):
        for consumer in self.consumers:
            log.info("Adding consumer for topic: %s", consumer.topic)
            consumer.start()

    def stop(self):
        for consumer in self.consumers:
            consumer.close()


def main(argv=None):
    opts = options.parse(PROGRAM, FLAGS, argv)
    runner.run(lambda: NsqTail(opts))


if __name__ == "__main__":
    main()
