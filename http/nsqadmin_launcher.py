"""``nsqadmin``: the command that starts greensq's nsqadmin with NSQ's flags.

nsqadmin is a daemon like nsqd and nsqlookupd: a Gunicorn arbiter with one gevent worker
(see ``launcher.py``). It has no TCP protocol port and keeps no data; the worker serves the
Falcon app and runs the cluster poller behind the live graphs and the notification sender.
"""

import atexit
import logging
import os
import shlex

from greensq.http.daemon_spec import DaemonSpec
from greensq.http.launcher import daemon_main
from greensq.http.listeners import StartupError
from greensq.services.nsqadmin.options import InvalidOptions, parse_nsqadmin_options, validate
from greensq.services.shared.deferred import deferred_import
from greensq.services.shared.goflags import parse_or_exit
from greensq.services.shared.version import version_banner

# The worker's (launcher.py says why), loaded after the fork.
logs = deferred_import("greensq.services.shared.logs")
nsqadmin_api = deferred_import("greensq.http.nsqadmin_api")
nsqadmin_core = deferred_import("greensq.services.nsqadmin.nsqadmin")


class NsqadminSpec(DaemonSpec):
    name = "nsqadmin"
    graceful_timeout = 5

    def __init__(self, opts):
        self.opts = opts
        self.core = None
        self.log_handler = None

    def listen_addresses(self):
        # Asked for before anything is bound: the place to refuse a bad configuration
        # with NSQ's "FATAL: failed to instantiate nsqadmin - ..." line.
        try:
            validate(self.opts)
        except InvalidOptions as exc:
            raise StartupError(str(exc)) from None
        return {"HTTP": self.opts.http_address}

    def build_app(self, sockets):
        self.log_handler = logs.setup_logging(self.opts.log_prefix, self.opts.log_level)
        logging.getLogger("greensq").info("%s", version_banner(self.name))
        self.core = nsqadmin_core.NSQAdmin(self.opts)
        return nsqadmin_api.create_app(self.core)

    def start(self, sockets):
        log = logging.getLogger("greensq")
        self.core.start()
        log.info("HTTP: listening on %s", (self.bound or {}).get("HTTP"))

    def stop(self):
        if self.core is not None:
            self.core.stop()
        if self.log_handler is not None:
            self.log_handler.flush_pending()


def main(argv=None):
    daemon_main(NsqadminSpec, parse_nsqadmin_options, argv)


def standalone_app():
    """The WSGI app for ``gunicorn -k gevent 'greensq.http.nsqadmin_app:app'``: built in
    Gunicorn's worker from the flags in ``NSQADMIN_OPTS`` (``--http-address`` is Gunicorn's
    ``--bind``)."""
    opts = parse_or_exit(parse_nsqadmin_options,
                           shlex.split(os.environ.get("NSQADMIN_OPTS", "")), "nsqadmin")
    spec = NsqadminSpec(opts)
    try:
        spec.listen_addresses()
    except StartupError as exc:
        raise RuntimeError(str(exc)) from None
    app = spec.build_app({})
    spec.core.start()
    atexit.register(spec.stop)
    return app


if __name__ == "__main__":
    main()
