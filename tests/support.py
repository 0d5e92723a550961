"""Test support: real daemons in subprocesses, a raw V2 protocol client, and polling.

Daemons start on port 0 with a temporary data directory; their stderr is read by a
thread (so the pipe never fills) and kept for assertions. Nothing here sleeps to
synchronise: ``wait_until`` polls a condition against a deadline.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from greensq.services.shared.frames import FrameDecoder

FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = 0, 1, 2


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


def cannot_run(reason):
    """Skip a test that this machine cannot run, with a one-line reason; under CI, which
    runs as root with every package .ci/run installs, fail instead."""
    import pytest   # here: bench/ scripts import this module without pytest installed

    if os.environ.get("CI"):
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


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


class StatsQueries:
    """nsqd's ``/stats`` through ``self.http(method, path)``, which returns ``(status,
    headers, body bytes)``: a daemon process's, or the fast tier's in-process nsqd's."""

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


class Daemon(StatsQueries):
    """A greensq daemon process (``nsqd`` by default) on free loopback ports."""

    def __init__(self, data_path, args=(), module="greensq.http.nsqd_launcher",
                 tcp_address="127.0.0.1:0", http_address="127.0.0.1:0", env=None,
                 data_path_flag=True, new_session=False):
        self.data_path = str(data_path) if data_path is not None else None
        self.data_path_flag = data_path_flag   # False for daemons without --data-path
        self.args = list(args)
        self.module = module
        self.tcp_address = tcp_address         # None for daemons without a TCP port
        self.http_address = http_address
        self.env = env
        self.new_session = new_session   # its own process group, for os.killpg
        self.proc = None
        self.lines = []
        self._cond = threading.Condition()

    def command(self):
        data_path = [f"--data-path={self.data_path}"] if self.data_path_flag else []
        tcp = [f"--tcp-address={self.tcp_address}"] if self.tcp_address else []
        return [sys.executable, "-m", self.module, *tcp,
                f"--http-address={self.http_address}", *data_path, *self.args]

    def start(self, wait=True):
        if self.data_path is not None:
            os.makedirs(self.data_path, exist_ok=True)
        self.lines = []
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=self.new_session)
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        if wait:
            if self.tcp_address:
                self.tcp_port = int(self.wait_for_log(r"TCP: listening on .*:(\d+)").group(1))
                # Keep the same ports across restarts.
                self.tcp_address = f"127.0.0.1:{self.tcp_port}"
            self.http_port = int(self.wait_for_log(r"HTTP: listening on .*:(\d+)").group(1))
            self.http_address = f"127.0.0.1:{self.http_port}"
        return self

    def _pump(self, stream):
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()

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
                if remaining <= 0 or (self.proc.poll() is not None and not self._more()):
                    raise AssertionError(
                        f"no log line matching {pattern!r}; log:\n" + "\n".join(self.lines))
                self._cond.wait(min(remaining, 0.1))

    def _more(self):
        return False

    def log_text(self):
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Signal the arbiter and wait for it; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("daemon did not exit in time; log:\n" + self.log_text())

    def kill(self):
        """SIGKILL the arbiter and its worker (no chance to flush)."""
        worker_pids = children(self.proc.pid)
        self.proc.kill()
        for pid in worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def restart(self):
        assert self.stop() == 0, self.log_text()
        return self.start()

    # -- HTTP -------------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None):
        """``(status, headers, body bytes)`` of one request."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


GO_NSQD_VARIABLE = "GREENSQ_GO_NSQD"


def go_nsqd_binary():
    """The Go nsqd 1.3.0 binary named by $GREENSQ_GO_NSQD (see shared/tools/build-go-nsq),
    or None: tests that compare with Go's nsqd skip without it."""
    path = os.environ.get(GO_NSQD_VARIABLE)
    return path if path and os.access(path, os.X_OK) else None


class GoDaemon(Daemon):
    """Go's nsqd, with the same ports, data directory and log reading as greensq's."""

    def __init__(self, binary, data_path, args=(), **kwargs):
        super().__init__(data_path, args, **kwargs)
        self.binary = binary

    def command(self):
        return [self.binary, f"--tcp-address={self.tcp_address}",
                f"--http-address={self.http_address}", f"--data-path={self.data_path}",
                *self.args]


