"""``nsqd``: the command that starts greensq's nsqd with NSQ's flags.

In the worker it builds the core, loads the data directory, serves the V2 TCP protocol
beside the Falcon app, registers with the nsqlookupds, and flushes everything to disk on
the way out. ``gunicorn 'greensq.http.nsqd_app:app'`` works as well: see
``standalone_app`` below.
"""

import atexit
import logging
import os
import shlex

from greensq.http.daemon_spec import ProtocolDaemonSpec
from greensq.http.launcher import daemon_main
from greensq.http.listeners import StartupError, bind_listener, format_sockname
from greensq.http.worker import die_with_parent
from greensq.services.nsqd.options import parse_nsqd_options
from greensq.services.shared.deferred import deferred_import
from greensq.services.shared.goflags import parse_or_exit
from greensq.services.shared.tls import server_context, tls_required_mode

# The worker's (launcher.py says why), loaded after the fork.
gateway = deferred_import("greensq.http.gateway")
nsqd_api = deferred_import("greensq.http.nsqd_api")
nsqd_core = deferred_import("greensq.services.nsqd.nsqd")
wsgi_server = deferred_import("greensq.http.wsgi_server")

log = logging.getLogger("greensq")

# How long an HTTP worker's publish waits for the core to answer, and for a core that is
# (re)starting to take its connection: then it is answered 503.
CORE_ANSWER_TIMEOUT = 60.0
CORE_START_TIMEOUT = 30.0


class NsqdSpec(ProtocolDaemonSpec):
    name = "nsqd"

    https_server = None
    https_app = None
    gateway = None            # in an HTTP worker: its app

    def __init__(self, opts):
        super().__init__(opts)
        self.http_workers = opts.http_workers
        self.idle_spin = opts.idle_spin

    def lock_path(self):
        return os.path.abspath(self.opts.data_path or os.getcwd())

    def listen_addresses(self):
        # Runs in the arbiter: a bad TLS setup fails here, before any worker boots.
        addresses = super().listen_addresses()
        try:
            context = server_context(self.opts)
        except (OSError, ValueError) as exc:
            raise StartupError(f"failed to build TLS config - {exc}") from None
        if context is None and tls_required_mode(self.opts) != "false":
            raise StartupError("cannot require TLS client connections without TLS key and cert")
        if context is not None and self.opts.https_address:
            addresses["HTTPS"] = self.opts.https_address
        return addresses

    def build_core(self):
        try:
            return nsqd_core.load_nsqd(self.opts)
        except nsqd_core.CannotStart as exc:
            raise StartupError(str(exc)) from None

    def create_app(self, core):
        app = nsqd_api.create_app(core)
        self.https_app = app
        https = (self.bound or {}).get("HTTPS")
        if https and tls_required_mode(self.opts) == "true":
            return tls_required_app(int(https.rpartition(":")[2]))
        return app

    def http_max_body(self):
        # /mpub takes --max-body-size, /pub --max-msg-size; one byte more says "too big".
        return max(self.opts.max_body_size, self.opts.max_msg_size) + 1

    def start(self, sockets):
        super().start(sockets)
        if "HTTPS" in sockets:
            listener = sockets["HTTPS"]
            self.https_server = wsgi_server.ApiServer(listener, self.https_app, 10000,
                                                      max_body=self.http_max_body(),
                                                      ssl_context=self.core.tls_context)
            self.https_server.start()
            log.info("HTTPS: listening on %s", format_sockname(listener))

    def after_start(self):
        self.core.start()

    def stop(self):
        if self.https_server is not None:
            log.info("HTTPS: closing %s", format_sockname(self.https_server.socket))
            self.https_server.close()
        if self.core is not None:
            self.core.stop_lookup()
        return super().stop()

    def close_core(self):
        return self.core.close()

    def create_http_worker_app(self):
        """An HTTP worker's app: nsqd's HTTP API served by http/gateway.py, publishing to
        the core over the internal TCP socket (an internal V2 connection: no AUTH, no
        TLS, a failed publish answered without closing it) and forwarding the rest to
        the core's own app. The core may be (re)starting: a publish waits for it."""
        if tls_required_mode(self.opts) == "true":
            return tls_required_app(int(self.bound["HTTPS"].rpartition(":")[2]))
        self.gateway = gateway.Gateway(
            self.internal["TCP"], self.internal["HTTP"], self.opts,
            heartbeat_interval=0, timeout=CORE_ANSWER_TIMEOUT,
            connect_timeout=CORE_START_TIMEOUT)
        return self.gateway

    def close_http_worker(self):
        if self.gateway is not None:
            self.gateway.close()


def tls_required_app(https_port):
    """The plain-HTTP app under ``--tls-required=true``: NSQ's 403 for every request."""
    body = b'{"message": "TLS_REQUIRED", "https_port": %d}' % https_port
    headers = [("Content-Type", "application/json; charset=utf-8"),
               ("X-NSQ-Content-Type", "nsq; version=1.0"),
               ("Content-Length", str(len(body)))]

    def app(environ, start_response):
        start_response("403 Forbidden", headers)
        return [body]

    return app


def main(argv=None):
    daemon_main(NsqdSpec, parse_nsqd_options, argv)


def standalone_app():
    """The WSGI app for ``gunicorn -k gevent 'greensq.http.nsqd_app:app'``.

    Gunicorn imports the app inside its worker; this builds the core there, binds the TCP
    port itself, and flushes to disk at interpreter exit. nsqd flags come from the
    ``NSQD_OPTS`` environment variable (``--tcp-address`` and ``--data-path`` matter most;
    ``--http-address`` is Gunicorn's ``--bind``).
    """
    die_with_parent(os.getppid())   # the worker ends with the gunicorn arbiter
    opts = parse_or_exit(parse_nsqd_options, shlex.split(os.environ.get("NSQD_OPTS", "")),
                         "nsqd")
    spec = NsqdSpec(opts)
    try:
        sockets = {"TCP": bind_listener(opts.tcp_address)}
        app = spec.build_app(sockets)
    except StartupError as exc:
        raise RuntimeError(str(exc)) from None
    spec.start(sockets)
    atexit.register(spec.stop)
    return app


if __name__ == "__main__":
    main()
