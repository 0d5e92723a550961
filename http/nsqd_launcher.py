"""``nsqd``: the command that starts greensq's nsqd with NSQ's flags.

``NsqdSpec`` is what the Gunicorn launcher runs: in the worker it builds the core, loads
the data directory, serves the TCP protocol beside the Falcon app, and flushes everything
to disk on the way out. ``gunicorn 'greensq.http.nsqd_app:app'`` works as well: see
``standalone_app`` below.
"""

import atexit
import logging
import os
import shlex
import sys

from greensq.http.launcher import DaemonSpec, StartupError, bind_listener, format_sockname, run_daemon
from greensq.services.goflags import FlagError
from greensq.services.nsqd_options import parse_nsqd_options
from greensq.services.version import version_banner

log = logging.getLogger("greensq")


class NsqdSpec(DaemonSpec):
    name = "nsqd"

    def __init__(self, opts):
        self.opts = opts
        self.nsqd = None
        self.tcp_server = None
        self.log_handler = None

    def log_prefix(self):
        return self.opts.log_prefix

    def listen_addresses(self):
        return {"TCP": self.opts.tcp_address, "HTTP": self.opts.http_address}

    def lock_path(self):
        return os.path.abspath(self.opts.data_path or os.getcwd())

    def build_app(self, sockets):
        from greensq.http.nsqd_app import create_app
        from greensq.services.logs import setup_logging
        from greensq.services.nsqd import NSQD

        self.log_handler = setup_logging(self.opts.log_prefix, self.opts.log_level)
        log.info("%s", version_banner("nsqd"))
        log.info("ID: %d", self.opts.node_id)
        for flag in ("tls_cert", "tls_key", "tls_root_ca_file", "tls_client_auth_policy"):
            if getattr(self.opts, flag):
                log.warning("--%s is accepted but TLS is not available in this release",
                            flag.replace("_", "-"))
        if self.opts.auth_http_address:
            log.warning("--auth-http-address is accepted but auth is not available in this release")
        self.nsqd = NSQD(self.opts)
        self.nsqd.load_metadata()
        return create_app(self.nsqd)

    def start(self, sockets):
        from greensq.actors.session import Session
        from greensq.services.tcp_server import ProtocolServer
        from greensq.services.wire import MAGIC_V2

        nsqd = self.nsqd
        tcp = sockets["TCP"]
        bound = self.bound or {}
        nsqd.tcp_address = tcp.getsockname()[:2]
        if "HTTP" in bound:
            host, _, port = bound["HTTP"].rpartition(":")
            nsqd.http_address = (host.strip("[]"), int(port))

        def serve_v2(sock, address):
            session = Session(nsqd, sock, address)
            nsqd.sessions.add(session)
            try:
                session.run()
            finally:
                nsqd.sessions.discard(session)

        self.tcp_server = ProtocolServer(tcp, {MAGIC_V2: serve_v2})
        self.tcp_server.start()
        log.info("TCP: listening on %s", format_sockname(tcp))
        if "HTTP" in bound:
            log.info("HTTP: listening on %s", bound["HTTP"])
        nsqd.start_lookup()

    def stop(self):
        if self.nsqd is not None:
            self.nsqd.stop_lookup()
        if self.tcp_server is not None:
            log.info("TCP: closing %s", format_sockname(self.tcp_server.socket))
            self.tcp_server.close()
        if self.nsqd is not None:
            self.nsqd.close()
        if self.log_handler is not None:
            self.log_handler.flush_pending()


def options_or_exit(argv):
    """Parse flags like Go's flag package: errors print usage and exit 2."""
    try:
        return parse_nsqd_options(argv)
    except FlagError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    opts = options_or_exit(argv)
    if opts.version:
        print(version_banner("nsqd"))
        return
    run_daemon(NsqdSpec(opts))


def standalone_app():
    """The WSGI app for ``gunicorn -k gevent 'greensq.http.nsqd_app:app'``.

    Gunicorn imports the app inside its worker; this builds the core there, binds the TCP
    port itself, and flushes to disk at interpreter exit. nsqd flags come from the
    ``NSQD_OPTS`` environment variable (``--tcp-address`` and ``--data-path`` matter most;
    ``--http-address`` is Gunicorn's ``--bind``).
    """
    opts = options_or_exit(shlex.split(os.environ.get("NSQD_OPTS", "")))
    spec = NsqdSpec(opts)
    try:
        sockets = {"TCP": bind_listener(opts.tcp_address)}
    except StartupError as exc:
        raise RuntimeError(str(exc)) from None
    app = spec.build_app(sockets)
    spec.start(sockets)
    atexit.register(spec.stop)
    return app


if __name__ == "__main__":
    main()
