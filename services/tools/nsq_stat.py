"""``nsq_stat``: a periodic table of one channel's numbers, summed over its nsqd.

Every ``--interval`` the channel's ``/stats`` are read from every nsqd that has the
topic (among the ``--nsqd-http-address`` given, or the producers ``--lookupd-http-address``
reports for it), through the cluster queries nsqadmin uses
(:mod:`greensq.services.shared.clusterinfo`, Go's clusterinfo), and one row is printed, in the
columns and layout of NSQ's nsq_stat::

    -----rate------+----------------depth----------------+--------------metadata---------------
    ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients
         50      48 |      12      12       0     3     0 |       0       0         1234       2

The rates are the change since the previous poll divided by the interval; the first
poll only sets the baseline. The header is repeated every ``--status-every`` rows (25,
NSQ's fixed number). ``--count`` stops after that many rows (exit 0); any failure to
read the numbers is fatal (exit 1), as in NSQ.
"""

import gevent

from greensq.services.shared.cluster_http import ClusterHTTP
from greensq.services.shared.clusterinfo import ClusterInfo, ClusterUnavailable
from greensq.services.shared.goflags import Flag

from . import options, runner

PROGRAM = "nsq_stat"

FLAGS = [
    Flag("version", "bool", False, "print version"),
    Flag("topic", "str", "", "NSQ topic"),
    Flag("channel", "str", "", "NSQ channel"),
    Flag("interval", "duration", 2.0, "duration of time between polling/printing output"),
    *options.http_timeout_flags(request_timeout=5.0),
    Flag("count", "int", None, "number of reports", go_type="value"),   # NSQ: a Value of its own
    Flag("status-every", "int", 25, "the # of rows between header repetitions"),
    Flag("nsqd-http-address", "strlist", [], "nsqd HTTP address (may be given multiple times)"),
    options.lookupd_http_addresses_flag(),
]

HEADER = ("%s+%s+%s\n" % ("------rate------", "----------------depth----------------",
                          "--------------metadata---------------")
          + "%7s %7s | %7s %7s %7s %5s %5s | %7s %7s %12s %7s\n" % (
              "ingress", "egress", "total", "mem", "disk", "inflt", "def", "req", "t-o",
              "msgs", "clients"))
ROW = "%7d %7d | %7d %7d %7d %5d %5d | %7d %7d %12d %7d\n"


def check(opts):
    """NSQ's start-up checks, in NSQ's order and words."""
    if not opts.topic or not opts.channel:
        raise options.ToolError("--topic and --channel are required")
    options.check_positive(opts, "interval", "http-client-connect-timeout",
                           "http-client-request-timeout")
    if opts.count is not None and opts.count <= 0:
        raise options.ToolError("--count should be positive")
    if not opts.nsqd_http_address and not opts.lookupd_http_address:
        raise options.ToolError("--nsqd-http-address or --lookupd-http-address required")
    if opts.nsqd_http_address and opts.lookupd_http_address:
        raise options.ToolError("use --nsqd-http-address or --lookupd-http-address not both")
    for flag in ("nsqd-http-address", "lookupd-http-address"):
        if any(a.startswith("http") for a in getattr(opts, flag.replace("-", "_"))):
            raise options.ToolError(f"--{flag} error - address should not contain scheme")


def _answer(what, query):
    """The result of a ``(result, failures)`` cluster query; a failure is fatal."""
    try:
        result, failures = query()
    except ClusterUnavailable as exc:
        failures = exc
    if failures:
        runner.fatal(f"ERROR: failed to get {what} - {failures}")
    return result


class NsqStat(runner.Tool):
    def __init__(self, opts):
        super().__init__()
        check(opts)
        self.opts = opts
        self.cluster = ClusterInfo(ClusterHTTP(opts.http_client_connect_timeout,
                                               opts.http_client_request_timeout))
        self.loop = None

    def start(self):
        self.loop = gevent.spawn(self._report_loop)

    def stop(self):
        self.loop.kill()

    def channel_totals(self):
        """The channel's numbers summed over the nsqd that have the topic (any node that
        does not answer is fatal, as in NSQ)."""
        opts, cluster = self.opts, self.cluster
        producers = _answer("topic producers", lambda: cluster.topic_producers(
            opts.topic, opts.lookupd_http_address, opts.nsqd_http_address))
        stats = _answer("nsqd stats", lambda: (
            (s := cluster.stats(producers, opts.topic, opts.channel, include_clients=False)),
            s.failures))
        channel = stats.channels.get(opts.channel)
        if channel is None:
            runner.fatal(f"ERROR: failed to find channel({opts.channel}) in stats metadata "
                         f"for topic({opts.topic})")
        return channel

    def _report_loop(self):
        """Poll 0 sets the baseline; poll i prints row i, after the header when i is a
        multiple of --status-every (poll 0 included)."""
        interval, every, count = self.opts.interval, max(1, self.opts.status_every), \
            self.opts.count
        previous, poll = None, 0
        while True:
            current = self.channel_totals()
            out = [HEADER] if poll % every == 0 else []
            if previous is not None:
                out.append(self.row(previous, current, interval))
            runner.write_stdout("".join(out).encode())
            if count is not None and poll >= count:
                break
            previous, poll = current, poll + 1
            gevent.sleep(interval)
        self.finished.set()

    @staticmethod
    def row(previous, current, interval):
        messages = current["message_count"] - previous["message_count"]
        drained = messages - (current["depth"] - previous["depth"])
        return ROW % (int(messages / interval), int(drained / interval), current["depth"],
                      current["memory_depth"], current["backend_depth"],
                      current["in_flight_count"], current["deferred_count"],
                      current["requeue_count"], current["timeout_count"],
                      current["message_count"], current["client_count"])


def main(argv=None):
    opts = options.parse(PROGRAM, FLAGS, argv)
    runner.run(lambda: NsqStat(opts))


if __name__ == "__main__":
    main()
