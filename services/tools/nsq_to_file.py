"""``nsq_to_file``: archive topics to files, NSQ's "plan z" copy of every stream.

One consumer and one set of files per topic (:mod:`.file_logger`): the ``--topic``s
given, or every topic lookupd knows that matches ``--topic-pattern`` (asked at start
and every ``--topic-refresh``). A message is FINished only once it is on disk. SIGHUP
closes the current files (they move to ``--output-dir``) and starts new ones; SIGINT or
SIGTERM stops reading, syncs and FINs what is held, closes the files and exits 0.
"""

import logging
import re
import signal

import gevent

from greensq.client import NSQError
from greensq.services.shared.cluster_http import ClusterHTTP
from greensq.services.shared.clusterinfo import ClusterInfo, ClusterUnavailable
from greensq.services.shared.daemon_flags import LOG_LEVELS
from greensq.services.shared.goflags import Flag
from greensq.services.shared.logs import NsqFormatter

from . import options, runner
from .archive_files import filename_template
from .client_config import GoNsqConfig, consumer_opt_flag
from .file_logger import TopicArchive

PROGRAM = "nsq_to_file"
log = logging.getLogger("greensq.tools")

FLAGS = [
    options.version_flag(),
    Flag("log-level", "str", "info", "set log verbosity: debug, info, warn, error, or fatal"),
    Flag("log-prefix", "str", "[nsq_to_file] ", "log message prefix"),
    options.channel_flag("nsq_to_file"),
    options.max_in_flight_flag(),
    Flag("output-dir", "str", "/tmp", "directory to write output files to"),
    Flag("work-dir", "str", "", "directory for in-progress files before moving to output-dir"),
    Flag("datetime-format", "str", "%Y-%m-%d_%H",
         "strftime compatible format for <DATETIME> in filename format"),
    Flag("filename-format", "str", "<TOPIC>.<HOST><REV>.<DATETIME>.log",
         "output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced. "
         "<REV> is increased when file already exists)"),
    Flag("host-identifier", "str", "", "value to output in log filename in place of "
         "hostname. <SHORT_HOST> and <HOSTNAME> are valid replacement tokens"),
    Flag("gzip-level", "int", 6, "gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)"),
    Flag("gzip", "bool", False, "gzip output files."),
    Flag("skip-empty-files", "bool", False, "skip writing empty files"),
    Flag("topic-refresh", "duration", 60.0, "how frequently the topic list should be refreshed"),
    Flag("topic-pattern", "str", "", "only log topics matching the following pattern"),
    Flag("rotate-size", "int", 0, "rotate the file when it grows bigger than `rotate-size` bytes"),
    Flag("rotate-interval", "duration", 0.0, "rotate the file every duration"),
    Flag("sync-interval", "duration", 30.0, "sync file to disk every duration"),
    *options.http_timeout_flags(request_timeout=5.0),
    options.nsqd_tcp_addresses_flag(),
    options.lookupd_http_addresses_flag(),
    options.topics_flag(),
    consumer_opt_flag(),
]


def check(opts):
    """NSQ's start-up checks, in NSQ's order and words."""
    if opts.log_level.lower() not in LOG_LEVELS:
        raise options.ToolError("--log-level is invalid")
    if not opts.channel:
        raise options.ToolError("--channel is required")
    options.check_positive(opts, "http-client-connect-timeout", "http-client-request-timeout")
    options.check_sources(opts, period=".")
    if not 1 <= opts.gzip_level <= 9:
        raise options.ToolError(f"invalid --gzip-level value ({opts.gzip_level}), should be 1-9")
    if not opts.topic and not opts.topic_pattern:
        raise options.ToolError("--topic or --topic-pattern required")
    if not opts.topic and not opts.lookupd_http_address:
        raise options.ToolError(
            "--lookupd-http-address must be specified when no --topic specified")
    options.check_positive(opts, "sync-interval", "topic-refresh")
    if not opts.work_dir:
        opts.work_dir = opts.output_dir
    filename_template(opts, "topic")   # a format that cannot work fails now, not per topic
    try:
        return re.compile(opts.topic_pattern)
    except re.error as exc:
        raise options.ToolError(f"invalid --topic-pattern: {exc}") from None


class NsqToFile(runner.Tool):
    """The topic discoverer: one :class:`TopicArchive` per topic."""

    def __init__(self, opts):
        super().__init__()
        self.pattern = check(opts)
        self.opts = opts
        self.config = GoNsqConfig(opts.consumer_opt)
        self.archives = {}
        self.refresher = None
        self.cluster = ClusterInfo(ClusterHTTP(opts.http_client_connect_timeout,
                                               opts.http_client_request_timeout))

    def start(self):
        gevent.signal_handler(signal.SIGHUP, self.reopen)
        self.update_topics(self.opts.topic)
        if not self.opts.topic:
            self.refresher = gevent.spawn(self._refresh_loop)

    def stop(self):
        if self.refresher is not None:
            self.refresher.kill()
        gevent.joinall([gevent.spawn(archive.stop) for archive in self.archives.values()])

    def reopen(self):
        for archive in self.archives.values():
            archive.reopen()

    def update_topics(self, topics):
        for topic in topics:
            if topic in self.archives:
                continue
            if not self.pattern.search(topic):
                log.warning("skipping topic %s (doesn't match pattern %s)", topic,
                            self.opts.topic_pattern)
                continue
            try:
                self.archives[topic] = TopicArchive(PROGRAM, self.opts, topic,
                                                    self.config).start()
            except (NSQError, options.ToolError) as exc:
                log.error("couldn't create logger for new topic %s: %s", topic, exc)

    def lookupd_topics(self):
        """Every topic the lookupds know, or None (logged) if any of them failed, as NSQ
        skips a refresh then."""
        try:
            topics, failures = self.cluster.lookupd_topics(self.opts.lookupd_http_address)
            if failures:
                raise ClusterUnavailable(str(failures))
        except ClusterUnavailable as exc:
            log.error("could not retrieve topic list: %s", exc)
            return None
        return topics or []

    def _refresh_loop(self):
        while True:
            topics = self.lookupd_topics()
            if topics is not None:
                self.update_topics(topics)
            gevent.sleep(self.opts.topic_refresh)


def main(argv=None):
    opts = options.parse(PROGRAM, FLAGS, argv)
    runner.run(lambda: NsqToFile(opts), formatter=NsqFormatter(opts.log_prefix),
               log_level=opts.log_level.lower())


if __name__ == "__main__":
    main()
