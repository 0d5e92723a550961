"""The actor base: a greenlet that owns its state and acts on messages from its mailbox.

Other greenlets never touch an actor's state; they ``send`` it a tuple whose first item
names the handler (``("fin", consumer, ids)`` calls ``on_fin(consumer, ids)``). The actor
drains everything waiting in its mailbox, then calls ``after_batch`` once, so work that
follows many messages (delivering to consumers, say) happens once per burst, not per message.
"""

import logging

import gevent
from gevent.queue import Empty, Queue

log = logging.getLogger("greensq")


class Actor:
    """Subclasses define ``on_<kind>`` handlers and may override ``wakeup_in`` and ``after_batch``."""

    mailbox_size = None  # unbounded unless a subclass bounds it
    burst = 64           # messages handled before after_batch runs, however busy the mailbox

    def __init__(self, label):
        self.label = label
        self.mailbox = Queue(self.mailbox_size)
        self.greenlet = None
        self.stopped = False

    def start(self):
        self.greenlet = gevent.spawn(self._run)
        self.greenlet.name = self.label
        return self

    def send(self, *message):
        """Post a message; blocks only when a bounded mailbox is full (backpressure)."""
        self.mailbox.put(message)

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
