"""A topic's or channel's queue of ready messages: memory first, then disk.

Memory holds up to ``--mem-queue-size`` messages (NSQ's high water mark); beyond it
messages are encoded into the go-diskqueue backend. Ephemeral topics and channels have no
backend and, like NSQ's, drop what does not fit in memory.

With ``max_bytes`` (``--max-bytes-per-topic`` / ``--max-bytes-per-channel``) the disk
queue is bounded. Under the ``refuse`` policy the topic asks ``refuses`` before it
accepts a publish, so a batch is taken whole or not at all; messages already accepted
(requeued, timed out, handed over from the topic) are never refused. Under
``drop-oldest`` the oldest messages on disk make room for new ones. ``dropped`` counts
what a queue dropped, either way.

A disk write that fails refuses a publish (``put_many`` raises the ``OSError``), but
never loses a message nsqd has already accepted: one requeued, due again, or handed over
by the topic stays in memory past ``mem_limit`` instead (bounded by what is in flight,
deferred, or in one hand-over).
"""

import logging
from collections import deque
from itertools import islice

from greensq.services.shared.message import HEADER_SIZE, Message

log = logging.getLogger("greensq")


class MessageQueue:
    """Memory up to ``mem_limit``, then the disk queue ``backend`` (or nothing); with
    ``max_bytes``, a bound on the disk queue (refused, or ``drop_oldest``)."""

    durable = False

    def __init__(self, label, mem_limit, backend, max_bytes=0, drop_oldest=False):
        self.label = label
        self.mem_limit = mem_limit
        self.memory = deque()
        self.backend = backend
        self.max_bytes = max_bytes if backend is not None else 0
        self.drop_oldest = drop_oldest
        self.dropped = 0

    def __len__(self):
        return len(self.memory) + self.backend_depth

    @property
    def backend_depth(self):
        return self.backend.depth if self.backend is not None else 0

    @property
    def backend_bytes(self):
        return self.backend.bytes if self.backend is not None else 0

    def is_full(self):
        """True once the disk queue holds ``max_bytes`` or more."""
        return bool(self.max_bytes) and self.backend.bytes >= self.max_bytes

    def refuses(self, count, bytes_from):
        """True if storing ``count`` messages (``bytes_from(i)``: the size of their bodies
        from the i-th on) would take the disk queue past ``max_bytes`` (only what does not
        fit in memory goes to disk)."""
        room = self.mem_limit - len(self.memory)
        if not self.max_bytes or room >= count:
            return False
        first = max(0, room)
        incoming = (4 + HEADER_SIZE) * (count - first) + bytes_from(first)
        return self.backend.bytes + incoming > self.max_bytes

    def put(self, msg):
        """An accepted message: memory, else disk (else, if the write fails, memory)."""
        self.put_many([msg], accepted=True)

    def put_many(self, msgs, accepted=False):
        """Memory while it has room, the rest to disk: a failed write raises, or with
        ``accepted`` keeps the rest in memory."""
        room = max(0, self.mem_limit - len(self.memory))
        if room >= len(msgs):
            self.memory.extend(msgs)
            return
        self.memory.extend(msgs[:room])
        if self.backend is None:
            self.dropped += len(msgs) - room
            return
        rest = msgs[room:]
        try:
            self._to_disk([msg.encode() for msg in rest])
        except OSError as exc:
            if not accepted:
                raise
            log.error("%s: failed to write messages to backend - %s (%d kept in memory)",
                      self.label, exc, len(rest))
            self.memory.extend(rest)

    def _to_disk(self, records):
        if self.max_bytes and self.drop_oldest:
            records = self._make_room(records)
        self.backend.put_many(records)

    def _make_room(self, records):
        """drop-oldest: read away the oldest records on disk until ``records`` fit; if
        they cannot fit even alone, keep their newest part."""
        limit = self.max_bytes
        incoming = sum([4 + len(record) for record in records])
        while incoming > limit and records:
            incoming -= 4 + len(records[0])
            records = records[1:]
            self.dropped += 1
        backend = self.backend
        while backend.depth and backend.bytes + incoming > limit:
            excess = backend.bytes + incoming - limit
            oldest = max(1, int(excess // (backend.bytes / backend.depth)))
            self.dropped += len(backend.get_many(oldest))
        return records

    # What a queue is told about its messages' fate (a DurableQueue persists it).

    def when_stored(self, callback):
        """``callback(None)``: a put is stored once it returns (memory or a write)."""
        callback(None)

    def requeue(self, msg):
        """A message back to the queue (timed out, REQ without delay, consumer gone)."""
        self.put(msg)

    def defer(self, msg, delay):
        """A message going to the channel's deferred list: kept in memory only."""

    def undefer(self, msg):
        """A deferred message is due."""
        self.put(msg)

    def finish(self, msgs):
        """Messages FINished."""

    def flush(self):
        """End of the owner's turn."""

    def take(self, count):
        """Up to ``count`` messages, memory first, then the disk queue."""
        memory = self.memory
        if len(memory) >= count:
            return [memory.popleft() for _ in range(count)]
        taken = list(memory)
        memory.clear()
        if self.backend is not None and self.backend.depth:
            decoded, skipped = Message.decode_many(self.backend.get_many(count - len(taken)))
            taken.extend(decoded)
            if skipped:
                log.error("%s: skipped %d undecodable messages on disk", self.label, skipped)
        return taken

    def peek(self, count, max_bytes):
        """Up to ``count`` messages in the order ``take`` would give them, left in place;
        fewer once their bodies add up to ``max_bytes``."""
        msgs = []
        for msg in islice(self.memory, count):
            if max_bytes <= 0:
                return msgs
            msgs.append(msg)
            max_bytes -= len(msg.body)
        if len(msgs) < count and max_bytes > 0 and self.backend is not None \
                and self.backend.depth:
            decoded, _ = Message.decode_many(self.backend.peek(count - len(msgs), max_bytes))
            msgs.extend(decoded)
        return msgs

    def empty(self):
        self.memory.clear()
        if self.backend is not None:
            self.backend.empty()

    def delete(self):
        self.memory.clear()
        if self.backend is not None:
            self.backend.delete()

    def close(self, extra=()):
        """Shutdown: memory (and ``extra`` messages, e.g. in-flight ones) go to disk.
        False if some could not be written, or the queue's state synced: what was on
        disk before stays there, described or not by its metadata (the next start
        finds records past a stale write position)."""
        if self.backend is None:
            return True
        held = list(self.memory)
        held.extend(extra)
        self.memory.clear()
        return write_and_close(self.label, self.backend, held)


def write_and_close(label, backend, msgs):
    """Shutdown of a disk queue: ``msgs`` written to it, then synced and closed. False
    (with an error logged) if some could not be written or the queue not synced."""
    persisted = True
    if msgs:
        depth = backend.depth
        try:
            backend.put_many([msg.encode() for msg in msgs])
        except OSError as exc:
            lost = len(msgs) - (backend.depth - depth)
            log.error("%s: failed to write messages to backend at shutdown - %s;"
                      " %d messages lost", label, exc, lost)
            persisted = False
    try:
        backend.close()
    except OSError as exc:
        log.error("%s: failed to sync its disk queue at shutdown - %s", label, exc)
        persisted = False
    return persisted
