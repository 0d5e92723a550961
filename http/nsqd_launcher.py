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

from greensq.http.launcher import (
    ProtocolDaemonSpec, StartupError, bind_listener, daemon_main, options_or_exit)
from greensq.services.nsqd_options import parse_nsqd_options

log = logging.getLogger("greensq")


class NsqdSpec(ProtocolDaemonSpec):
    name = "nsqd"

    def lock_path(self):
        return os.path.abspath(self.opts.data_path or os.getcwd())

    def build_core(self):
        from greensq.services.nsqd import NSQD

        log.info("ID: %d", self.opts.node_id)
        for flag in ("tls_cert", "tls_key", "tls_root_ca_file", "tls_client_auth_policy"):
            if getattr(self.opts, flag):
                log.warning("--%s is accepted but TLS is not available in this release",
                            flag.replace("_", "-"))
        if self.opts.auth_http_address:
            log.warning("--auth-http-address is accepted but auth is not available in this release")
        nsqd = NSQD(self.opts)
        nsqd.load_metadata()
        return nsqd

    def create_app(self, core):
        from greensq.http.nsqd_app import create_app

        return create_app(core)

    def protocols(self):
        from greensq.actors.session import Session
        from greensq.services.wire import MAGIC_V2

        nsqd = self.core

        def serve_v2(sock, address):
            session = Session(nsqd, sock, address)
            nsqd.sessions.add(session)
            try:
                session.run()
            finally:
                nsqd.sessions.discard(session)

        return {MAGIC_V2: serve_v2}

    def after_start(self):
        self.core.start_lookup()

    def stop(self):
        if self.core is not None:
            self.core.stop_lookup()
        super().stop()

    def close_core(self):
        self.core.close()


def main(argv=None):
    daemon_main(NsqdSpec, parse_nsqd_options, argv)


def standalone_app():
    """The WSGI app for ``gunicorn -k gevent 'greensq.http.nsqd_app:app'``.

    Gunicorn imports the app inside its worker; this builds the core there, binds the TCP
    port itself, and flushes to disk at interpreter exit. nsqd flags come from the
    ``NSQD_OPTS`` environment variable (``--tcp-address`` and ``--data-path`` matter most;
    ``--http-address`` is Gunicorn's ``--bind``).
    """
    opts = options_or_exit(parse_nsqd_options, shlex.split(os.environ.get("NSQD_OPTS", "")))
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
