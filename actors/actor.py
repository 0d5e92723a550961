"""The actor base: a greenlet that owns its state and acts on messages from its mailbox.

Other greenlets never touch an actor's state; they ``send`` it a tuple whose first item
names the handler (``("fin", consumer, ids)`` calls ``on_fin(consumer, ids)``). The actor
drains everything waiting in its mailbox, then calls ``after_batch`` once, so work that
follows many messages (delivering to consumers, say) happens once per burst, not per message.

Handlers run one at a time, in the order messages were sent, under the actor's ``turn``
lock. ``call`` keeps that rule but skips the hand-off when the actor is idle: with nothing
queued and no handler running, the message is handled at once in the caller's greenlet,
which saves the two greenlet switches a mailbox costs (a single PUB waiting for its OK
pays for each switch in latency).
"""

import logging

import gevent
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue

log = logging.getLogger("greensq")


class Actor:
    """Subclasses define ``on_<kind>`` handlers and may override ``wakeup_in`` and ``after_batch``."""

    mailbox_size = None  # unbounded unless a subclass bounds it
    burst = 64           # messages handled before after_batch runs, however busy the mailbox

    def __init__(self, label):
        self.label = label
        self.mailbox = Queue(self.mailbox_size)
        self.turn = Semaphore()   # held while a handler runs, in whichever greenlet
        self.greenlet = None
        self.stopped = False

    def start(self):
        self.greenlet = gevent.spawn(self._run)
        self.greenlet.name = self.label
        return self

    def send(self, *message):
        """Post a message; blocks only when a bounded mailbox is full (backpressure)."""
        self.mailbox.put(message)

    def call(self, kind, *args):
        """Handle a message now if the actor is idle, else post it like ``send``."""
        if self.stopped or self.turn.locked() or self.mailbox.qsize():
            self.mailbox.put((kind, *args))
            return
        # Only this message: anything posted meanwhile may have been taken by the actor's
        # own greenlet, which waits for the turn and keeps the order.
        with self.turn:
            try:
                getattr(self, "on_" + kind)(*args)
                if not self.stopped:
                    self.after_batch()
            except Exception:
                log.exception("%s: unexpected error handling %r", self.label, kind)

    def wakeup_in(self):
        """Seconds until the actor must run even with an empty mailbox (None: never)."""
        return None

    def after_batch(self):
        """Called after each burst of messages, and on every timed wakeup."""

    def stop_loop(self):
        """Ends the loop after the current message."""
        self.stopped = True

    def _run(self):
        mailbox = self.mailbox
        while not self.stopped:
            try:
                message = mailbox.get(timeout=self.wakeup_in())
            except Empty:
                message = None
            with self.turn:
                self._handle_burst(message)

    def _handle_burst(self, message):
        """Handle ``message`` and whatever else waits (up to ``burst``), then after_batch."""
        mailbox = self.mailbox
        try:
            handled = 0
            while message is not None:
                getattr(self, "on_" + message[0])(*message[1:])
                if self.stopped:
                    return
                handled += 1
                message = (mailbox.get_nowait()
                           if handled < self.burst and mailbox.qsize() else None)
            self.after_batch()
        except Exception:
            log.exception("%s: unexpected error handling %r", self.label, message and message[0])


class MessageHolder(Actor):
    """An actor that owns a ``queue`` (a MessageQueue) and can be paused: a topic or a
    channel. Pause state is part of nsqd's metadata, so changing it schedules a write."""

    paused = False

    @property
    def depth(self):
        return len(self.queue)

    @property
    def backend_depth(self):
        return self.queue.backend_depth

    def on_pause(self):
        self.paused = True
        self.nsqd.metadata_changed()

    def on_unpause(self):
        self.paused = False
        self.nsqd.metadata_changed()
