"""Run a greensq daemon under Gunicorn: an arbiter, one gevent core worker, and the HTTP
workers the spec asks for (nsqd's ``--http-workers``; none for the others).

The arbiter (this process) binds every listening socket (HTTP and the daemon's TCP
protocol port) and takes the data-directory lock before it forks, so a restarted worker
keeps the same ports (port 0 included), connections wait in the backlog during a restart,
and a second daemon on the same data directory fails at once. The core worker builds the
daemon's core, serves the Falcon app over the inherited HTTP socket and the TCP protocol
over the inherited TCP socket on the same gevent hub, and on SIGTERM, SIGINT or SIGQUIT
stops accepting, lets the core flush to disk, and exits.

With HTTP workers, the arbiter also binds the internal sockets the core serves them on
(Unix sockets in a directory only the daemon's user may enter, removed at exit), and the
HTTP workers serve the HTTP port. A worker that dies is replaced in its role: the core as
the core (it reloads from disk), an HTTP worker as an HTTP worker. A stop ends the HTTP
workers first, as what they have in hand needs the core, then the core.

Binding and locking are listeners.py, the worker is worker.py, and a daemon plugs in
through a small object (daemon_spec.py); the launcher knows nothing about NSQ.

The daemon exits 1, as a Go daemon does, when its worker cannot start (the worker has
logged the FATAL line; Gunicorn's own lines about it are left out) and when a shutdown
could not persist everything; else 0.

The arbiter stays small: it imports Gunicorn's arbiter and the daemon's flags, not gevent
nor the app (the worker imports those after the fork), and it freezes its objects out of
the garbage collector's reach just before forking, so the pages it shares with the
worker stay shared instead of being copied the first time either process collects.
"""

import gc
import os
import signal
import sys
import time

from greensq.http.unused_modules import defer_unused_modules

defer_unused_modules()

from gunicorn.app.base import BaseApplication  # noqa: E402 (after the deferral)
from gunicorn.arbiter import Arbiter  # noqa: E402
from gunicorn.errors import HaltServer  # noqa: E402

from greensq.http.accept_share import NOT_SERVING, ConnectionCounts  # noqa: E402
from greensq.http.listeners import (  # noqa: E402
    StartupError, bind_listener, bind_private_listeners, format_sockname, lock_directory,
    private_directory, remove_private_listeners)
from greensq.http.worker import STOP_SIGNALS, DaemonWorker, HttpWorker  # noqa: E402
from greensq.services.shared.goflags import parse_or_exit  # noqa: E402
from greensq.services.shared.golog import daemon_line, exit_fatal  # noqa: E402
from greensq.services.shared.version import version_banner  # noqa: E402


def daemon_main(spec_class, parse, argv=None):
    """A daemon's command: flags, ``--version``, then the arbiter."""
    opts = parse_or_exit(parse, sys.argv[1:] if argv is None else argv, spec_class.name)
    if opts.version:
        print(version_banner(spec_class.name))
        return
    run_daemon(spec_class(opts))


