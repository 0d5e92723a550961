"""Run a greensq daemon under Gunicorn: an arbiter and exactly one gevent worker.

The arbiter (this process) binds every listening socket (HTTP and the daemon's TCP
protocol port) and takes the data-directory lock before it forks, so a restarted worker
keeps the same ports (port 0 included), connections wait in the backlog during a restart,
and a second daemon on the same data directory fails at once. The worker builds the
daemon's core, serves the Falcon app over the inherited HTTP socket and the TCP protocol
over the inherited TCP socket on the same gevent hub, and on SIGTERM, SIGINT or SIGQUIT
stops accepting, lets the core flush to disk, and exits.

A daemon plugs in through a small object (see ``DaemonSpec``); the launcher knows nothing
about NSQ.

The arbiter stays small: it imports Gunicorn's arbiter and the daemon's flags, not gevent
nor the app (the worker imports those after the fork), and it freezes its objects out of
the garbage collector's reach just before forking, so the pages it shares with the
worker stay shared instead of being copied the first time either process collects.
"""

import errno
import fcntl
import gc
import logging
import os
import resource
import signal
import socket
import sys
import time

from greensq.http.unused_modules import defer_unused_modules

defer_unused_modules()

from gunicorn.app.base import BaseApplication  # noqa: E402 (after the deferral)
from gunicorn.arbiter import Arbiter  # noqa: E402
from gunicorn.workers.base import Worker  # noqa: E402


class StartupError(Exception):
    """A daemon cannot start; the message is printed and the process exits 1."""


class DaemonSpec:
    """What a daemon provides to the launcher (subclass and fill in).

    ``listen_addresses()`` names the sockets to bind, e.g. ``{"TCP": "0.0.0.0:4150",
    "HTTP": "0.0.0.0:4151"}``; "HTTP" is served by Gunicorn. ``lock_path()`` is a data
    directory to lock, or None. In the worker, ``build_app(sockets)`` returns the WSGI app,
    ``start(sockets)`` starts the protocol servers and ``stop()`` shuts down gracefully.
    """

    name = "daemon"
    graceful_timeout = 30
    bound = None

    def listen_addresses(self):
        raise NotImplementedError

    def lock_path(self):
        return None

    def log_prefix(self):
        return f"[{self.name}] "

    def http_max_body(self):
        """The largest request body the HTTP server buffers for the app."""
        return 1 << 20

    def build_app(self, sockets):
        raise NotImplementedError

    def start(self, sockets):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError


class ProtocolDaemonSpec(DaemonSpec):
    """An NSQ-shaped daemon: a core built in the worker, a TCP protocol server on the
    ``--tcp-address`` port beside the Falcon app on ``--http-address``, NSQ's log lines.

    Subclasses set ``name`` and implement ``build_core()``, ``create_app(core)`` and
    ``protocols()`` (magic -> serve(sock, address)); ``after_start`` and ``close_core``
    are optional hooks. The core gets ``tcp_port`` and ``http_port`` once bound.
    """

    def __init__(self, opts):
        self.opts = opts
        self.core = None
        self.tcp_server = None
        self.log_handler = None

    def log_prefix(self):
        return self.opts.log_prefix

    def listen_addresses(self):
        return {"TCP": self.opts.tcp_address, "HTTP": self.opts.http_address}

    def build_core(self):
        raise NotImplementedError

    def create_app(self, core):
        raise NotImplementedError

    def protocols(self):
        raise NotImplementedError

    def after_start(self):
        """Runs once the listeners serve (nsqd connects to its lookupds here)."""

    def close_core(self):
        """Runs after the listeners stopped accepting: flush and release."""

    def build_app(self, sockets):
        from greensq.services.logs import setup_logging
        from greensq.services.version import version_banner

        self.log_handler = setup_logging(self.opts.log_prefix, self.opts.log_level)
        logging.getLogger("greensq").info("%s", version_banner(self.name))
        self.core = self.build_core()
        return self.create_app(self.core)

    def start(self, sockets):
        from greensq.services.tcp_server import ProtocolServer

        log = logging.getLogger("greensq")
        tcp = sockets["TCP"]
        bound = self.bound or {}
        self.core.tcp_port = tcp.getsockname()[1]
        if "HTTP" in bound:
            self.core.http_port = int(bound["HTTP"].rpartition(":")[2])
        self.tcp_server = ProtocolServer(tcp, self.protocols())
        self.tcp_server.start()
        log.info("TCP: listening on %s", format_sockname(tcp))
        if "HTTP" in bound:
            log.info("HTTP: listening on %s", bound["HTTP"])
        self.after_start()

    def stop(self):
        if self.tcp_server is not None:
            logging.getLogger("greensq").info(
                "TCP: closing %s", format_sockname(self.tcp_server.socket))
            self.tcp_server.close()
        if self.core is not None:
            self.close_core()
        if self.log_handler is not None:
            self.log_handler.flush_pending()


