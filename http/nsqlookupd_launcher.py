"""``nsqlookupd``: the command that starts greensq's nsqlookupd with NSQ's flags.

``NsqlookupdSpec`` is what the Gunicorn launcher runs: in the worker it builds the
registration DB, serves the V1 TCP protocol (nsqd announcements) beside the Falcon app
(discovery and administration). nsqlookupd keeps no data, so there is nothing to lock
or flush.
"""

import logging
import sys

from greensq.http.launcher import DaemonSpec, format_sockname, run_daemon
from greensq.services.goflags import FlagError
from greensq.services.nsqlookupd_options import parse_nsqlookupd_options
from greensq.services.version import version_banner

log = logging.getLogger("greensq")


class NsqlookupdSpec(DaemonSpec):
    name = "nsqlookupd"
    graceful_timeout = 5

    def __init__(self, opts):
        self.opts = opts
        self.lookupd = None
        self.tcp_server = None
        self.log_handler = None

    def log_prefix(self):
        return self.opts.log_prefix

    def listen_addresses(self):
        return {"TCP": self.opts.tcp_address, "HTTP": self.opts.http_address}

    def build_app(self, sockets):
        from greensq.http.nsqlookupd_app import create_app
        from greensq.services.logs import setup_logging
        from greensq.services.nsqlookupd import NSQLookupd

        self.log_handler = setup_logging(self.opts.log_prefix, self.opts.log_level)
        log.info("%s", version_banner("nsqlookupd"))
        self.lookupd = NSQLookupd(self.opts)
        return create_app(self.lookupd)

    def start(self, sockets):
        from greensq.actors.lookup_session import LookupSession
        from greensq.services.tcp_server import ProtocolServer
        from greensq.services.wire import MAGIC_V1

        lookupd = self.lookupd
        tcp = sockets["TCP"]
        bound = self.bound or {}
        lookupd.tcp_port = tcp.getsockname()[1]
        if "HTTP" in bound:
            lookupd.http_port = int(bound["HTTP"].rpartition(":")[2])

        def serve_v1(sock, address):
            LookupSession(lookupd, sock, address).run()

        self.tcp_server = ProtocolServer(tcp, {MAGIC_V1: serve_v1})
        self.tcp_server.start()
        log.info("TCP: listening on %s", format_sockname(tcp))
        if "HTTP" in bound:
            log.info("HTTP: listening on %s", bound["HTTP"])

    def stop(self):
        if self.tcp_server is not None:
            log.info("TCP: closing %s", format_sockname(self.tcp_server.socket))
            self.tcp_server.close()
        if self.log_handler is not None:
            self.log_handler.flush_pending()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_nsqlookupd_options(argv)
    except FlagError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)
    if opts.version:
        print(version_banner("nsqlookupd"))
        return
    run_daemon(NsqlookupdSpec(opts))


if __name__ == "__main__":
    main()
