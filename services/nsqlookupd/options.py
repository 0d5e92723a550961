"""nsqlookupd's options: NSQ 1.3's flag names, defaults and config-file keys."""

import socket

from greensq.services.shared.daemon_flags import daemon_flags
from greensq.services.shared.goflags import Flag, FlagSet

NSQLOOKUPD_FLAGS = [
    *daemon_flags("nsqlookupd"),
    Flag("tcp-address", "str", "0.0.0.0:4160", "<addr>:<port> to listen on for TCP clients"),
    Flag("http-address", "str", "0.0.0.0:4161", "<addr>:<port> to listen on for HTTP clients"),
    Flag("broadcast-address", "str", socket.gethostname(), "address of this lookupd node, "
         "(default to the OS hostname)"),
    Flag("inactive-producer-timeout", "duration", 300.0,
         "duration of time a producer will remain in the active list since its last ping"),
    Flag("tombstone-lifetime", "duration", 45.0,
         "duration of time a producer will remain tombstoned if registration remains"),
]

NSQLOOKUPD_FLAGSET = FlagSet("nsqlookupd", NSQLOOKUPD_FLAGS)


def parse_nsqlookupd_options(argv):
    """Parse an nsqlookupd command line into Options, filling derived defaults."""
    opts = NSQLOOKUPD_FLAGSET.parse(argv)
    if opts.version:
        return opts
    opts.hostname = socket.gethostname()
    if not opts.broadcast_address:
        opts.broadcast_address = opts.hostname
    opts.log_level = opts.log_level.lower()
    return opts
