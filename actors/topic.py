"""The topic actor: takes published batches and copies every message to every channel.

While a topic has no channel, or is paused, it keeps what is published: in memory up to
``--mem-queue-size``, then in its own disk queue. Each channel gets its own ``Message``
objects, handed over as one mailbox message per batch.

A publish carries a ``Receipt``: the publisher answers OK only once the batch is in every
queue it belongs to (the topic's own, or every channel's), in memory or written to disk.
With bounded disk queues under the ``refuse`` policy, a batch that one of those queues
has no room for is refused whole (``QueueFull``) before any of them stores it.
"""

import gevent
from gevent.event import AsyncResult
from gevent.queue import Full

from greensq.actors.actor import MessageHolder, Receipt, StoreFailed, in_turn
from greensq.actors.channel import Channel
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.message import Message
from greensq.services.shared.names import is_ephemeral

DRAIN_BATCH = 512


class QueueFull(StoreFailed):
    """A publish refused because a bounded disk queue has no room for it."""


class Topic(MessageHolder):
    """Mailbox messages: pub, drain, pause, unpause, empty, delete, close."""

    # Publishers block once this many batches wait: backpressure, not unbounded memory.
    mailbox_size = 256

    def __init__(self, name, nsqd):
        super().__init__(f"topic {name}")
        self.name = name
        self.nsqd = nsqd
        self.ephemeral = is_ephemeral(name)
        opts = nsqd.opts
        self.queue = nsqd.make_queue(self.label, name, max_bytes=opts.max_bytes_per_topic)
        self.refuse_when_full = opts.max_bytes_policy == "refuse" and bool(
            opts.max_bytes_per_topic or opts.max_bytes_per_channel)
        self.refused_count = 0
        self.channels = {}
        self.paused = False
        self.deleted = False
        self.message_count = 0
        self.message_bytes = 0
        self._drain_requested = False

    # -- called by clients and HTTP handlers (get_channel and delete_channel in the
    # topic's turn: they change ``channels``) ------------------------------------------

    def publish(self, receipt, msgs):
        """Take a batch of new messages: at once when the topic is idle, else through the
        mailbox (blocking while it is full). ``receipt`` is done once they are stored."""
        self.call(self.on_pub, receipt, msgs)

    def publish_slices(self, receipt, batch):
        """``publish`` for a big batch's bodies (a ``SlicedBodies``), not stamped yet."""
        self.call(self.on_pub_slices, receipt, batch)

    @in_turn
    def get_channel(self, name):
        """The named channel, created (and started) if it does not exist yet."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(self, name, self.nsqd).start()
            self.nsqd.channel_created(self, channel)
            if len(self.channels) == 1:
                self.request_drain()
        return channel

    def delete_channel(self, name):
        """Remove a channel now and let its actor clean up; False if there is none. An
        ephemeral topic goes away with its last channel, once the turn is given back
        (deleting the topic waits for its turn)."""
        with self.turn:
            removed = self._remove_channel(name)
            orphaned = removed and self.ephemeral and not self.channels and not self.deleted
        if orphaned:
            self.nsqd.delete_topic(self.name)
        return removed

    # -- mailbox handlers -----------------------------------------------------------------

    def on_pub(self, receipt, msgs):
        if self.refuse_when_full and self._refuse(
                receipt, len(msgs), _bodies_bytes_from(msgs), msgs[0].defer_ms):
            return
        self._take(receipt, msgs)

    def on_pub_slices(self, receipt, batch):
        """A batch too big for one turn of the hub, stamped and stored a slice at a time
        with the hub visiting the other greenlets in between. The topic keeps its turn
        throughout, so the batch is refused whole or taken whole, in order, and its
        publisher gets one answer; a failed slice ends it, as a failed put ends Go's."""
        if self.refuse_when_full and self._refuse(receipt, len(batch), batch.bytes_from):
            return
        ids = self.nsqd.ids
        for bodies in batch.slices():
            if self.deleted or receipt.error is not None:
                break
            receipt.expect(1)
            self._take(receipt, Message.new_batch(ids, bodies))
            self.after_batch()
            gevent.sleep(0)
        receipt.done()

    def _take(self, receipt, msgs):
        """Store new messages: in the channels, or (no channel, paused, or a backlog to
        keep in order) in the topic's own queue."""
        flowing = self._flowing()
        if flowing and not self.depth:
            self._fan_out(msgs, receipt)
            receipt.done()              # the topic's own share: it keeps nothing
        elif not self.store(msgs, receipt):
            return
        self.message_count += len(msgs)
        self.message_bytes += (len(msgs[0].body) if len(msgs) == 1
                               else sum([len(msg.body) for msg in msgs]))
        if flowing and self.depth:
            self.on_drain()             # the batch waited behind a backlog

    def request_drain(self):
        """Called by a channel that has room: ask for more of the backlog (never blocks)."""
        if not self._drain_requested:
            try:
                self.mailbox.put_nowait((self.on_drain,))
                self._drain_requested = True
            except Full:
                pass  # the topic is busy with publishes and drains after each of them

    def on_drain(self):
        """Move held messages to the channels, a batch at a time, yielding between batches,
        for as long as some channel has room (each asks again when it has)."""
        self._drain_requested = False
        while self._flowing() and self.depth:
            if not any(channel.wants_more() for channel in self.channels.values()):
                return
            msgs = self.queue.take(DRAIN_BATCH)
            if not msgs:
                return
            if self.queue.durable:
                # The topic's records are done with once every channel stored its copy.
                receipt = Receipt(on_done=lambda error, msgs=msgs: gevent.spawn(
                    self.send, self.on_drained, msgs, error))
                self._fan_out(msgs, receipt, copy_all=True)
                receipt.done()
            else:
                self._fan_out(msgs)
            gevent.sleep(0)

    def on_drained(self, msgs, error):
        """Durable mode: the channels have (or, on a write error, have not) stored a
        drained batch."""
        if error is None:
            self.queue.finish(msgs)
            return
        for msg in msgs:
            self.queue.undefer(msg)   # back in memory, drained again later

    def on_unpause(self):
        super().on_unpause()
        self.on_drain()

    def on_empty(self):
        self.empty_queue()

    def on_delete(self):
        for name in list(self.channels):
            self._remove_channel(name)
        self.queue.delete()
        self.stop_loop()

    def on_close(self, done):
        """Shutdown: close every channel (each flushes to disk), then flush our own
        queue; ``done`` gets whether everything was written."""
        persisted = False
        try:
            results = []
            for channel in self.channels.values():
                result = AsyncResult()
                channel.send(channel.on_close, result)
                results.append(result)
            persisted = all([result.get() for result in results])
            persisted = self.queue.close() and persisted
        finally:
            self.stop_loop()
            done.set(persisted)

    # -- internals ----------------------------------------------------------------------

    def _refuse(self, receipt, count, bytes_from, deferred=False):
        """Fail a publish of ``count`` messages (``bytes_from(i)``: the size of their
        bodies from the i-th on) if a queue it would go to is full; True if refused."""
        if self._flowing() and not self.depth:
            # Deferred messages go to the channels' deferred heaps, not to disk.
            full = [f"channel {c.name} (--max-bytes-per-channel)" for c in self.channels.values()
                    if not deferred and c.queue.refuses(count, bytes_from)]
        else:
            full = (["the topic (--max-bytes-per-topic)"]
                    if self.queue.refuses(count, bytes_from) else [])
        if not full:
            return False
        self.refused_count += count
        receipt.fail(QueueFull(f"{self.name}: no room on disk for {full[0]}"))
        return True

    def _remove_channel(self, name):
        channel = self.channels.pop(name, None)
        if channel is None:
            return False
        channel.deleted = True
        self.nsqd.channel_deleted(self, channel)
        channel.ask(channel.on_delete)
        return True

    def _flowing(self):
        return bool(self.channels) and not self.paused

    def _fan_out(self, msgs, receipt=None, copy_all=False):
        """Every channel gets the batch, each its own copy (the first gets ``msgs``
        itself unless ``copy_all``); with a ``receipt``, each channel answers for its
        copy."""
        channels = list(self.channels.values())
        if receipt is not None:
            receipt.expect(len(channels))
        # Copies first: the first channel may deliver its batch at once (attempts + 1).
        copies = [[msg.copy() for msg in msgs] for _ in channels[0 if copy_all else 1:]]
        if not copy_all:
            copies.insert(0, msgs)
        for channel, batch in zip(channels, copies):
            channel.call(channel.on_put, receipt, batch)

    def after_batch(self):
        self.queue.flush()


def _bodies_bytes_from(msgs):
    """``bytes_from`` for a list of messages."""
    return lambda first: sum([len(msg.body) for msg in msgs[first:]])


use_compiled(globals())
