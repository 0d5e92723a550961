"""Test support: raw protocol clients, a private network namespace, and the daemon harness.

The daemons run as processes through greensq.http.testing (the harness the bench scripts
use too); its names are imported here so that a test finds everything in one module:
``Daemon`` starts a daemon on port 0 with a temporary data directory and keeps its log,
``wait_until`` polls a condition against a deadline (nothing sleeps to synchronise).
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from greensq.http.testing import (  # noqa: F401 (the tests import them from here)
    CommandProcess, Daemon, StatsQueries, ToolProcess, children, free_port,
    kill_with_children, nsqadmin_daemon, nsqlookupd_daemon, ping, wait_until)

from greensq.services.shared.frames import FrameDecoder

FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = 0, 1, 2


def cannot_run(reason):
    """Skip a test that this machine cannot run, with a one-line reason; under CI, which
    runs as root with every package .ci/run installs, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


# The start of a script run as ``python -c SCRIPT SITE`` that imports greensq from an
# installed copy in the folder SITE only, forgetting the editable install of the checkout.
FROM_INSTALLED_COPY = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not type(f).__module__.startswith("__editable__")
                    and not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks
                     if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()
sys.path.insert(0, sys.argv[1])
"""


GO_NSQD_VARIABLE = "GREENSQ_GO_NSQD"


def go_nsqd_binary():
    """The Go nsqd 1.3.0 binary named by $GREENSQ_GO_NSQD (see shared/tools/build-go-nsq),
    or None: tests that compare with Go's nsqd skip without it."""
    path = os.environ.get(GO_NSQD_VARIABLE)
    return path if path and os.access(path, os.X_OK) else None


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