def options_or_exit(parse, argv):
    """Parse flags like Go's flag package: an error prints its message and exits 2."""
    from greensq.services.goflags import FlagError

    try:
        return parse(argv)
    except FlagError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)


def daemon_main(spec_class, parse, argv=None):
    """A daemon's command: flags, ``--version``, then the arbiter."""
    from greensq.services.version import version_banner

    opts = options_or_exit(parse, sys.argv[1:] if argv is None else argv)
    if opts.version:
        print(version_banner(spec_class.name))
        return
    run_daemon(spec_class(opts))


def parse_address(address):
    """``"host:port"``, ``":port"`` or ``"[v6]:port"`` as ``(family, host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise StartupError(f"invalid address {address!r}: missing port")
    try:
        port = int(port)
    except ValueError:
        raise StartupError(f"invalid address {address!r}: bad port") from None
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], port
    return socket.AF_INET, host or "0.0.0.0", port


def bind_listener(address, backlog=1024):
    """A listening TCP socket on ``address``, reusable at once after a restart (a killed
    daemon's dying worker is waited for: see services/holders.py)."""
    from greensq.services.holders import port_holders, retry_while_holders_die

    family, host, port = parse_address(address)

    def attempt():
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        family_, _, _, _, sockaddr = next(
            (info for info in infos if info[0] == family), infos[0])
        sock = socket.socket(family_, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    try:
        sock = retry_while_holders_die(attempt, lambda: port_holders(port)) if port else attempt()
    except OSError as exc:
        raise StartupError(f"listen ({address}) failed - {exc}") from None
    sock.set_inheritable(True)
    return sock


def format_sockname(sock):
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def lock_directory(path, daemon_name):
    """Hold an exclusive flock on the data directory for the life of the process.

    flock on the directory itself is what Go's nsqd takes too, so greensq and Go nsqd
    also exclude each other.
    """
    from greensq.services.holders import lock_holders, retry_while_holders_die

    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        retry_while_holders_die(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                                lambda: lock_holders(path))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StartupError(
                f"--data-path={path} in use (possibly by another instance of {daemon_name})"
            ) from None
        raise StartupError(f"failed to lock --data-path={path} - {exc}") from None
    return fd


def raise_fd_limit():
    """Raise the soft open-files limit to the hard limit: every client connection is a
    file descriptor, and the usual soft limit (1024) would cap nsqd at ~1000 clients."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), then make sure
    the parent is still ``parent_pid``: it may have died before the request was made.

    Whoever started a daemon sees one process. Killing that PID, even with SIGKILL, must
    end the worker at once too, so the ports and the data-directory lock are free for the
    next start, as they are when a Go binary is killed.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def monkey_patch():
    """gevent's ``patch_all()`` without its plugin lookup.

    Around every module it patches, gevent looks for plugins among the entry points of
    every installed distribution: 25 reads of all the package metadata, about 0.1 s of
    CPU and 2 MB at each worker start. The daemons use no gevent plugins; subscribers
    registered in code (``zope.event``) are still notified. The daemons start no
    processes either, so ``subprocess`` stays unpatched (and gevent's copy unloaded).
    """
    from gevent import events, monkey

    events.notify_and_call_entry_points = events.notify
    monkey.patch_all(subprocess=False)


def release_free_heap():
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Imports leave the heap full of freed buffers (file contents, compiler scratch) that
    stay resident: about 1 MB once a worker has started.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim(0)


class DaemonWorker(Worker):
    """The single gevent worker: the Falcon app on the HTTP server in wsgi_server.py, and
    the spec's protocol servers beside it.

    Gunicorn loads the worker class in the arbiter, so gevent is imported here only once
    the worker runs, after the fork. Its run loop wakes as soon as a stop signal arrives
    (Gunicorn's polls once a second), then stops accepting, gives requests under way a
    moment, and lets the spec flush.
    """

    drain_timeout = 2.0

    def init_process(self):
        die_with_parent(self.ppid)
        monkey_patch()
        from gevent import hub

        # Sockets bound in the arbiter predate monkey-patching: re-wrap them for the hub.
        self.sockets = [socket.socket(listener.FAMILY, socket.SOCK_STREAM,
                                      fileno=listener.sock.detach())
                        for listener in self.sockets]
        hub.reinit()
        # Falcon's App copies mimetypes' table (for static routes); Python's own table is
        # enough for the daemons (nsqadmin serves .css and .js), and reading the system's
        # mime.types would cost 0.4 MB.
        import mimetypes

        mimetypes.init(files=[])
        super().init_process()

    def notify(self):
        super().notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            sys.exit(0)

    def run(self):
        import gevent
        from gevent.event import Event
        from gevent.pool import Pool

        from greensq.http.wsgi_server import ApiServer

        spec = self.app.spec
        raise_fd_limit()
        self._stop = Event()
        sockets = {label: socket.socket(sock.family, sock.type, fileno=sock.detach())
                   for label, sock in self.app.sockets.items() if label != "HTTP"}
        servers = []
        try:
            spec.start(sockets)
            for listener in self.sockets:
                listener.setblocking(1)
                server = ApiServer(listener, self.wsgi,
                                   spawn=Pool(self.cfg.worker_connections),
                                   max_body=spec.http_max_body())
                server.start()
                servers.append(server)
        except Exception:
            self.log.exception("%s failed to start", spec.name)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        # Messages are not cyclic garbage; let the cyclic collector run rarely, and never
        # rescan what startup allocated, so it cannot pause the hub under load.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        release_free_heap()
        try:
            while self.alive:
                self.notify()
                self._stop.wait(1.0)
            for server in servers:
                logging.getLogger("greensq").info(
                    "HTTP: closing %s", format_sockname(server.socket))
                server.close_idle()
            deadline = time.monotonic() + self.drain_timeout
            while time.monotonic() < deadline and any(server.active for server in servers):
                gevent.sleep(0.05)
        finally:
            spec.stop()

    def handle_exit(self, sig, frame):
        self.alive = False
        self._stop.set()

    # SIGINT / SIGQUIT shut down as gracefully as SIGTERM: queues must reach disk.
    handle_quit = handle_exit

    def handle_usr1(self, sig, frame):
        # Reopening log files may block: not in a signal handler on the hub.
        import gevent

        gevent.spawn(super().handle_usr1, sig, frame)


class DaemonApplication(BaseApplication):
    """Gunicorn application for one ``DaemonSpec``."""

    def __init__(self, spec):
        self.spec = spec
        self.sockets = {label: bind_listener(address)
                        for label, address in spec.listen_addresses().items() if address}
        spec.bound = {label: format_sockname(sock) for label, sock in self.sockets.items()}
        lock_path = spec.lock_path()
        self.lock_fd = lock_directory(lock_path, spec.name) if lock_path else None
        super().__init__()

    def load_config(self):
        settings = {
            "bind": [f"fd://{self.sockets['HTTP'].fileno()}"],
            "workers": 1,
            "worker_class": f"{DaemonWorker.__module__}.{DaemonWorker.__qualname__}",
            "worker_connections": 10000,
            "graceful_timeout": self.spec.graceful_timeout,
            "timeout": 60,
            "keepalive": 5,
            "loglevel": "warning",
            "errorlog": "-",
            "accesslog": None,
            "proc_name": self.spec.name,
            # Gunicorn 25.1+ opens a control socket (one path per user, shared by every
            # daemon) served by an asyncio thread in the arbiter: nothing nsqd needs.
            "control_socket_disable": True,
            "pre_fork": freeze_before_fork,
        }
        for key, value in settings.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        return self.spec.build_app(self.sockets)


def freeze_before_fork(arbiter, worker):
    """Move everything the arbiter allocated so far out of the collector's generations.

    A collection writes to every object it scans: in the worker, or in the arbiter after
    the fork, that would copy every page the two processes share.
    """
    gc.freeze()


def run_daemon(spec):
    """Bind, lock and run ``spec`` under Gunicorn; exits with the arbiter's status."""
    try:
        app = DaemonApplication(spec)
    except StartupError as exc:
        sys.stderr.write(f"{spec.log_prefix()}FATAL: failed to instantiate {spec.name} - {exc}\n")
        sys.exit(1)
    app.run()