class DaemonApplication(BaseApplication):
    """Gunicorn application for one ``DaemonSpec``."""

    def __init__(self, spec):
        self.spec = spec
        self.sockets = {label: bind_listener(address)
                        for label, address in spec.listen_addresses().items() if address}
        spec.bound = {label: format_sockname(sock) for label, sock in self.sockets.items()}
        lock_path = spec.lock_path()
        self.lock_fd = lock_directory(lock_path, spec.name) if lock_path else None
        self.private_directory = None
        # Several HTTP workers share the HTTP port through a table of their connection
        # counts, one slot each (accept_share.py); http_slot is the next one forked's.
        self.connection_counts = (ConnectionCounts(spec.http_workers)
                                  if spec.http_workers > 1 else None)
        self.http_slot = None
        if spec.http_workers:
            self.private_directory = private_directory(
                f"greensq-{spec.name}-", lock_path or str(os.getpid()))
            internal = bind_private_listeners(
                {f"internal {label}": name
                 for label, name in spec.internal_listeners().items()},
                self.private_directory)
            self.sockets.update(internal)
            spec.internal = {label.partition(" ")[2]: sock.getsockname()
                             for label, sock in internal.items()}
        super().__init__()

    def load_config(self):
        settings = {
            "bind": [f"fd://{self.sockets['HTTP'].fileno()}"],
            "workers": 1 + self.spec.http_workers,
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

    def run(self):
        DaemonArbiter(self).run()


class DaemonArbiter(Arbiter):
    """Gunicorn's arbiter with a daemon's roles and exit status: one core worker and
    ``http_workers`` HTTP workers, each replaced in its role; the HTTP workers stopped
    before the core; exit status 1 once a worker failed to boot, or ended badly (non-zero
    status, or killed) while the arbiter was shutting down."""

    halting = False
    failed = False

    def spawn_worker(self):
        """The core first; then HTTP workers. The fork happens with the stop signals
        blocked, until the worker has its own handlers for them (worker.py): a stop the
        arbiter passes on at once is not lost in between."""
        roles = [worker.role for worker in self.WORKERS.values()]
        self.worker_class = HttpWorker if DaemonWorker.role in roles else DaemonWorker
        self.app.http_slot = None
        if self.worker_class is HttpWorker:
            taken = {worker.http_slot for worker in self.WORKERS.values()}
            self.app.http_slot = min(set(range(self.app.spec.http_workers)) - taken)
            if self.app.connection_counts is not None:    # not to be waited for, yet
                self.app.connection_counts.set(self.app.http_slot, NOT_SERVING)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = super().spawn_worker()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.WORKERS[pid].http_slot = self.app.http_slot
        return pid

    def spawn_workers(self):
        """Gunicorn's, without its random pause between forks (which spreads the start of
        identical workers): the HTTP workers need the core, started first."""
        for _ in range(self.num_workers - len(self.WORKERS)):
            self.spawn_worker()

    def handle_ttin(self):
        """The workers are the core and --http-workers: not to be added or removed
        (Gunicorn's SIGTTIN would fork a second core, its SIGTTOU stop the oldest)."""
        self.log.info("SIGTTIN and SIGTTOU are ignored: the workers are fixed")

    handle_ttou = handle_ttin

    def reap_workers(self):
        """Take the failures this arbiter handles itself before Gunicorn's reaping:
        the exit status is peeked at (WNOWAIT) and only those workers reaped here."""
        for pid in list(self.WORKERS):
            try:
                status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                continue
            if status is None:
                continue
            exited = status.si_code == os.CLD_EXITED
            boot_error = exited and status.si_status == self.WORKER_BOOT_ERROR
            if not boot_error and (not self.halting or (exited and status.si_status == 0)):
                continue        # Gunicorn's business: a crash is restarted
            os.waitpid(pid, 0)
            worker = self.WORKERS.pop(pid)
            worker.tmp.close()
            self.cfg.child_exit(self, worker)
            self.failed = True
            if not self.halting:
                raise HaltServer(None, 0)
        super().reap_workers()

    def stop(self, graceful=True):
        self.halting = True     # SIGTERM's halt, and SIGINT's and SIGQUIT's stop
        self.stop_http_workers(graceful)
        super().stop(graceful)
        if self.app.private_directory is not None:
            remove_private_listeners(self.app.private_directory)

    def stop_http_workers(self, graceful):
        """Stop the HTTP workers and wait for them (the graceful timeout at most): they
        answer the requests they have, which need the core."""
        pids = [pid for pid, worker in self.WORKERS.items() if worker.role == HttpWorker.role]
        for pid in pids:
            self.kill_worker(pid, signal.SIGTERM if graceful else signal.SIGQUIT)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while any(pid in self.WORKERS for pid in pids) and time.monotonic() < deadline:
            self.reap_workers()
            time.sleep(0.05)
        for pid in pids:
            if pid in self.WORKERS:
                self.kill_worker(pid, signal.SIGKILL)

    def halt(self, reason=None, exit_status=0):
        try:
            super().halt(reason, exit_status)
        except SystemExit:
            if self.failed:
                sys.exit(1)
            raise


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
        exit_fatal(daemon_line(f"[{spec.name}] ", "FATAL",
                               f"failed to instantiate {spec.name} - {exc}"))
    app.run()
