"""A topic's or channel's queue of ready messages: memory first, then disk.

Memory holds up to ``--mem-queue-size`` messages (NSQ's high water mark); beyond it
messages are encoded into the go-diskqueue backend. Ephemeral topics and channels have no
backend and, like NSQ's, drop what does not fit in memory.
"""

import logging
from collections import deque

from greensq.services.message import Message

log = logging.getLogger("greensq")


class MessageQueue:
    """Memory up to ``mem_limit``, then the disk queue ``backend`` (or nothing)."""

    durable = False

    def __init__(self, label, mem_limit, backend):
        self.label = label
        self.mem_limit = mem_limit
        self.memory = deque()
        self.backend = backend
        self.dropped = 0

    def __len__(self):
        return len(self.memory) + self.backend_depth

    @property
    def backend_depth(self):
        return self.backend.depth if self.backend is not None else 0

    def put(self, msg):
        if len(self.memory) < self.mem_limit:
            self.memory.append(msg)
        elif self.backend is not None:
            self.backend.put(msg.encode())
        else:
            self.dropped += 1

    def put_many(self, msgs):
        room = max(0, self.mem_limit - len(self.memory))
        if room >= len(msgs):
            self.memory.extend(msgs)
            return
        self.memory.extend(msgs[:room])
        if self.backend is not None:
            self.backend.put_many([msg.encode() for msg in msgs[room:]])
        else:
            self.dropped += len(msgs) - room

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

    def finish(self, msg):
        """A message FINished."""

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

    def empty(self):
        self.memory.clear()
        if self.backend is not None:
            self.backend.empty()

    def delete(self):
        self.memory.clear()
        if self.backend is not None:
            self.backend.delete()

    def close(self, extra=()):
        """Shutdown: memory (and ``extra`` messages, e.g. in-flight ones) go to disk."""
        if self.backend is None:
            return
        held = list(self.memory)
        held.extend(extra)
        self.memory.clear()
        if held:
            self.backend.put_many([msg.encode() for msg in held])
        self.backend.close()

