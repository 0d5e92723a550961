"""The utilities' command lines: NSQ 1.3's shared flags and one way to parse them.

Flags are parsed by :mod:`greensq.services.shared.goflags` (every spelling Go's flag package
accepts). A bad flag prints Go's message and the usage and exits 2 (``--help`` prints the
usage and exits 0), ``--version`` prints e.g.
``nsq_to_file v1.3.0 (built w/greensq-0.1.0)`` and exits 0, and a missing or inconsistent
option is a :class:`ToolError` whose text is the Go tool's ``log.Fatal`` message.
"""

import sys

from greensq.services.shared.goflags import Flag, FlagSet, parse_or_exit
from greensq.services.shared.version import NSQ_VERSION, __version__, version_banner


class ToolError(Exception):
    """A command line the tool cannot run with; the message is NSQ's ``log.Fatal`` text.
    The tool logs it and exits 1."""


def version_flag():
    return Flag("version", "bool", False, "print version string")


def channel_flag(default, help="nsq channel"):
    return Flag("channel", "str", default, help)


def max_in_flight_flag():
    return Flag("max-in-flight", "int", 200, "max number of messages to allow in flight")


def topics_flag(help="nsq topic (may be given multiple times)"):
    return Flag("topic", "strlist", [], help)


def nsqd_tcp_addresses_flag(help="nsqd TCP address (may be given multiple times)"):
    return Flag("nsqd-tcp-address", "strlist", [], help)


def lookupd_http_addresses_flag():
    return Flag("lookupd-http-address", "strlist", [],
                "lookupd HTTP address (may be given multiple times)")


def http_timeout_flags(request_timeout):
    return [
        Flag("http-client-connect-timeout", "duration", 2.0, "timeout for HTTP connect"),
        Flag("http-client-request-timeout", "duration", request_timeout,
             "timeout for HTTP request"),
    ]


def parse(program, flags, argv=None):
    """The tool's options from ``argv`` (default: ``sys.argv[1:]``); exits for a bad flag
    (2) and for ``--version`` (0)."""
    opts = parse_or_exit(FlagSet(program, flags).parse,
                         sys.argv[1:] if argv is None else argv, program)
    if opts.version:
        print(version_banner(program))
        sys.exit(0)
    return opts


def check_sources(opts, period=""):
    """NSQ's rule for the consumer tools: nsqd addresses or lookupd addresses, not both."""
    if not opts.nsqd_tcp_address and not opts.lookupd_http_address:
        raise ToolError(f"--nsqd-tcp-address or --lookupd-http-address required{period}")
    if opts.nsqd_tcp_address and opts.lookupd_http_address:
        raise ToolError("use --nsqd-tcp-address or --lookupd-http-address not both")


def check_positive(opts, *names):
    for name in names:
        if getattr(opts, name.replace("-", "_")) <= 0:
            raise ToolError(f"--{name} should be positive")


def user_agent(program):
    """What the tools identify as, like Go's ``nsq_to_file/1.3.0 go-nsq/1.1.0``."""
    return f"{program}/{NSQ_VERSION} greensq/{__version__}"
