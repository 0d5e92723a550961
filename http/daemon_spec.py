"""What a daemon plugs into the launcher: the sockets to bind, the directory to lock, and,
in the worker, the WSGI app, the protocol servers and a graceful stop. The launcher knows
nothing about NSQ; nsqd, nsqlookupd and nsqadmin are specs.
"""

import logging
import sys

from greensq.http.listeners import format_sockname
from greensq.services.shared.deferred import deferred_import
from greensq.services.shared.golog import daemon_line
from greensq.services.shared.version import version_banner

# The worker's (launcher.py says why), loaded after the fork.
logs = deferred_import("greensq.services.shared.logs")
tcp_server = deferred_import("greensq.services.shared.tcp_server")


class DaemonSpec:
    """What a daemon provides to the launcher (subclass and fill in; HTTP workers are
    optional, see ``internal_listeners``).

    ``listen_addresses()`` names the sockets to bind, e.g. ``{"TCP": "0.0.0.0:4150",
    "HTTP": "0.0.0.0:4151"}``; "HTTP" is served by Gunicorn. ``lock_path()`` is a data
    directory to lock, or None. In the worker, ``build_app(sockets)`` returns the WSGI app
    (or raises ``StartupError``: the daemon exits 1 with ``fatal``'s line),
    ``start(sockets)`` starts the protocol servers and ``stop()`` shuts down gracefully,
    returning False if it could not persist everything (the daemon then exits 1).
    """

    name = "daemon"
    graceful_timeout = 30
    bound = None
    log_handler = None
    http_workers = 0     # HTTP workers beside the core worker (see http_worker_app)
    internal = None      # {label: path} of the internal sockets, with HTTP workers
    idle_spin = 0.0      # seconds a worker's hub polls before it sleeps (idle_spin.py)

    def listen_addresses(self):
        raise NotImplementedError

    def lock_path(self):
        return None

    def http_max_body(self):
        """The largest request body the HTTP server buffers for the app."""
        return 1 << 20

    def build_app(self, sockets):
        raise NotImplementedError

    def start(self, sockets):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def internal_listeners(self):
        """With HTTP workers: the Unix sockets (``{label: file name}``) the arbiter binds
        for the core to serve them: "HTTP", the core's app, which they forward requests
        to, and what else the spec's ``start`` serves (nsqd: "V2", where they publish);
        ``start`` finds them in its sockets as ``"internal <label>"``, the HTTP workers
        their paths in ``internal``."""
        return {"HTTP": "http.sock"}

    def build_http_worker_app(self):
        """In an HTTP worker: its WSGI app (or raises ``StartupError``)."""
        raise NotImplementedError

    def stop_http_worker(self):
        """In an HTTP worker, once it stopped serving: let go of the core."""
        return True

    def fatal(self, message):
        """NSQ's ``FATAL: <message>`` line, through the daemon's log once it has one."""
        log = logging.getLogger("greensq")
        if self.log_handler is None:
            sys.stderr.write(daemon_line(f"[{self.name}] ", "FATAL", message) + "\n")
            return
        log.critical("%s", message)
        self.log_handler.flush_pending()


class ProtocolDaemonSpec(DaemonSpec):
    """An NSQ-shaped daemon: a core built in the worker, a TCP protocol server on the
    ``--tcp-address`` port beside the Falcon app on ``--http-address``, NSQ's log lines.

    Subclasses set ``name`` and implement ``build_core()`` and ``create_app(core)``; the
    core serves its TCP protocol (``core.tcp_protocols()``: magic -> serve(sock, address))
    and gets ``tcp_port`` and ``http_port`` once bound. ``after_start`` and ``close_core``
    are optional hooks. With HTTP workers (``http_workers``), the core also serves
    ``core.internal_protocols()`` on the internal TCP socket, and the HTTP workers run
    ``create_http_worker_app()`` and ``close_http_worker()``.
    """

    def __init__(self, opts):
        self.opts = opts
        self.core = None
        self.tcp_server = None
        self.internal_server = None
        self.log_handler = None

    def listen_addresses(self):
        return {"TCP": self.opts.tcp_address, "HTTP": self.opts.http_address}

    def internal_listeners(self):
        """"TCP": the core's protocol for its HTTP workers, as ``core.internal_protocols()``
        names it."""
        return {**super().internal_listeners(), "TCP": "tcp.sock"}

    def build_core(self):
        raise NotImplementedError

    def create_app(self, core):
        raise NotImplementedError

    def after_start(self):
        """Runs once the listeners serve (nsqd connects to its lookupds here)."""

    def close_core(self):
        """Runs after the listeners stopped accepting: flush and release; False if
        something could not be persisted."""
        return True

    def build_app(self, sockets):
        self.log_handler = logs.setup_logging(self.opts.log_prefix, self.opts.log_level)
        logging.getLogger("greensq").info("%s", version_banner(self.name))
        self.core = self.build_core()
        return self.create_app(self.core)

    def start(self, sockets):
        log = logging.getLogger("greensq")
        tcp = sockets["TCP"]
        bound = self.bound or {}
        self.core.tcp_port = tcp.getsockname()[1]
        if "HTTP" in bound:
            self.core.http_port = int(bound["HTTP"].rpartition(":")[2])
        self.tcp_server = tcp_server.ProtocolServer(tcp, self.core.tcp_protocols())
        self.tcp_server.start()
        if "internal TCP" in sockets:
            self.internal_server = tcp_server.ProtocolServer(
                sockets["internal TCP"], self.core.internal_protocols(), name="INTERNAL")
            self.internal_server.start()
            log.info("INTERNAL: listening on %s", format_sockname(sockets["internal TCP"]))
        log.info("TCP: listening on %s", format_sockname(tcp))
        if "HTTP" in bound:
            log.info("HTTP: listening on %s", bound["HTTP"])
        self.after_start()

    def stop(self):
        if self.internal_server is not None:
            self.internal_server.close()
        if self.tcp_server is not None:
            logging.getLogger("greensq").info(
                "TCP: closing %s", format_sockname(self.tcp_server.socket))
            self.tcp_server.close()
        persisted = True
        if self.core is not None:
            persisted = self.close_core()
        if self.log_handler is not None:
            self.log_handler.flush_pending()
        return persisted

    def build_http_worker_app(self):
        self.log_handler = logs.setup_logging(self.opts.log_prefix, self.opts.log_level)
        return self.create_http_worker_app()

    def create_http_worker_app(self):
        """In an HTTP worker, once logging is set up: its WSGI app."""
        raise NotImplementedError

    def stop_http_worker(self):
        self.close_http_worker()
        if self.log_handler is not None:
            self.log_handler.flush_pending()
        return True

    def close_http_worker(self):
        """In an HTTP worker, once it stopped serving: let go of the core."""
