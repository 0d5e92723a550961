"""greensq's daemons and utilities as real processes, for test suites and benchmarks.

    from greensq.http.testing import Daemon, nsqlookupd_daemon

    lookupd = nsqlookupd_daemon(None).start()
    nsqd = Daemon("/tmp/data", [f"--lookupd-tcp-address={lookupd.tcp_address}"]).start()
    ...                       # nsqd.tcp_port, nsqd.http_port, nsqd.stats(), nsqd.log_text()
    nsqd.stop(), lookupd.stop()

A daemon starts on free loopback ports (port 0; the ports it chose are read from its
``listening on`` log lines), and ``start()`` returns once it answers HTTP. A thread
reads its log as it comes, so the pipe never fills, and keeps the lines for
``wait_for_log`` and ``log_text``. ``binary=`` runs another program with NSQ's flags in
place of greensq's launcher (Go's nsqd, to compare the two), ``python=`` greensq with
another interpreter (another checkout's virtualenv). ``ToolProcess`` runs a utility,
``CommandProcess`` any command, watched the same way. Nothing here sleeps to synchronise:
``wait_until`` polls a condition against a deadline.

It is a module of the package, not a file under tests/, so that greensq's tests, its
bench scripts and the test suites of applications that use NSQ all import it the same
way, with no path to set up (as falcon.testing comes with Falcon); unlike falcon.testing
it simulates nothing: every daemon is a process, reached over sockets. No daemon
imports it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

NSQD_MODULE = "greensq.http.nsqd_launcher"
NSQLOOKUPD_MODULE = "greensq.http.nsqlookupd_launcher"
NSQADMIN_MODULE = "greensq.http.nsqadmin_launcher"


def free_port():
    """A loopback port that was free a moment ago (bind to 0, read it, close); nothing
    listens on it, so connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port, timeout=2.0):
    """True if ``GET /ping`` on ``port`` answers 200 OK."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=timeout) as resp:
            return resp.status == 200 and resp.read() == b"OK"
    except (OSError, urllib.error.URLError):
        return False


def http_request(port, method, path, body=None, headers=None, host="127.0.0.1"):
    """``(status, headers, body bytes)`` of one request to ``host``:``port``."""
    url = f"http://{host}:{port}{path}"
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def wait_until(predicate, timeout=10.0, interval=0.02, message="condition", sleep=time.sleep):
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        sleep(interval)


def children(pid):
    """The PIDs of a process's children (a daemon's arbiter: its worker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def process_name(pid):
    """A process's name (``/proc/<pid>/comm``; greensq's workers name their role:
    ``nsqd-core``, ``nsqd-http``), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def kill_with_children(proc):
    """SIGKILL a ``subprocess.Popen`` and its children (a daemon's arbiter and worker),
    and reap it."""
    orphans = children(proc.pid)
    proc.kill()
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def port_of(address):
    """The port of a ``host:port`` address (0 until a daemon says which it chose)."""
    return int(address.rpartition(":")[2])


class WatchedProcess:
    """A child process whose log a thread reads line by line and keeps. The log is its
    stderr and stdout together, or with ``output_apart`` its stderr only, and its stdout
    is kept apart as bytes (``out``). Subclasses say what to run (``command``)."""

    output_apart = False

    def __init__(self, env=None, cwd=None, stdin=None, new_session=False):
        self.env = env                   # variables added to this process's environment
        self.cwd = cwd
        self.stdin = stdin               # bytes to feed it, or None for no input
        self.new_session = new_session   # its own process group, for os.killpg
        self.proc = None
        self.lines = []
        self.out = b""
        self._readers = []
        self._cond = threading.Condition()

    def command(self):
        raise NotImplementedError

    def start(self):
        self.lines, self.out = [], b""
        self.proc = subprocess.Popen(
            self.command(), cwd=self.cwd, env=dict(os.environ, **(self.env or {})),
            stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self.output_apart else subprocess.STDOUT,
            start_new_session=self.new_session)
        log = self.proc.stderr if self.output_apart else self.proc.stdout
        self._readers = [threading.Thread(target=self._read_log, args=(log,), daemon=True)]
        if self.output_apart:
            self._readers.append(threading.Thread(target=self._read_output, daemon=True))
        for reader in self._readers:
            reader.start()
        if self.stdin is not None:
            self.proc.stdin.write(self.stdin)
            self.proc.stdin.close()
        return self

    def _read_log(self, stream):
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()

    def _read_output(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            with self._cond:
                self.out += chunk

    def _log_complete(self):
        """True once the process has exited and its log has been read to the end."""
        return self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)

    def wait_for_log(self, pattern, timeout=10.0):
        """The first log line matching ``pattern`` (a regex match object)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._log_complete():
                    raise AssertionError(
                        f"no log line matching {pattern!r}; log:\n" + "\n".join(self.lines))
                self._cond.wait(min(remaining, 0.1))

    def log_text(self):
        with self._cond:
            return "\n".join(self.lines)

    def stdout_lines(self):
        with self._cond:
            return self.out.decode("utf-8", "replace").splitlines()

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Signal the process and wait for it, its output read; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout=30.0):
        """The exit status once the process ends (its output all read); after ``timeout``
        it is killed, and the wait fails."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.command()[0]} did not exit in time; log:\n"
                                 + self.log_text()) from None
        for reader in self._readers:
            reader.join(timeout)
        return self.proc.returncode

    def kill(self):
        """SIGKILL the process and its children (a daemon's worker: no chance to flush)."""
        kill_with_children(self.proc)


class StatsQueries:
    """nsqd's ``/stats`` through ``self.http(method, path)``, which returns ``(status,
    headers, body bytes)``: a daemon process's, or an nsqd run in the test process."""

    def stats(self, **params):
        query = "&".join(f"{k}={v}" for k, v in dict(format="json", **params).items())
        status, _, body = self.http("GET", f"/stats?{query}")
        assert status == 200, body
        return json.loads(body)

    def topic_stats(self, topic):
        for entry in self.stats()["topics"]:
            if entry["topic_name"] == topic:
                return entry
        return None

    def channel_stats(self, topic, channel):
        entry = self.topic_stats(topic)
        for ch in (entry or {}).get("channels", []):
            if ch["channel_name"] == channel:
                return ch
        return None


class Daemon(StatsQueries, WatchedProcess):
    """A daemon process (greensq's nsqd by default, ``module`` another launcher, ``binary``
    another program taking NSQ's flags) on loopback ports, port 0 unless told."""

    http_host = "127.0.0.1"    # where its HTTP port is reached

    def __init__(self, data_path, args=(), module=NSQD_MODULE, tcp_address="127.0.0.1:0",
                 http_address="127.0.0.1:0", env=None, data_path_flag=True,
                 new_session=False, binary=None, python=None):
        super().__init__(env=env, new_session=new_session)
        self.data_path = str(data_path) if data_path is not None else None
        self.data_path_flag = data_path_flag   # False for daemons without --data-path
        self.args = list(args)
        self.module = module
        self.binary = binary
        self.python = python or sys.executable
        self.tcp_address = tcp_address         # None for daemons without a TCP port
        self.http_address = http_address

    def command(self):
        program = [self.binary] if self.binary else [self.python, "-m", self.module]
        tcp = [f"--tcp-address={self.tcp_address}"] if self.tcp_address else []
        data_path = [f"--data-path={self.data_path}"] if self.data_path_flag else []
        return [*program, *tcp, f"--http-address={self.http_address}", *data_path,
                *self.args]

    def start(self, wait=True, timeout=30.0):
        """Start it. With ``wait``, return once it has said which ports it listens on
        (kept for its restarts) and answers HTTP; without, the ports are those its
        addresses name (0 for port 0)."""
        if self.data_path is not None:
            os.makedirs(self.data_path, exist_ok=True)
        self.tcp_port = port_of(self.tcp_address) if self.tcp_address else None
        self.http_port = port_of(self.http_address)
        super().start()
        if wait:
            try:
                self._wait_until_serving(time.monotonic() + timeout)
            except AssertionError:
                self.kill()   # nothing left running; its log is kept
                raise
        return self

    def _wait_until_serving(self, deadline):
        if self.tcp_address:
            self.tcp_port = int(self.wait_for_log(r"TCP: listening on .*:(\d+)",
                                                  deadline - time.monotonic()).group(1))
            self.tcp_address = f"127.0.0.1:{self.tcp_port}"
        self.http_port = int(self.wait_for_log(r"HTTP: listening on .*:(\d+)",
                                               deadline - time.monotonic()).group(1))
        self.http_address = f"127.0.0.1:{self.http_port}"
        self.wait_until_answering(deadline - time.monotonic())

    def answers(self):
        """True once ``GET /ping`` gets an HTTP answer, whatever its status (nsqd answers
        403 to plain HTTP when it requires TLS); fails if the process has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.command()[0]} exited with {self.proc.returncode}; "
                                 "log:\n" + self.log_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ping", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (OSError, urllib.error.URLError):
            return False

    def wait_until_answering(self, timeout=30.0, interval=0.01):
        """Poll ``answers()`` (a daemon started with ``wait=False`` on known ports)."""
        wait_until(self.answers, timeout, interval, f"{self.command()[0]} to answer HTTP")

    def restart(self):
        assert self.stop() == 0, self.log_text()
        return self.start()

    def pids(self):
        """Its processes by role: ``{"arbiter": pid, "worker": pid}`` for greensq's, and
        ``"http1"``, ``"http2"``... for nsqd's HTTP workers (``--http-workers``); or
        ``{name: pid}`` for a program of one process (Go's nsqd: ``{"nsqd": pid}``)."""
        workers = children(self.proc.pid)
        if not workers and self.binary:
            return {os.path.basename(self.binary): self.proc.pid}
        cores = [pid for pid in workers if not process_name(pid).endswith("-http")]
        assert len(cores) == 1, f"{self.proc.pid} has workers {workers}, not one core"
        pids = {"arbiter": self.proc.pid, "worker": cores[0]}
        http_workers = sorted(pid for pid in workers if pid != cores[0])
        pids.update((f"http{index}", pid) for index, pid in enumerate(http_workers, 1))
        return pids

    @property
    def worker_pid(self):
        """The process that serves: greensq's core worker, or a one-process program."""
        pids = self.pids()
        return pids.get("worker") or next(iter(pids.values()))

    @property
    def http_worker_pids(self):
        """The PIDs of nsqd's HTTP workers (none without ``--http-workers``)."""
        return [pid for role, pid in self.pids().items() if role.startswith("http")]

    def http(self, method, path, body=None, headers=None):
        """``(status, headers, body bytes)`` of one request."""
        return http_request(self.http_port, method, path, body, headers, self.http_host)


def nsqlookupd_daemon(data_path, args=(), **kwargs):
    """An (unstarted) nsqlookupd ``Daemon``: nsqlookupd has no --data-path."""
    return Daemon(data_path, args, module=NSQLOOKUPD_MODULE, data_path_flag=False, **kwargs)


def nsqadmin_daemon(args=(), **kwargs):
    """An (unstarted) nsqadmin ``Daemon``: HTTP only, no data directory."""
    return Daemon(None, args, module=NSQADMIN_MODULE, tcp_address=None, data_path_flag=False,
                  **kwargs)


class ToolProcess(WatchedProcess):
    """A utility (``python -m greensq.services.tools.NAME ARGS``): its stderr lines are
    its log, its stdout is kept apart (``out``, ``stdout_lines()``)."""

    output_apart = True

    def __init__(self, tool, args=(), stdin=None, cwd=None):
        super().__init__(cwd=cwd, stdin=stdin)
        self.module = f"greensq.services.tools.{tool}"
        self.args = list(args)

    def command(self):
        return [sys.executable, "-m", self.module, *self.args]


class CommandProcess(WatchedProcess):
    """Any command (a script, greensq-local in a network namespace, Gunicorn) run and
    watched as a utility is: stderr kept as log lines, stdout apart as bytes."""

    output_apart = True

    def __init__(self, command, cwd=None, stdin=None, env=None):
        super().__init__(env=env, cwd=cwd, stdin=stdin)
        self.argv = list(command)

    def command(self):
        return self.argv
