"""A replica's end of a primary's connection (the ``"  R1"`` magic on nsqd's TCP port):
the hello and what the replica answers it, then the primary's frames applied to its copy
and acknowledged (README, "The replication protocol").

The connection's greenlet holds the copy's lock while it serves, so a takeover (which
closes a silent primary's connection first) never runs beside it. Frames are applied as
they arrive; at the end of each read the replica acknowledges everything applied, once
it is stored: at once in the default mode, after the fsync of the parts written in
``--durable``.
"""

import logging
import time

import gevent
from gevent.event import AsyncResult

from greensq.services.nsqd import replication_wire as wire
from greensq.services.nsqd.replica_copies import Takeover, shut, valid_primary_id
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.tls import tls_required_mode
from greensq.services.shared.wire import StreamError

log = logging.getLogger("greensq")

HELLO_TIMEOUT = 10.0
READ_SIZE = 256 * 1024
TAKEN_PER_FRAME = 65536     # IDs per TAKEN frame


def serve_replica(nsqd, sock, address):
    """Serve one primary's connection (its magic read) until it ends."""
    if nsqd.exiting:
        return
    PrimaryConnection(nsqd, sock, address).serve()


class PrimaryConnection:
    """One connected primary, as its replica serves it."""

    def __init__(self, nsqd, sock, address):
        self.nsqd = nsqd
        self.sock = sock
        self.address = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        self.frames = FrameDecoder(max_size=wire.MAX_FRAME)
        self.sequence = 0
        self.copy = None

    def serve(self):
        try:
            refusal = self._refusal()
            if refusal:
                log.error("REPLICA(%s): %s", self.address, refusal)
                self._send(wire.frame(wire.REFUSED, refusal.encode()))
                return
            hello = self._hello()
            copy = self.nsqd.copies.copy_for(hello["primary_id"])
            stale = copy.connection
            if stale is not None:
                shut(stale)      # a connection of the same primary that did not end
            with copy.lock:
                self.copy = copy
                copy.connection = self.sock
                copy.last_heard = time.monotonic()
                try:
                    self._serve(copy, hello)
                finally:
                    if copy.connection is self.sock:
                        copy.connection = None
                    copy.active = None
                    copy.save()
        except (OSError, StreamError, wire.ProtocolError, gevent.Timeout) as exc:
            name = self.copy.name if self.copy is not None else self.address
            log.info("REPLICA(%s): connection ended - %s", name, exc or type(exc).__name__)

    def _refusal(self):
        opts = self.nsqd.opts
        if opts.auth_http_address or tls_required_mode(opts) != "false":
            return ("replication refused: this nsqd requires AUTH or TLS of its clients, "
                    "and replication connections have neither")
        return None

    def _hello(self):
        with gevent.Timeout(HELLO_TIMEOUT):
            kind, data = self._next_frame()
        if kind != wire.HELLO:
            raise wire.ProtocolError("expected a hello")
        hello = wire.read_json(data)
        if not valid_primary_id(hello.get("primary_id")) or not isinstance(
                hello.get("session"), str):
            raise wire.ProtocolError("hello without a primary ID and session")
        return hello

    # -- the session ------------------------------------------------------------------------

    def _serve(self, copy, hello):
        session = hello["session"]
        returning = copy.session is not None and session != copy.session
        if returning and copy.goodbye:
            copy.drop_generations()        # it shut down cleanly: it has all it had
        elif returning and copy.taken_at is None and copy.generations:
            Takeover(self.nsqd, copy).run()    # it crashed: the copy holds what it lost
        copy.info = {key: hello.get(key) for key in
                     ("broadcast_address", "hostname", "tcp_port", "http_port")}
        copy.info["remote_address"] = self.address
        copy.session = session
        copy.goodbye = False
        timeout = hello.get("failover_timeout")
        if isinstance(timeout, (int, float)) and timeout >= 1:
            copy.failover_timeout = float(timeout)
        copy.save()
        log.info("REPLICA(%s): primary connected (%s)", copy.name, copy.state)
        if copy.taken_at is not None:
            self._send_taken(copy)
        else:
            self._send(wire.json_frame(wire.WELCOME, {
                "state": "following" if copy.generations else "new", "taken": 0}))
        self._follow(copy)

    def _send_taken(self, copy):
        """What was taken over, then wait until the primary has dropped it."""
        ids = copy.taken_ids()
        count = len(ids) // 16
        self._send(wire.json_frame(wire.WELCOME, {"state": "taken_over", "taken": count}))
        step = TAKEN_PER_FRAME * 16
        for start in range(0, len(ids), step):
            self._send(wire.frame(wire.TAKEN, ids[start:start + step]))
        self._send(wire.frame(wire.TAKEN))
        kind, _ = self._next_frame()
        if kind != wire.RECONCILED:
            raise wire.ProtocolError("expected the primary to reconcile")
        log.info("REPLICA(%s): the primary dropped the %d messages taken over", copy.name,
                 count)
        copy.reconciled()

    def _follow(self, copy):
        """Apply frames until the connection ends, acknowledging each read's worth."""
        sock, frames = self.sock, self.frames
        while True:
            while (data := frames.next_sized()) is not None:
                self.sequence += 1
                self._apply(copy, data)
            self._acknowledge(copy)
            data = sock.recv(READ_SIZE)
            if not data:
                return
            copy.last_heard = time.monotonic()
            frames.feed(data)

    def _acknowledge(self, copy):
        active = copy.active
        parts = active.touched_parts() if active is not None else []
        if parts and self.nsqd.opts.durable:
            results = []
            for part in parts:
                result = AsyncResult()
                part.queue.when_stored(result.set)
                results.append(result)
            errors = [error for error in (result.get() for result in results) if error]
            if errors:
                text = f"replica cannot store the copy - {errors[0]}"
                self._send(wire.frame(wire.REFUSED, text.encode()))
                raise OSError(text)
        self._send(wire.sequence_frame(wire.ACK, self.sequence))

    def _apply(self, copy, data):
        kind, data = wire.split_frame(data)
        if kind == wire.PING:
            return
        if kind == wire.SNAPSHOT_BEGIN:
            copy.begin_generation()
            return
        if kind == wire.GOODBYE:
            copy.goodbye = True
            copy.save()
            return
        generation = copy.active
        if generation is None:
            raise wire.ProtocolError(f"frame {kind!r} before the copy began")
        if kind == wire.SNAPSHOT_END:
            copy.complete_generation()
            log.info("REPLICA(%s): copy complete (%d messages)", copy.name, len(generation))
            return
        topic, channel, at = wire.read_names(data)
        if kind == wire.DELETED:
            self._deleted(generation, topic, channel)
            return
        queue = generation.queue(topic, channel)
        if kind == wire.PUT:
            flags, defer_ms, records = wire.read_put(data, at)
            snapshot = bool(flags & wire.SNAPSHOT_PART)
            if records and (defer_ms or self._in_transit(generation, topic, channel)
                            or not self._put_records(queue, records, snapshot)):
                msgs = wire.read_records(records)
                if defer_ms:
                    for msg in msgs:
                        msg.defer_ms = defer_ms
                queue.put(msgs, snapshot)
                self._landed(generation, topic, channel, msgs)
        elif kind == wire.FINISHED:
            queue.finished(wire.read_ids(data, at))
        elif kind == wire.DELIVERED:
            queue.delivered(wire.read_ids(data, at))
        elif kind == wire.DEFERRED:
            flags, entries = wire.read_deferred(data, at)
            whole = bool(flags & wire.WHOLE_RECORDS)
            queue.defer(entries, whole)
            if whole:
                self._landed(generation, topic, channel, [msg for msg, _ in entries])
        elif kind == wire.HANDED_OVER:
            channels, ids = wire.read_handed_over(data, at)
            queue.handed_over(channels, ids)
        elif kind == wire.EMPTIED:
            queue.emptied()
        else:
            raise wire.ProtocolError(f"unknown frame {kind!r}")

    @staticmethod
    def _put_records(queue, records, snapshot):
        """The records stored as they came, if the copy can (else False)."""
        try:
            return queue.put_records(records, snapshot)
        except ValueError as exc:
            raise wire.ProtocolError(f"bad record - {exc}") from None

    @staticmethod
    def _in_transit(generation, topic, channel):
        """The topic's copy of a channel's copy has messages in transit (to channels)."""
        if channel is None:
            return False
        topic_queue = generation.queues.get((topic, None))
        return topic_queue is not None and bool(topic_queue.transit)

    @classmethod
    def _landed(cls, generation, topic, channel, msgs):
        """A channel's copy received messages: the topic's copy may have them in transit."""
        if cls._in_transit(generation, topic, channel):
            generation.queues[(topic, None)].landed(channel, msgs)

    @staticmethod
    def _deleted(generation, topic, channel):
        """A deleted channel's copy goes; a deleted topic's, with all its channels'."""
        for key in [key for key in generation.queues
                    if key[0] == topic and (channel is None or key[1] == channel)]:
            generation.queues.pop(key).delete()
        generation.dirty = {queue for queue in generation.dirty
                            if queue in generation.queues.values()}
        topic_queue = generation.queues.get((topic, None))
        if channel is not None and topic_queue is not None:
            topic_queue.channel_deleted(channel)

    # -- the socket ----------------------------------------------------------------------

    def _next_frame(self):
        while True:
            data = self.frames.next_sized()
            if data is not None:
                return wire.split_frame(data)
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise OSError("connection closed")
            self.frames.feed(chunk)

    def _send(self, data):
        self.sock.sendall(data)
