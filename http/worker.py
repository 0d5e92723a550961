"""The daemon's worker processes: Gunicorn workers that each run a gevent hub. The core
worker (``DaemonWorker``) holds the daemon's core: the Falcon app on the HTTP server of
wsgi_server.py and the spec's protocol servers beside it. An HTTP worker (``HttpWorker``,
nsqd's ``--http-workers``) serves the spec's HTTP-worker app on the HTTP port and reaches
the core through the internal sockets the arbiter bound.

Gunicorn loads the worker class in the arbiter, so gevent and what needs it are
worker_hub.py, which this module names deferred: the worker loads it after the fork. The
worker dies with its arbiter (``PR_SET_PDEATHSIG``), as a killed Go binary takes its
ports with it.

A worker that cannot start logs NSQ's FATAL line and exits with Gunicorn's boot-error
status; one whose shutdown could not persist everything exits with ``UNPERSISTED_EXIT``.
The arbiter (launcher.py) turns either into the daemon's exit status 1.
"""

import gc
import logging
import os
import resource
import signal
import socket
import sys
import time

from greensq.http.unused_modules import defer_unused_modules

defer_unused_modules()   # before Gunicorn, whichever module imports it first

from gunicorn.arbiter import Arbiter  # noqa: E402 (after the deferral)
from gunicorn.workers.base import Worker  # noqa: E402

from greensq.http.accept_share import AcceptShare  # noqa: E402
from greensq.http.listeners import StartupError, format_sockname  # noqa: E402
from greensq.services.shared.deferred import deferred_import  # noqa: E402

# The worker's, loaded after the fork.
ctypes = deferred_import("ctypes")
worker_hub = deferred_import("greensq.http.worker_hub")

# The worker's exit status when its shutdown could not persist everything.
UNPERSISTED_EXIT = 1

# The signals that stop a daemon gracefully (SIGQUIT: at once, still persisting).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

# The label of the internal socket the core serves its HTTP app on for the HTTP workers
# (bound by the arbiter with the others the spec names: see launcher.py).
INTERNAL_HTTP = "internal HTTP"


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
PR_SET_NAME = 15


def die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), then make sure
    the parent is still ``parent_pid``: it may have died before the request was made.

    Whoever started a daemon sees one process. Killing that PID, even with SIGKILL, must
    end the worker at once too, so the ports and the data-directory lock are free for the
    next start, as they are when a Go binary is killed.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def name_process(name):
    """The process's name as ``top`` and ``/proc/<pid>/comm`` show it (Linux; at most 15
    bytes): which worker is the core, which an HTTP worker."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def release_free_heap():
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Imports leave the heap full of freed buffers (file contents, compiler scratch) that
    stay resident: about 1 MB once a worker has started.
    """
    if sys.platform.startswith("linux"):
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim(0)


