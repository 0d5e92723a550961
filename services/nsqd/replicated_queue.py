"""A topic's or channel's queue on a primary: the queue of nsqd's mode, and what changes
it sent to the replicas too (README, "Replication").

``NSQD.make_queue`` puts this in front of every durable topic's and channel's queue when
nsqd has replicas, so the topics and channels need no knowledge of replication: their
owner calls the queue in its own turn, and each change is encoded there, in the order it
happens, into the frames of every replica link this queue's state has been sent to
(``targets``: a link and the epoch of the connection that received it). Publishes are
answered once stored here and acknowledged by every such replica that is up
(``when_stored``).

What reaches a replica: messages put (and, for a topic, given back after a failed hand-over),
a channel's deliveries (attempts), FINs, deferrals; a topic's backlog handed to its
channels (which channels); emptied and deleted queues. A requeue needs nothing: the copy
still has the message.
"""

import time

from greensq.services.nsqd import replication_wire as wire
from greensq.services.nsqd.message_queue import MessageQueue


class ReplicatedQueue(MessageQueue):
    """``inner``, the queue of nsqd's mode, whose changes also go to the replica links in
    ``targets`` (see the module docstring)."""

    def __init__(self, inner, replication, topic, channel):
        # The owner reads these directly; ``memory`` is the inner queue's own deque.
        self.inner = inner
        self.label = inner.label
        self.mem_limit = inner.mem_limit
        self.memory = inner.memory
        self.durable = inner.durable
        self.max_bytes = inner.max_bytes
        self.drop_oldest = inner.drop_oldest
        self.replication = replication
        self.topic = topic
        self.channel = channel
        self.prefix = wire.names(topic, channel)
        self.targets = replication.targets_for_new_queue()   # link -> epoch
        if channel is not None and self.targets:
            self._send(self.announcement())

    def announcement(self):
        """A put of nothing: the replica knows of this channel even while it is empty (so
        a takeover creates it, and a topic's backlog reaches it there too)."""
        return [wire.frame(wire.PUT, self.prefix + wire.PUT_FIELDS.pack(0, 0))]

    def links(self):
        """The links this queue's changes go to now."""
        return [link for link, epoch in self.targets.items() if link.epoch == epoch]

    def _send(self, frames):
        for link in self.links():
            link.enqueue(frames)

    # -- sizes, delegated ---------------------------------------------------------------------

    def __len__(self):
        return len(self.inner)

    @property
    def backend_depth(self):
        return self.inner.backend_depth

    @property
    def backend_bytes(self):
        return self.inner.backend_bytes

    @property
    def dropped(self):
        return self.inner.dropped

    def is_full(self):
        return self.inner.is_full()

    def refuses(self, count, bytes_from):
        return self.inner.refuses(count, bytes_from)

    def peek(self, count, max_bytes):
        return self.inner.peek(count, max_bytes)

    def _take_from_disk(self, count, taken):
        self.inner._take_from_disk(count, taken)

    def _peek_disk(self, count, max_bytes):
        return self.inner._peek_disk(count, max_bytes)

    # -- changes ------------------------------------------------------------------------------

    def put_many(self, msgs, accepted=False):
        if not self.targets:
            self.inner.put_many(msgs, accepted)
            return
        frames = wire.put_frames(self.prefix, msgs)
        if accepted or not self._put_records(frames):
            self.inner.put_many(msgs, accepted)
        self._send(frames)

    def _put_records(self, frames):
        """A new batch straight to the inner queue's disk as the PUT frame encodes it,
        if it goes there whole (one frame, memory full): the records are encoded once
        for both. False if it must go as messages."""
        if len(frames) != 1:
            return False
        head = wire.HEADER.size + len(self.prefix) + wire.PUT_FIELDS.size
        return self.inner.put_records(memoryview(frames[0])[head:]) is not None

    def when_stored(self, callback):
        """Once stored here and acknowledged by every replica that is up."""
        awaited = [link for link in self.links() if link.up] if self.targets else ()
        if not awaited:
            self.inner.when_stored(callback)
            return
        join = _Join(len(awaited) + 1, callback)
        self.inner.when_stored(join.one)
        for link in awaited:
            link.when_acknowledged(join.one)

    def take(self, count):
        msgs = self.inner.take(count)
        if msgs and self.targets:
            links = self.links()
            if links:
                if self.channel is not None:
                    frame = wire.ids_frame(wire.DELIVERED, self.prefix, msgs)
                else:
                    frame = wire.handed_over_frame(
                        self.prefix, self.replication.channel_names(self.topic), msgs)
                for link in links:
                    link.enqueue([frame])
        return msgs

    def requeue(self, msg):
        self.inner.requeue(msg)

    def defer(self, msg, delay):
        self.inner.defer(msg, delay)
        if self.targets:
            # A message never delivered is new to the replica (a DPUB): all of it goes.
            flags = wire.WHOLE_RECORDS if not msg.attempts else 0
            due = time.time_ns() + int(delay * 1e9)
            self._send([wire.deferred_frame(self.prefix, [(msg, due)], flags)])

    def undefer(self, msg):
        self.inner.undefer(msg)
        if self.channel is None and self.targets:
            # A topic's hand-over failed (durable mode): the message is the topic's again.
            self._send(wire.put_frames(self.prefix, [msg]))

    def finish(self, msgs):
        self.inner.finish(msgs)
        if msgs and self.channel is not None and self.targets:
            self._send([wire.ids_frame(wire.FINISHED, self.prefix, msgs)])

    def dropped_for_replica(self, msgs):
        """``msgs`` were dropped because a replica took them over: the other replicas
        drop them too."""
        if msgs and self.targets:
            if self.channel is not None:
                self._send([wire.ids_frame(wire.FINISHED, self.prefix, msgs)])
            else:
                self._send([wire.handed_over_frame(self.prefix, (), msgs)])

    def flush(self):
        self.inner.flush()

    def empty(self):
        self.inner.empty()
        if self.targets:
            self._send([wire.frame(wire.EMPTIED, self.prefix)])

    def delete(self):
        self.inner.delete()
        if self.targets:
            self._send([wire.frame(wire.DELETED, self.prefix)])

    def close(self, extra=()):
        return self.inner.close(extra)


class _Join:
    """One callback once ``count`` parts have called ``one``, with the first error."""

    __slots__ = ("count", "error", "callback")

    def __init__(self, count, callback):
        self.count = count
        self.error = None
        self.callback = callback

    def one(self, error=None):
        if error is not None and self.error is None:
            self.error = error
        self.count -= 1
        if not self.count:
            self.callback(self.error)
