"""The channel actor: one consumer group's queue of a topic's messages.

A channel holds messages in memory up to ``--mem-queue-size`` and the rest in its own disk
queue; it hands them to subscribed clients in proportion to their free RDY, tracks each
delivered message in flight until FIN, REQ or timeout, and keeps requeued-with-delay and
DPUB messages in a deferred heap. It runs as its own greenlet, so a paused or slow channel
never holds up its topic or its sibling channels.

With ``--e2e-processing-latency-percentile`` it records each FINished message's latency
(services/shared/latency.py). With a max-attempts limit (``--max-attempts`` or the channel's own,
set over HTTP) a message that would be delivered once more than allowed goes to the
dead-letter topic instead (actors/dead_letters.py).
"""

import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict

from greensq.actors.actor import MessageHolder, Refused, StoreFailed, in_turn
from greensq.actors.dead_letters import dead_letter_topic, envelope, is_dead_letter_topic
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.latency import LatencyWindow
from greensq.services.shared.message import MAX_ATTEMPTS_LIMIT
from greensq.services.shared.names import is_ephemeral
from greensq.services.shared.wire import ClientError

log = logging.getLogger("greensq")
now = time.monotonic


class Consumer:
    """One client's subscription, as the channel sees it.

    The channel owns and updates every field but ``client``; the client and the stats
    read them. ``ready_count`` is the client's RDY; the channel keeps ``in_flight_count``
    at or below it.
    """

    __slots__ = ("client", "ready_count", "in_flight_count", "message_count",
                 "finish_count", "requeue_count", "closing")

    def __init__(self, client):
        self.client = client
        self.ready_count = 0
        self.in_flight_count = 0
        self.message_count = 0
        self.finish_count = 0
        self.requeue_count = 0
        self.closing = False

    @property
    def free(self):
        return 0 if self.closing else self.ready_count - self.in_flight_count