class ToolProcess(Daemon):
    """A utility (``python -m greensq.services.tools.NAME ARGS``): its stderr lines are
    kept like a daemon's log (``wait_for_log``), its stdout apart, as bytes (``out``)."""

    def __init__(self, tool, args=(), stdin=None, cwd=None):
        super().__init__(None, args, module=f"greensq.services.tools.{tool}")
        self.stdin = stdin       # bytes to feed, or None for no input
        self.cwd = cwd
        self.out = b""

    def command(self):
        return [sys.executable, "-m", self.module, *self.args]

    def start(self):
        self.lines, self.out = [], b""
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd,
            stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE)
        self._readers = [threading.Thread(target=self._pump, args=(self.proc.stderr,)),
                         threading.Thread(target=self._collect)]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        if self.stdin is not None:
            self.proc.stdin.write(self.stdin)
            self.proc.stdin.close()
        return self

    def _collect(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            with self._cond:
                self.out += chunk

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        status = super().stop(sig, timeout)
        for reader in self._readers:
            reader.join(timeout)
        return status

    def stdout_lines(self):
        with self._cond:
            return self.out.decode("utf-8", "replace").splitlines()

    def wait(self, timeout=30.0):
        """The exit status once the tool ends by itself (its output all read)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("tool did not exit in time; log:\n" + self.log_text())
        for reader in self._readers:
            reader.join(timeout)
        return status


class CommandProcess(ToolProcess):
    """Any command (a script, greensq-local in a namespace) run and watched as a tool is:
    stderr kept as log lines, stdout apart as bytes."""

    def __init__(self, command, cwd=None, stdin=None):
        super().__init__("", (), stdin, cwd)
        self.argv = list(command)

    def command(self):
        return self.argv


class NetNamespace:
    """A private network namespace with only ``lo``, up: what runs in it has a loopback of
    its own, so NSQ's fixed ports (4150, 4161, ...) are free there whatever the host runs.

    ``enter(command)`` is ``command`` run inside it. A process holds the namespace until
    ``close()``. Needs root, ``unshare``, ``nsenter`` and ``ip``: ``unavailable()`` says
    what is missing."""

    def __init__(self):
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo up && exec cat"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.holder.stdout.readline() != b"up\n":
            self.close()
            raise AssertionError("could not bring lo up in a new network namespace")

    @staticmethod
    def unavailable():
        if os.geteuid() != 0:
            return "needs root for a private network namespace"
        missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
        return f"no {missing[0]} command" if missing else None

    def enter(self, command):
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *command]

    def listening(self):
        """The ``host:port`` addresses TCP sockets listen on in the namespace."""
        out = subprocess.run(self.enter(["ss", "-ltnH"]), capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return {line.split()[3] for line in out.splitlines()}

    def close(self):
        self.holder.stdin.close()   # its ``cat`` ends, and the namespace with it
        self.holder.wait(timeout=30)


def children(pid):
    """The PIDs of a process's children (a daemon's arbiter: its worker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


class RawClient:
    """A raw TCP connection to a daemon's protocol port (or, with ``sock``, an already
    connected socket: the fast tier's socket pairs): the magic, and what arrives split
    into frames by the project's one frame decoder (``frames``: it checks every size and
    type, and holds what was received and not read yet)."""

    magic = b""

    def __init__(self, port=None, timeout=10.0, magic=None, sock=None):
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        else:
            sock.settimeout(timeout)
        self.sock = sock
        self.frames = FrameDecoder()
        magic = self.magic if magic is None else magic
        if magic:
            self.sock.sendall(magic)

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by server")
        self.frames.feed(data)

    @property
    def unread(self):
        """How many bytes arrived that no read took yet."""
        return self.frames.buffered

    def read_sized(self):
        """One ``[4-byte size][data]`` unit from the stream (an nsqlookupd reply)."""
        while (data := self.frames.next_sized()) is None:
            self._fill()
        return data

    def is_closed(self, timeout=5.0):
        """True once the server has closed the connection."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.frames.feed(data)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def receive_identify(conn):
    """As a stand-in server, read what a client sends first: its magic, ``IDENTIFY``
    and the sized body (V1 and V2 alike); returns those bytes."""
    data = b""
    while len(data) < 17 or len(data) < 17 + struct.unpack(">i", data[13:17])[0]:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before IDENTIFY")
        data += chunk
    return data


class V2Client(RawClient):
    """A minimal raw NSQ V2 client for protocol tests."""

    magic = b"  V2"

    def command(self, line, body=None):
        data = line.encode() + b"\n" if isinstance(line, str) else line + b"\n"
        if body is not None:
            data += struct.pack(">i", len(body)) + body
        self.sock.sendall(data)

    def identify(self, **fields):
        self.command("IDENTIFY", json.dumps(fields).encode())
        kind, data = self.read_frame()
        assert kind == FRAME_RESPONSE, data
        return json.loads(data) if fields.get("feature_negotiation") else data

    def pub(self, topic, body):
        self.command(f"PUB {topic}", body)
        return self.read_frame()

    def mpub(self, topic, bodies):
        payload = struct.pack(">i", len(bodies)) + b"".join(
            struct.pack(">i", len(b)) + b for b in bodies)
        self.command(f"MPUB {topic}", payload)
        return self.read_frame()

    def sub(self, topic, channel, rdy=None):
        self.command(f"SUB {topic} {channel}")
        frame = self.read_frame()
        assert frame == (FRAME_RESPONSE, b"OK"), frame
        if rdy is not None:
            self.command(f"RDY {rdy}")

    def read_frame(self, skip_heartbeats=True):
        """``(frame_type, data)``; heartbeats are answered and skipped."""
        while True:
            frame = self.received_frame(skip_heartbeats)
            if frame is not None:
                return frame
            self._fill()

    def received_frame(self, skip_heartbeats=True):
        """The next frame among those already received, or None; heartbeats are
        answered and skipped."""
        while (frame := self.frames.next_frame()) is not None:
            if skip_heartbeats and frame == (FRAME_RESPONSE, b"_heartbeat_"):
                self.command("NOP")
                continue
            return frame
        return None

    def read_message(self):
        kind, data = self.read_frame()
        assert kind == FRAME_MESSAGE, (kind, data)
        timestamp, attempts, msg_id = struct.unpack(">qH16s", data[:26])
        return Message(msg_id, attempts, timestamp, data[26:])

def consume_expected(port, topic, channel, expected, timeout=60):
    """Subscribe and FIN until every body in ``expected`` has arrived (duplicates and
    other messages are fine); fails naming how many never came."""
    client = V2Client(port)
    client.sub(topic, channel, rdy=500)
    missing = set(expected)

    def more():
        try:
            kind, data = client.read_frame()
        except socket.timeout:
            return False
        if kind == FRAME_MESSAGE:
            missing.discard(data[26:])
            client.command(b"FIN " + data[10:26])
        return not missing

    client.sock.settimeout(1.0)
    try:
        wait_until(more, timeout=timeout, interval=0, message="every expected message")
    except AssertionError:
        raise AssertionError(f"{len(missing)} of {len(expected)} expected messages never "
                             f"came, e.g. {sorted(missing)[:5]}") from None
    finally:
        client.close()


class Message:
    def __init__(self, msg_id, attempts, timestamp, body):
        self.id, self.attempts, self.timestamp, self.body = msg_id, attempts, timestamp, body

    def __repr__(self):
        return f"Message({self.id!r}, attempts={self.attempts}, body={self.body!r})"


# -- nsqlookupd ----------------------------------------------------------------------------

NSQLOOKUPD_MODULE = "greensq.http.nsqlookupd_launcher"


def nsqlookupd_daemon(data_path, args=(), **kwargs):
    """An (unstarted) nsqlookupd Daemon: nsqlookupd has no --data-path."""
    return Daemon(data_path, args, module=NSQLOOKUPD_MODULE, data_path_flag=False, **kwargs)


class V1Client(RawClient):
    """A minimal raw nsqlookupd V1 client: every reply is a 4-byte size and the data."""

    magic = b"  V1"

    def read_response(self):
        return self.read_sized()

    def command(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self.read_response()

    def identify(self, **fields):
        """IDENTIFY with nsqd-like defaults overridden by ``fields``; the parsed reply."""
        info = {"broadcast_address": "127.0.0.1", "hostname": "test-host", "tcp_port": 4150,
                "http_port": 4151, "version": "1.3.0"}
        info.update(fields)
        body = json.dumps(info).encode()
        self.sock.sendall(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
        return json.loads(self.read_response())


# -- nsqadmin -----------------------------------------------------------------------------

NSQADMIN_MODULE = "greensq.http.nsqadmin_launcher"


def nsqadmin_daemon(args=(), **kwargs):
    """An (unstarted) nsqadmin Daemon: HTTP only, no data directory."""
    return Daemon(None, args, module=NSQADMIN_MODULE, tcp_address=None, data_path_flag=False,
                  **kwargs)


# -- greensq.client tests ------------------------------------------------------------------

def gevent_wait_until(predicate, timeout=10.0, interval=0.01, message="condition"):
    """``wait_until`` for tests that run greenlets in the pytest process (greensq.client):
    polls against a deadline but yields to gevent's hub between checks, where
    ``time.sleep`` would block the hub and starve the greenlets being waited on."""
    import gevent

    return wait_until(predicate, timeout, interval, message, sleep=gevent.sleep)


def run_client_script(script, config, timeout=30, context=""):
    """Run a third-party client script (see client_scripts.py) in its own process and
    return its JSON report, once it exited cleanly and reported no error."""
    proc = subprocess.run([sys.executable, str(script), json.dumps(config)],
                          capture_output=True, timeout=timeout)
    stderr = proc.stderr.decode(errors="replace")[-4000:]
    assert proc.returncode == 0, stderr
    out = json.loads(proc.stdout)
    assert out["error"] is None, (out, stderr, context)
    return out
