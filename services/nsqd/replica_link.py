"""A primary's link to one replica: connect, learn what the replica took over, send the
whole state, then every change as it happens; acknowledgements back (README,
"Replication").

The link runs in its own greenlets: the one that connects and sends the state (asking
each topic and channel in its turn), a writer that sends whatever the queues enqueued
(``enqueue``, called in their owners' turns, never blocks) and the disk parts of the
state between them, and a reader of the replica's acknowledgements. Frames are numbered
in the order they are enqueued; an acknowledgement of number N answers every publish
that waits for a frame up to N (``when_acknowledged``).

The link is ``up`` once the replica has acknowledged the whole state; publishes wait for
it only then. It goes down on a connection error, a refusal, more than MAX_PENDING
bytes unacknowledged, or a frame unacknowledged for half the failover timeout; then
whatever waited for it is answered without it, the queues stop sending to it (the
epoch changes), and it connects again a second later.
"""

import logging
import time
from collections import deque

import gevent
from gevent import socket
from gevent.event import Event

from greensq.services.nsqd import replication_wire as wire
from greensq.services.nsqd.taken_ids import TakenIds
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.wire import StreamError

log = logging.getLogger("greensq")

CONNECTING, RECONCILING, SYNCING, UP, DOWN = (
    "connecting", "reconciling", "syncing", "up", "down")
CONNECT_TIMEOUT = 2.0
WELCOME_TIMEOUT = 300.0     # a replica may be taking over a big copy before it answers
RETRY_INTERVAL = 1.0
PING_INTERVAL = 1.0
CHECK_INTERVAL = 0.25
MAX_PENDING = 32 * 1024 * 1024     # bytes enqueued and not acknowledged
STREAM_WINDOW = 4 * 1024 * 1024    # disk parts of the state sent ahead of acknowledgements


class LinkFailed(Exception):
    """The link cannot go on; the message says why."""


def tcp_connect(address):
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                    timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


