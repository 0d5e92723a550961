"""The queue a topic or channel keeps its messages in: the one interface both of nsqd's
queues implement.

- ``MemoryFirstQueue`` (``memory_first_queue.py``), the default mode, NSQ's: memory up to
  ``--mem-queue-size``, the overflow in a go-diskqueue; ephemeral topics and channels
  have no disk queue and drop what memory cannot hold.
- ``DurableQueue`` (``durable_queue.py``), ``--durable``: every message is in its disk
  queue of record from its publish until it is finished.

One actor owns a queue and calls it from its own greenlet; stats and metrics read its
sizes. The actor tells it the fate of every message it takes (requeued, deferred, due
again, finished): the default mode keeps in-flight and deferred messages in the
channel's memory only and has little to do with that, the durable queue writes it down.
"""

import logging
from abc import ABC, abstractmethod
from collections import deque
from itertools import islice

from greensq.services.shared.compiled import use_compiled

log = logging.getLogger("greensq")


class MessageQueue(ABC):
    """Messages ready for delivery, in order: ``memory`` (a deque, up to ``mem_limit``
    messages, more only when a failed write left accepted ones there), then disk.

    ``durable``: every message stays on disk until finished; the topic then hands its
    backlog over with a receipt and finishes it once every channel stored its copy.
    ``max_bytes`` (0: unbounded) bounds the disk queue's bytes under --max-bytes-policy,
    ``drop_oldest`` being its policy; ``dropped`` counts the messages the queue dropped
    (drop-oldest, or an ephemeral queue's overflow). ``label`` names it in log lines."""

    durable = False
    max_bytes = 0
    drop_oldest = False

    def __init__(self, label, mem_limit):
        self.label = label
        self.mem_limit = mem_limit
        self.memory = deque()
        self.dropped = 0

    # -- sizes ------------------------------------------------------------------------------

    def __len__(self):
        """Messages ready for delivery (NSQ's depth): in memory and on disk."""
        return len(self.memory) + self.backend_depth

    @property
    @abstractmethod
    def backend_depth(self):
        """Messages on disk not also held in memory (NSQ's ``backend_depth``)."""

    @property
    @abstractmethod
    def backend_bytes(self):
        """Bytes of the disk queue's records, length prefixes included: what
        ``max_bytes`` bounds."""

    def is_full(self):
        """True once a bounded disk queue holds ``max_bytes`` or more."""
        return bool(self.max_bytes) and self.backend_bytes >= self.max_bytes

    @abstractmethod
    def refuses(self, count, bytes_from):
        """True if storing ``count`` new messages would take the disk queue past
        ``max_bytes`` (``bytes_from(i)``: the bytes of their bodies from the i-th on, so
        that only what does not fit in memory is counted). Asked before a publish is
        accepted, so that a batch is taken whole or not at all."""

    # -- new messages -----------------------------------------------------------------------

    @abstractmethod
    def put_many(self, msgs, accepted=False):
        """Store a batch at the end of the queue. A new batch (not ``accepted``) is
        refused whole when a disk write fails: ``OSError`` is raised. An ``accepted``
        batch (one nsqd has acknowledged already: handed over by the topic) is never
        lost: what cannot be written stays in memory, past ``mem_limit``."""

    def put_records(self, records):
        """A new batch already encoded as a disk queue holds it (``[4-byte size]
        [message]`` each), stored as it is if this queue can: how many, or None when it
        must come as messages (``put_many``)."""
        return None

    @abstractmethod
    def when_stored(self, callback):
        """Call ``callback(error)`` once everything put so far is stored as an OK
        promises: in the default mode at once (a put is stored when it returns, in
        memory or written to the disk queue), in durable mode after the fsync that
        covers it (and the due times of deferred messages); ``error`` is the ``OSError``
        of a failed fsync, or None."""

    # -- taking and giving back -------------------------------------------------------------

    def take(self, count):
        """Up to ``count`` messages in order, memory first, then from disk. The owner
        then holds them until it tells their fate (requeue, defer, finish)."""
        memory = self.memory
        if len(memory) >= count:
            return [memory.popleft() for _ in range(count)]
        taken = list(memory)
        memory.clear()
        self._take_from_disk(count, taken)
        return taken

    @abstractmethod
    def _take_from_disk(self, count, taken):
        """Append messages read from disk to ``taken`` until it holds ``count``."""

    def peek(self, count, max_bytes):
        """Up to ``count`` messages in the order ``take`` would give them, left in place;
        no more once their bodies add up to ``max_bytes``."""
        msgs = []
        for msg in islice(self.memory, count):
            if max_bytes <= 0:
                return msgs
            msgs.append(msg)
            max_bytes -= len(msg.body)
        if len(msgs) < count and max_bytes > 0:
            msgs.extend(self._peek_disk(count - len(msgs), max_bytes))
        return msgs

    @abstractmethod
    def _peek_disk(self, count, max_bytes):
        """Up to ``count`` messages from disk, as ``peek`` says, left in place."""

    @abstractmethod
    def requeue(self, msg):
        """A taken message back in the queue (timed out, REQ without a delay, its
        consumer gone), attempts kept: as a put, in memory while it has room (so before
        what waits on disk)."""

    @abstractmethod
    def defer(self, msg, delay):
        """A message that the channel holds in its deferred list for ``delay`` seconds
        (DPUB, REQ with a delay); ``undefer`` brings it back when it is due."""

    @abstractmethod
    def undefer(self, msg):
        """A deferred message is due (or a batch the topic handed over came back): back
        in the queue, to be taken again."""

    @abstractmethod
    def finish(self, msgs):
        """Taken messages done with: FINished, dead-lettered, or (durable topic) stored
        by every channel."""

    @abstractmethod
    def flush(self):
        """End of the owner's turn: persist what the turn's fates changed."""

    # -- lifecycle --------------------------------------------------------------------------

    @abstractmethod
    def empty(self):
        """Drop every queued message, in memory and on disk (``OSError`` if the disk
        queue cannot be emptied)."""

    @abstractmethod
    def delete(self):
        """Drop everything and remove the queue's files."""

    @abstractmethod
    def close(self, extra=()):
        """Shutdown: what the queue holds and the ``extra`` messages the owner holds (a
        channel's in-flight and deferred ones) end up on disk, synced, and the disk queue
        is closed, so a queue opened on the same files delivers all of them (a durable
        queue: every message not finished). An ephemeral queue keeps nothing. False,
        logged, if something could not be written or synced: what was on disk before
        stays there."""

    # -- for the implementations ------------------------------------------------------------

    def _write_failed(self, error, count):
        """Log a failed write of ``count`` accepted messages that stay in memory."""
        log.error("%s: failed to write messages to backend - %s (%d kept in memory)",
                  self.label, error, count)

    def _close_disk(self, disk, msgs):
        """Shutdown of the disk queue ``disk``: ``msgs`` written to it, then synced and
        closed. False (with an error logged) if some could not be written or the queue
        not synced."""
        persisted = True
        if msgs:
            depth = disk.depth
            try:
                disk.put_many([msg.encode() for msg in msgs])
            except OSError as exc:
                lost = len(msgs) - (disk.depth - depth)
                log.error("%s: failed to write messages to backend at shutdown - %s;"
                          " %d messages lost", self.label, exc, lost)
                persisted = False
        try:
            disk.close()
        except OSError as exc:
            log.error("%s: failed to sync its disk queue at shutdown - %s", self.label, exc)
            persisted = False
        return persisted


use_compiled(globals())