class Channel(MessageHolder):
    """Mailbox messages: put, sub, unsub, rdy, fin, req, touch, cls, pause, unpause,
    empty, delete, close."""

    def __init__(self, topic, name, nsqd):
        super().__init__(f"channel {topic.name}:{name}")
        self.topic = topic
        self.topic_name = topic.name
        self.name = name
        self.nsqd = nsqd
        self.ephemeral = is_ephemeral(name)
        opts = nsqd.opts
        self.queue = nsqd.make_queue(self.label, topic.name, name, on_due=self._defer,
                                     max_bytes=opts.max_bytes_per_channel)
        self.latency = (LatencyWindow(opts.e2e_processing_latency_window_time,
                                      opts.e2e_processing_latency_percentile)
                        if opts.e2e_processing_latency_percentile else None)
        self.max_attempts_override = None   # this channel's own limit, set over HTTP
        self.max_attempts = self._max_attempts()
        self.dead_letter_count = 0
        self.in_flight = {}
        self.timeout_tables = {}      # msg timeout (s) -> OrderedDict(id -> msg), by deadline
        self.deferred = []            # heap of (due, seq, msg)
        self._seq = itertools.count()
        self.consumers = []
        self.client_count = 0         # kept by attach / detach, ahead of the mailbox
        self.paused = False
        self.deleted = False
        self.message_count = 0
        self.requeue_count = 0
        self.timeout_count = 0
        self._rotation = 0

    # -- called by a client's greenlet, in the channel's turn --------------------------

    @in_turn
    def attach(self, consumer):
        """Count a new subscriber at once (for limits and ephemeral lifetime); it joins
        the consumers after the messages already sent to the channel."""
        self.client_count += 1
        self.send(self.on_sub, consumer)

    def detach(self, consumer):
        """Forget a subscriber, after the FINs it sent (its in-flight messages are then
        requeued); an ephemeral channel goes away with its last one. The topic's turn
        is taken only after the channel's is given back: a topic holds its own while it
        waits for a channel, never the other way round."""
        with self.turn:
            self.client_count -= 1
            self.send(self.on_unsub, consumer)
            last = self.ephemeral and self.client_count <= 0 and not self.deleted
        if last:
            self.topic.delete_channel(self.name)


    # -- mailbox handlers -----------------------------------------------------------

    def on_put(self, receipt, msgs):
        """A batch from the topic; with a ``receipt`` the sender (a publisher, or the
        topic draining its backlog in durable mode) waits until it is stored."""
        if self.store(msgs, receipt):
            self.message_count += len(msgs)

    def place(self, msgs, accepted=False):
        """Published messages go to the queue, or deferred (DPUB) to the deferred list."""
        if not msgs[0].defer_ms:
            self.queue.put_many(msgs, accepted)
            return
        for msg in msgs:
            delay = msg.defer_ms / 1000.0
            msg.defer_ms = 0
            self.queue.defer(msg, delay)
            self._defer(msg, delay)

    def refuse(self, message):
        """A deleted channel no longer holds the topic's messages: a publish waiting on
        its copy is not failed for it."""
        if message[0] == self.on_put and message[1] is not None:
            message[1].done()
        else:
            super().refuse(message)

    def on_sub(self, consumer):
        self.consumers.append(consumer)

    def on_unsub(self, consumer):
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        orphans = [msg for msg in self.in_flight.values() if msg.owner is consumer]
        for msg in orphans:
            self._take_in_flight(msg)
            self.queue.requeue(msg)
        consumer.in_flight_count = 0

    def on_rdy(self, consumer, count):
        consumer.ready_count = count

    def on_cls(self, consumer):
        consumer.closing = True
        consumer.ready_count = 0  # CLS forces RDY 0, as stats show

    def on_fin(self, consumer, ids):
        finished = self._take_owned(consumer, ids, "FIN", "E_FIN_FAILED")
        self.queue.finish(finished)
        consumer.finish_count += len(finished)
        if self.latency is not None and finished:
            self.latency.record(finished)

    def on_req(self, consumer, msg_id, delay):
        msg = self._owned_in_flight(consumer, msg_id, "REQ", "E_REQ_FAILED")
        if msg is None:
            return
        self._take_in_flight(msg)
        consumer.requeue_count += 1
        self.requeue_count += 1
        if delay > 0:
            self.queue.defer(msg, delay)
            self._defer(msg, delay)
        else:
            self.queue.requeue(msg)

    def on_touch(self, consumer, msg_id, msg_timeout):
        msg = self._owned_in_flight(consumer, msg_id, "TOUCH", "E_TOUCH_FAILED")
        if msg is None:
            return
        max_deadline = msg.delivered_at + self.nsqd.opts.max_msg_timeout
        msg.deadline = min(now() + msg_timeout, max_deadline)
        msg.timeout_bucket.move_to_end(msg.id)

    def on_set_max_attempts(self, limit):
        """This channel's own limit (0: never dead-letter), or None to follow
        ``--max-attempts`` again."""
        self.max_attempts_override = limit
        self.max_attempts = self._max_attempts()
        self.nsqd.metadata_changed()

    def metadata(self):
        """The channel's entry in ``nsqd.dat``: Go's name and paused, and greensq's own
        max-attempts limit when one is set (Go nsqd ignores a key it does not know)."""
        entry = {"name": self.name, "paused": self.paused}
        if self.max_attempts_override is not None:
            entry["max_attempts"] = self.max_attempts_override
        return entry

    def restore_max_attempts(self, limit):
        """The limit recorded in nsqd.dat, if it is one (at start, before any delivery)."""
        if (isinstance(limit, int) and not isinstance(limit, bool)
                and 0 <= limit <= MAX_ATTEMPTS_LIMIT):
            self.max_attempts_override = limit
            self.max_attempts = self._max_attempts()

    def _max_attempts(self):
        if self.max_attempts_override is not None:
            return self.max_attempts_override
        opts = self.nsqd.opts
        if is_dead_letter_topic(self.topic_name, opts.dead_letter_topic_suffix):
            return 0
        return opts.max_attempts

    def on_peek(self, count, max_bytes, out):
        """Up to ``count`` queued messages (memory, then disk) into ``out``, left queued."""
        out.extend(self.queue.peek(count, max_bytes))

    def on_empty(self):
        """Drop every queued, in-flight and deferred message, as NSQ's channel empty does."""
        self.in_flight.clear()
        self.timeout_tables.clear()
        self.deferred.clear()
        for consumer in self.consumers:
            consumer.in_flight_count = 0
        self.empty_queue()

    def on_delete(self):
        """Close every subscriber and remove the channel's disk queue."""
        for consumer in list(self.consumers):
            consumer.client.close()
        self.queue.delete()
        self.stop_loop()

    def on_close(self, done):
        """Shutdown: everything the channel holds goes to its disk queue (ephemeral
        channels have none and lose it, as in NSQ); ``done`` gets whether it all was
        written."""
        persisted = False
        try:
            held = list(self.in_flight.values())
            held.extend(entry[2] for entry in self.deferred)
            persisted = self.queue.close(held)
        finally:
            self.stop_loop()
            done.set(persisted)

    # -- the loop's timed work --------------------------------------------------------

    def wakeup_in(self):
        due = [entry[0] for entry in (self.deferred[:1])]
        for table in self.timeout_tables.values():
            if table:
                due.append(next(iter(table.values())).deadline)
        if not due:
            return None
        return max(0.0, min(due) - now())

    def after_batch(self):
        current = now()
        if self.timeout_tables:
            self._expire_in_flight(current)
        if self.deferred:
            self._release_deferred(current)
        if not self.paused and self.consumers:
            self._dispatch()
        if self.topic.depth and self.wants_more():
            self.topic.request_drain()
        self.queue.flush()

    def wants_more(self):
        """True while memory is under half full (and, under the refuse policy, the disk
        queue is not full). The topic hands over its backlog only then, so a backlog
        waits in one disk queue instead of being copied to another."""
        queue = self.queue
        if queue.max_bytes and not queue.drop_oldest and queue.is_full():
            return False
        return len(queue.memory) < max(1, queue.mem_limit // 2)

    # -- internals --------------------------------------------------------------------

    def _defer(self, msg, delay):
        heapq.heappush(self.deferred, (now() + delay, next(self._seq), msg))

    def _release_deferred(self, current):
        deferred = self.deferred
        while deferred and deferred[0][0] <= current:
            self.queue.undefer(heapq.heappop(deferred)[2])

    def _expire_in_flight(self, current):
        for table in self.timeout_tables.values():
            while table:
                msg = next(iter(table.values()))
                if msg.deadline > current:
                    break
                self._take_in_flight(msg)
                self.timeout_count += 1
                self.queue.requeue(msg)

    def _owned_in_flight(self, consumer, msg_id, verb, code):
        msg = self.in_flight.get(msg_id)
        if msg is None:
            reason = "ID not in flight"
        elif msg.owner is not consumer:
            reason = "client does not own message"
        else:
            return msg
        consumer.client.send_error(
            ClientError(code, f"{verb} {msg_id.decode('latin-1')} failed {reason}"))
        return None

    def _take_owned(self, consumer, ids, verb, code):
        """The messages of ``ids`` that ``consumer`` has in flight, taken out of flight (as
        ``_take_in_flight`` does, inline: this runs for every FIN); the others get an
        error frame."""
        in_flight = self.in_flight
        taken = []
        for msg_id in ids:
            msg = in_flight.get(msg_id)
            if msg is None or msg.owner is not consumer:
                self._owned_in_flight(consumer, msg_id, verb, code)
                continue
            del in_flight[msg_id]
            del msg.timeout_bucket[msg_id]
            msg.timeout_bucket = msg.owner = None
            taken.append(msg)
        consumer.in_flight_count -= len(taken)
        return taken

    def _take_in_flight(self, msg):
        del self.in_flight[msg.id]
        del msg.timeout_bucket[msg.id]
        msg.timeout_bucket = None
        msg.owner.in_flight_count -= 1
        msg.owner = None

    def _dispatch(self):
        """Hand ready messages to consumers in proportion to their free RDY."""
        consumers = self.consumers
        self._rotation = (self._rotation + 1) % len(consumers)
        order = consumers[self._rotation:] + consumers[:self._rotation]
        while True:
            ready = [c for c in order if c.free > 0]
            pending = self.depth
            if not ready or not pending:
                return
            total_free = sum(c.free for c in ready)
            wanted = min(pending, total_free)
            for consumer in ready:
                share = min(consumer.free, -(-wanted * consumer.free // total_free))
                msgs = self.queue.take(share)
                if not msgs:
                    return
                self._deliver(consumer, msgs)

    def _deliver(self, consumer, msgs):
        if self.max_attempts:
            msgs = self._bury_exhausted(msgs)
            if not msgs:
                return
        sample_rate = consumer.client.sample_rate
        if sample_rate:
            msgs = [msg for msg in msgs if random.randrange(100) < sample_rate]
            if not msgs:
                return
        timeout = consumer.client.msg_timeout
        table = self.timeout_tables.get(timeout)
        if table is None:
            table = self.timeout_tables[timeout] = OrderedDict()
        delivered_at = now()
        deadline = delivered_at + timeout
        in_flight = self.in_flight
        for msg in msgs:
            msg.attempts += 1
            msg.owner = consumer
            msg.delivered_at = delivered_at
            msg.deadline = deadline
            msg.timeout_bucket = table
            in_flight[msg.id] = msg
            table[msg.id] = msg
        consumer.in_flight_count += len(msgs)
        consumer.message_count += len(msgs)
        consumer.client.deliver(msgs)

    def _bury_exhausted(self, msgs):
        """Publish the messages already delivered ``max_attempts`` times to the
        dead-letter topic; the others (and any that cannot be dead-lettered: too big
        for a message once wrapped, or refused) are returned to be delivered."""
        limit = self.max_attempts
        if all(msg.attempts < limit for msg in msgs):
            return msgs
        keep, dead, bodies = [], [], []
        max_size = self.nsqd.opts.max_msg_size
        for msg in msgs:
            if msg.attempts >= limit:
                body = envelope(msg, self.topic_name, self.name)
                if len(body) <= max_size:
                    dead.append(msg)
                    bodies.append(body)
                    continue
                log.error("%s: message %s too big to dead-letter, delivering it again",
                          self.label, msg.id.decode())
            keep.append(msg)
        if dead:
            target = dead_letter_topic(self.topic_name, self.nsqd.opts.dead_letter_topic_suffix)
            try:
                self.nsqd.publish(target, bodies)
            except (Refused, StoreFailed) as err:
                log.error("%s: failed to dead-letter %d messages to %s - %s", self.label,
                          len(dead), target, err)
                return keep + dead
            self.dead_letter_count += len(dead)
            self.queue.finish(dead)      # durable mode: done with here
        return keep


use_compiled(globals())