class DaemonWorker(Worker):
    """The core worker: the Falcon app on the HTTP server in wsgi_server.py (on the HTTP
    port, or with HTTP workers on the internal HTTP socket they forward to), and the
    spec's protocol servers beside it.

    Gunicorn loads the worker class in the arbiter, so gevent is worker_hub's, loaded once
    the worker runs, after the fork. Its run loop wakes as soon as a stop signal arrives
    (Gunicorn's polls once a second), then stops accepting, gives requests under way a
    moment, and lets the spec flush.
    """

    role = "core"
    accept_share = None   # with other workers on the HTTP port: see accept_share.py
    http_slot = None      # an HTTP worker's slot in it (set by the arbiter)
    drain_timeout = 2.0
    _stop = None   # wakes the run loop, once it runs

    def init_process(self):
        # A stop may be asked for while the worker boots (a daemon stopped as it starts).
        # Until Gunicorn's init_signals, this process has the arbiter's handlers, which
        # would lose it: note it from the first moment, for run() to act on. The arbiter
        # forks with the stop signals blocked (launcher.py), so one sent before this
        # point waits for these handlers.
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle_exit)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        # Startup allocates much and frees little: collecting during it costs about 8 ms
        # of the worker's 95 and finds a few hundred objects. run() enables it again.
        gc.disable()
        die_with_parent(self.ppid)
        name_process(f"{self.app.spec.name}-{self.role}")
        worker_hub.monkey_patch()
        # Sockets bound in the arbiter predate monkey-patching: re-wrap them for the hub.
        self.sockets = [socket.socket(listener.FAMILY, socket.SOCK_STREAM,
                                      fileno=listener.sock.detach())
                        for listener in self.sockets]
        worker_hub.reinit_hub()
        worker_hub.use_builtin_mime_types()
        super().init_process()

    def load_wsgi(self):
        """Build the app; a daemon that cannot start says why in NSQ's FATAL line and
        exits with Gunicorn's boot-error status, which stops the arbiter."""
        try:
            super().load_wsgi()
        except StartupError as exc:
            self.app.spec.fatal(str(exc))
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def notify(self):
        super().notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            sys.exit(0)

    def start_serving(self, sockets):
        """Start the spec's servers on its ``sockets`` (the arbiter's, but the HTTP port);
        the listeners the WSGI app is to be served on."""
        internal_http = sockets.pop(INTERNAL_HTTP, None)
        self.app.spec.start(sockets)
        return [internal_http] if internal_http is not None else self.sockets

    def stop_serving(self):
        """The spec's graceful stop; False if something could not be persisted."""
        return self.app.spec.stop()

    def run(self):
        spec = self.app.spec
        raise_fd_limit()
        self._stop = worker_hub.stop_event()
        sockets = {label: socket.socket(sock.family, sock.type, fileno=sock.detach())
                   for label, sock in self.app.sockets.items() if label != "HTTP"}
        servers = []
        try:
            for listener in self.start_serving(sockets):
                listener.setblocking(1)
                server = worker_hub.http_server(listener, self.wsgi,
                                                self.cfg.worker_connections,
                                                spec.http_max_body(), self.accept_share)
                server.start()
                servers.append(server)
        except Exception:
            self.log.exception("%s failed to start", spec.name)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if spec.idle_spin > 0:
            worker_hub.spin_when_idle(spec.idle_spin)
        # Messages are not cyclic garbage; let the cyclic collector run rarely, and never
        # rescan what startup allocated, so it cannot pause the hub under load. So what a
        # connection, topic or channel leaves when it ends must not be cyclic garbage
        # either: reference counting frees it (tests/test_churn_memory.py).
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        gc.enable()
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
                worker_hub.sleep(0.05)
        finally:
            persisted = self.stop_serving()
        if persisted is False:
            sys.exit(UNPERSISTED_EXIT)

    def handle_exit(self, sig, frame):
        self.alive = False
        if self._stop is not None:
            self._stop.set()

    # SIGINT / SIGQUIT shut down as gracefully as SIGTERM: queues must reach disk.
    handle_quit = handle_exit

    def handle_usr1(self, sig, frame):
        # Reopening log files may block: not in a signal handler on the hub.
        worker_hub.spawn(super().handle_usr1, sig, frame)


class HttpWorker(DaemonWorker):
    """An HTTP worker: the spec's HTTP-worker app (nsqd's: http/gateway.py) on the HTTP
    port, reaching the core through the internal sockets; no state of its own to flush.
    On a stop it answers what it has in hand, while the core (stopped after it) still
    serves."""

    role = "http"
    def load_wsgi(self):
        try:
            self.wsgi = self.app.spec.build_http_worker_app()
        except StartupError as exc:
            self.app.spec.fatal(str(exc))
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def start_serving(self, sockets):
        for sock in sockets.values():     # the core's to serve
            sock.close()
        if self.app.connection_counts is not None:    # the HTTP port shared fairly
            self.accept_share = AcceptShare(self.app.connection_counts, self.app.http_slot)
        logging.getLogger("greensq").info("HTTP: worker %d of %d ready", self.app.http_slot + 1,
                                          self.app.spec.http_workers)
        return self.sockets

    def stop_serving(self):
        return self.app.spec.stop_http_worker()
