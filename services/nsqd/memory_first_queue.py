"""The default mode's queue (NSQ's): memory first, the overflow on disk.

Memory holds up to ``--mem-queue-size`` messages (NSQ's high water mark); beyond it
messages are encoded into the go-diskqueue ``overflow``. Ephemeral topics and channels
have no overflow and, like NSQ's, drop what does not fit in memory. In-flight and
deferred messages live in the channel's memory only: the queue has nothing to record
about them.

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

from greensq.services.nsqd.message_queue import MessageQueue
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.message import HEADER_SIZE, Message

log = logging.getLogger("greensq")


class MemoryFirstQueue(MessageQueue):
    """Memory up to ``mem_limit``, then the disk queue ``overflow`` (or, ephemeral,
    nothing); with ``max_bytes``, a bound on the disk queue (refused, or
    ``drop_oldest``)."""

    def __init__(self, label, mem_limit, overflow, max_bytes=0, drop_oldest=False):
        super().__init__(label, mem_limit)
        self.overflow = overflow
        self.max_bytes = max_bytes if overflow is not None else 0
        self.drop_oldest = drop_oldest

    @property
    def backend_depth(self):
        return self.overflow.depth if self.overflow is not None else 0

    @property
    def backend_bytes(self):
        return self.overflow.bytes if self.overflow is not None else 0

    def refuses(self, count, bytes_from):
        room = self.mem_limit - len(self.memory)
        if not self.max_bytes or room >= count:
            return False
        first = max(0, room)
        incoming = (4 + HEADER_SIZE) * (count - first) + bytes_from(first)
        return self.overflow.bytes + incoming > self.max_bytes

    def put_many(self, msgs, accepted=False):
        """Memory while it has room, the rest to disk."""
        room = max(0, self.mem_limit - len(self.memory))
        if room >= len(msgs):
            self.memory.extend(msgs)
            return
        self.memory.extend(msgs[:room])
        if self.overflow is None:
            self.dropped += len(msgs) - room
            return
        rest = msgs[room:]
        try:
            self._to_disk([msg.encode() for msg in rest])
        except OSError as exc:
            if not accepted:
                raise
            self._write_failed(exc, len(rest))
            self.memory.extend(rest)

    def put_records(self, records):
        """Written to disk as they are when ``put_many`` would write them all there:
        memory full, no bound on disk (ValueError if a record is malformed, OSError if
        the write fails)."""
        if len(self.memory) < self.mem_limit or self.max_bytes or self.overflow is None:
            return None
        return self.overflow.put_records(records)

    def _to_disk(self, records):
        if self.max_bytes and self.drop_oldest:
            records = self._make_room(records)
        self.overflow.put_many(records)

    def _make_room(self, records):
        """drop-oldest: read away the oldest records on disk until ``records`` fit; if
        they cannot fit even alone, keep their newest part."""
        limit = self.max_bytes
        incoming = sum([4 + len(record) for record in records])
        while incoming > limit and records:
            incoming -= 4 + len(records[0])
            records = records[1:]
            self.dropped += 1
        overflow = self.overflow
        while overflow.depth and overflow.bytes + incoming > limit:
            excess = overflow.bytes + incoming - limit
            oldest = max(1, int(excess // (overflow.bytes / overflow.depth)))
            self.dropped += len(overflow.get_many(oldest))
        return records

    def when_stored(self, callback):
        callback(None)

    def _take_from_disk(self, count, taken):
        if self.overflow is not None and self.overflow.depth:
            decoded, skipped = Message.decode_many(self.overflow.get_many(count - len(taken)))
            taken.extend(decoded)
            if skipped:
                log.error("%s: skipped %d undecodable messages on disk", self.label, skipped)

    def _peek_disk(self, count, max_bytes):
        if self.overflow is None or not self.overflow.depth:
            return []
        return Message.decode_many(self.overflow.peek(count, max_bytes))[0]

    # What becomes of taken messages: they are in the channel's memory meanwhile.

    def requeue(self, msg):
        self.put_many([msg], accepted=True)

    def defer(self, msg, delay):
        pass

    def undefer(self, msg):
        self.put_many([msg], accepted=True)

    def finish(self, msgs):
        pass

    def flush(self):
        pass

    def empty(self):
        self.memory.clear()
        if self.overflow is not None:
            self.overflow.empty()

    def delete(self):
        self.memory.clear()
        if self.overflow is not None:
            self.overflow.delete()

    def close(self, extra=()):
        """What memory holds and ``extra`` are written to the overflow (the next start
        finds records past a stale write position if the metadata could not be synced)."""
        if self.overflow is None:
            return True
        held = list(self.memory)
        held.extend(extra)
        self.memory.clear()
        return self._close_disk(self.overflow, held)


use_compiled(globals())