class ReplicaLink:
    """The link to the replica at ``address`` (see the module docstring)."""

    def __init__(self, replication, address):
        self.replication = replication
        self.address = address
        self.state = DOWN
        self.since = time.time()
        self.last_error = None
        self.epoch = 0
        self.sequence = 0           # frames enqueued on this connection
        self.acknowledged = 0
        self.out = []
        self.out_bytes = 0
        self.sent = deque()         # (last frame's number, bytes, time) of each write
        self.sent_bytes = 0
        self.waiters = deque()      # (frame number, callback)
        self.streams = deque()      # DiskStreams of the state being sent
        self.end_due = False        # the state is enqueued; SNAPSHOT_END follows the streams
        self.end_sequence = None
        self.lag = 0.0              # seconds the latest acknowledged write waited
        self.wake = Event()
        self.failed = Event()
        self.sock = None
        self.workers = []
        self.runner = None
        self.stopping = False

    @property
    def up(self):
        return self.state == UP

    def start(self):
        self.runner = gevent.spawn(self._run)
        return self

    # -- called by the queues, in their owners' turns ------------------------------------

    def enqueue(self, frames):
        """Send ``frames`` after everything enqueued before them."""
        self.out += frames
        self.sequence += len(frames)
        self.out_bytes += sum(map(len, frames)) if len(frames) > 1 else len(frames[0])
        self.wake.set()
        if self.out_bytes + self.sent_bytes > MAX_PENDING:
            self._fail(f"more than {MAX_PENDING >> 20} MiB not acknowledged")

    def when_acknowledged(self, callback):
        """``callback(None)`` once the replica has acknowledged every frame enqueued so
        far, or the link went down."""
        self.waiters.append((self.sequence, callback))

    def add_stream(self, stream):
        self.streams.append(stream)
        self.wake.set()

    # -- the connection ---------------------------------------------------------------------

    def _run(self):
        while not self.stopping:
            try:
                self._session()
            except (OSError, LinkFailed, wire.ProtocolError, StreamError, gevent.Timeout) as exc:
                self._down(str(exc) or type(exc).__name__)
            if not self.stopping:
                gevent.sleep(RETRY_INTERVAL)

    def _session(self):
        self.state = CONNECTING
        self.failed = Event()
        self.sock = sock = tcp_connect(self.address)
        frames = FrameDecoder(max_size=wire.MAX_FRAME)
        sock.sendall(wire.MAGIC_R1 + wire.json_frame(wire.HELLO, self.replication.hello()))
        with gevent.Timeout(WELCOME_TIMEOUT, LinkFailed("no welcome from the replica")):
            self._welcome(sock, frames)
        self._synchronize(sock, frames)

    def _welcome(self, sock, frames):
        """The replica's answer to the hello; what it took over is dropped here first."""
        kind, data = _read_frame(sock, frames)
        if kind == wire.REFUSED:
            raise LinkFailed(bytes(data).decode("utf-8", "replace"))
        if kind != wire.WELCOME:
            raise wire.ProtocolError("expected a welcome")
        welcome = wire.read_json(data)
        if welcome.get("state") == "taken_over":
            self.state = RECONCILING
            ids = bytearray()
            while True:
                kind, data = _read_frame(sock, frames)
                if kind != wire.TAKEN:
                    raise wire.ProtocolError("expected the IDs taken over")
                if not data:
                    break
                ids += data
            self.replication.drop_taken(self, TakenIds.from_bytes(ids))
            sock.sendall(wire.frame(wire.RECONCILED))

    def _synchronize(self, sock, frames):
        """Send the whole state, then every change, until the link fails."""
        self.epoch += 1
        self.sequence = self.acknowledged = 0
        self.end_sequence = None
        self.state = SYNCING
        self.since = time.time()
        holders = self.replication.holders()   # the state is taken from these now on
        self.enqueue([wire.frame(wire.SNAPSHOT_BEGIN)])
        self.workers = [gevent.spawn(self._read_acknowledgements, sock, frames),
                        gevent.spawn(self._write, sock)]
        log.info("REPLICA(%s): connected, sending the state of %d topics", self.address,
                 len(holders))
        for topic, channels in holders:
            if self.failed.is_set():
                break
            self.replication.send_state(self, topic, channels)
        self.end_due = True
        self.wake.set()
        while not self.failed.wait(CHECK_INTERVAL):
            self._check()
        raise LinkFailed(self.last_error or "failed")

    def _check(self):
        sent = self.sent
        if sent and time.monotonic() - sent[0][2] > self.replication.acknowledge_timeout:
            self._fail(f"no acknowledgement for {self.replication.acknowledge_timeout:g}s")

    def _write(self, sock):
        last = time.monotonic()
        while True:
            self.wake.clear()
            if self.out:
                data = b"".join(self.out)
                self.out, self.out_bytes = [], 0
                self.sent.append((self.sequence, len(data), time.monotonic()))
                self.sent_bytes += len(data)
                try:
                    sock.sendall(data)
                except OSError as exc:
                    self._fail(f"send failed - {exc}")
                    return
                last = time.monotonic()
                continue
            if self.streams and self.sent_bytes < STREAM_WINDOW:
                try:
                    state = self.streams[0].next_frames()
                except OSError as exc:
                    self._fail(f"cannot read the state's disk part - {exc}")
                    return
                if state is None:
                    self.streams.popleft().close()
                else:
                    self.enqueue(state)
                continue
            if self.end_due and not self.streams:
                self.end_due = False
                self.enqueue([wire.frame(wire.SNAPSHOT_END)])
                self.end_sequence = self.sequence
                continue
            if not self.wake.wait(max(0.0, last + PING_INTERVAL - time.monotonic())):
                self.enqueue([wire.frame(wire.PING)])

    def _read_acknowledgements(self, sock, frames):
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    raise LinkFailed("closed by the replica")
                frames.feed(data)
                while (frame := frames.next_sized()) is not None:
                    kind, rest = wire.split_frame(frame)
                    if kind == wire.ACK:
                        self._acknowledge(wire.read_sequence(rest))
                    elif kind == wire.REFUSED:
                        raise LinkFailed(bytes(rest).decode("utf-8", "replace"))
                    else:
                        raise wire.ProtocolError(f"unexpected frame {kind!r}")
        except (OSError, LinkFailed, wire.ProtocolError, StreamError) as exc:
            self._fail(str(exc) or type(exc).__name__)

    def _acknowledge(self, number):
        if number > self.sequence:
            raise wire.ProtocolError("acknowledgement of a frame not sent")
        self.acknowledged = number
        now = time.monotonic()
        sent = self.sent
        while sent and sent[0][0] <= number:
            _, size, at = sent.popleft()
            self.sent_bytes -= size
            self.lag = now - at
        waiters = self.waiters
        while waiters and waiters[0][0] <= number:
            waiters.popleft()[1](None)
        if self.end_sequence is not None and number >= self.end_sequence:
            self.end_sequence = None
            self.state = UP
            self.since = time.time()
            log.info("REPLICA(%s): up: the replica holds the whole state", self.address)
        if self.streams:
            self.wake.set()

    def _fail(self, reason):
        """The link cannot go on: stop sending to it now; ``_run`` tears it down."""
        if self.failed.is_set():
            return
        self.last_error = reason
        self.epoch += 1
        self.failed.set()
        self._release()

    def _release(self):
        """Answer whatever waits for this replica, without it."""
        waiters, self.waiters = self.waiters, deque()
        for _, callback in waiters:
            callback(None)

    def _down(self, reason):
        if self.state != DOWN:
            log.error("REPLICA(%s): down - %s", self.address, reason)
            self.since = time.time()
        self.state = DOWN
        self.last_error = reason
        self.epoch += 1
        self._release()
        for worker in self.workers:
            if worker is not gevent.getcurrent():
                worker.kill(block=False)
        self.workers = []
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        while self.streams:
            self.streams.popleft().close()
        self.out, self.out_bytes = [], 0
        self.sent.clear()
        self.sent_bytes = 0
        self.end_due = False
        self.end_sequence = None

    # -- shutdown ---------------------------------------------------------------------------

    def say_goodbye(self, timeout):
        """After a clean shutdown: tell the replica (and wait, up to ``timeout``, until it
        has it) so that it drops its copy when this nsqd comes back."""
        if self.state not in (SYNCING, UP) or self.failed.is_set():
            return
        done = Event()
        self.enqueue([wire.frame(wire.GOODBYE)])
        self.when_acknowledged(lambda _error: done.set())
        done.wait(timeout)

    def stop(self):
        self.stopping = True
        if self.runner is not None and self.runner is not gevent.getcurrent():
            self.runner.kill(block=True)
        self._down("nsqd is exiting")

    # -- the replica's answer before serving ---------------------------------------------

    def reconcile(self, timeout):
        """Connect once to learn what the replica took over, and drop it (at start,
        before serving); False if the replica could not be asked."""
        try:
            with gevent.Timeout(timeout, LinkFailed(f"no answer within {timeout:g}s")):
                sock = tcp_connect(self.address)
                try:
                    sock.sendall(wire.MAGIC_R1 + wire.json_frame(
                        wire.HELLO, self.replication.hello()))
                    self._welcome(sock, FrameDecoder(max_size=wire.MAX_FRAME))
                finally:
                    sock.close()
        except (OSError, LinkFailed, wire.ProtocolError, StreamError) as exc:
            log.error("REPLICA(%s): cannot learn what it took over - %s; serving without "
                      "knowing (what it took over may be delivered twice)", self.address, exc)
            return False
        finally:
            self.state = DOWN
        return True

    def stats(self):
        now = time.monotonic()
        oldest = self.sent[0][2] if self.sent else None
        return {
            "address": self.address,
            "state": self.state,
            "since": int(self.since),
            "lag_ms": round(self.lag * 1000, 3),
            "oldest_unacknowledged_ms": round((now - oldest) * 1000, 3) if oldest else 0,
            "pending_bytes": self.out_bytes + self.sent_bytes,
            "last_error": self.last_error or "",
        }


def _read_frame(sock, frames):
    while True:
        data = frames.next_sized()
        if data is not None:
            return wire.split_frame(data)
        chunk = sock.recv(65536)
        if not chunk:
            raise LinkFailed("closed by the replica")
        frames.feed(chunk)
