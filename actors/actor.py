"""The actor base: a greenlet that owns its state and acts on messages from its mailbox.

Other greenlets never touch an actor's state; they ``send`` it a message: the bound
handler and its arguments (``channel.send(channel.on_fin, consumer, ids)``), so a reader
can follow a message to its handler. The actor drains everything waiting in its mailbox,
then calls ``after_batch`` once, so work that follows many messages (delivering to
consumers, say) happens once per burst, not per message.

Handlers run one at a time, in the order messages were sent, under the actor's ``turn``
lock. ``call`` keeps that rule but skips the hand-off when the actor is idle: with nothing
queued and no handler running, the message is handled at once in the caller's greenlet,
which saves the two greenlet switches a mailbox costs (a single PUB waiting for its OK
pays for each switch in latency). The few methods other greenlets call directly, because
their caller needs the answer at once (a topic's ``get_channel``, a channel's ``attach``),
hold the turn too (``in_turn``): an actor's state changes only in its turn.

A sender that must know its message was handled (a publisher before it answers OK, an HTTP
action before it answers 200) passes a ``Receipt`` and waits on it; ``ask`` does that for
any handler. Nobody waits for ever: an actor that has stopped refuses what is still sent
to it, and a handler that raises fails every receipt its message carries (the error is
logged and the actor goes on with its next message).
"""

import functools
import logging
import time

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.queue import Empty, Full, Queue

from greensq.services.shared.compiled import use_compiled

log = logging.getLogger("greensq")


class Refused(Exception):
    """The actor stopped (deleted, or nsqd is exiting) before it handled the message."""

    def __init__(self, reason="exiting"):
        super().__init__(reason)


class StoreFailed(Exception):
    """A disk queue could not be written: a published batch, or an emptied queue."""


class HandlerFailed(Exception):
    """A handler raised an unexpected error (logged with its traceback where it happened)."""


class Receipt:
    """What a sender waits on until every actor its message concerns has handled it.

    ``pending`` counts the handlers still to come: one to begin with, and an actor that
    hands the work on (a topic to its channels) ``expect``s one more per recipient. Each
    handler ends with ``done`` or ``fail``; ``abort`` ends the receipt at once, whatever
    is still to come (a handler that raised cannot say what it handed on). The event
    exists only once somebody waits: when everything happens inline, as it usually does,
    a receipt is a counter.
    """

    __slots__ = ("pending", "error", "_event", "_on_done")

    def __init__(self, on_done=None):
        self.pending = 1
        self.error = None
        self._event = None
        self._on_done = on_done      # called with the error (or None) when all are done

    def expect(self, count):
        if self.pending > 0:
            self.pending += count

    def done(self):
        if self.pending <= 0:
            return                   # aborted: what follows changes nothing
        self.pending -= 1
        if not self.pending:
            self._finished()

    def _finished(self):
        if self._event is not None:
            self._event.set()
        if self._on_done is not None:
            self._on_done(self.error)

    def on_done(self, callback):
        """Call ``callback(error)`` when every handler is done (now, if they are)."""
        if self.pending > 0:
            self._on_done = callback
        else:
            callback(self.error)

    def wait_done(self):
        """Wait until every handler is done, without raising its error."""
        if self.pending > 0:
            if self._event is None:
                self._event = Event()
            self._event.wait()

    def stored(self, error):
        """A queue's answer to ``when_stored``: done, or failed with the write error."""
        if error is None:
            self.done()
        else:
            self.fail(StoreFailed(str(error)))

    def fail(self, error):
        """Done, unsuccessfully: ``wait`` raises the first error."""
        if self.error is None and self.pending > 0:
            self.error = error
        self.done()

    def abort(self, error):
        """Failed now, whatever handlers are still to come."""
        if self.pending <= 0:
            return
        if self.error is None:
            self.error = error
        self.pending = 0
        self._finished()

    def wait(self):
        self.wait_done()
        if self.error is not None:
            raise self.error


def in_turn(method):
    """For an actor's methods that other greenlets call directly: run in the actor's turn,
    so they never interleave with a handler (even one that yields)."""
    @functools.wraps(method)
    def in_the_actors_turn(self, *args, **kwargs):
        with self.turn:
            return method(self, *args, **kwargs)
    return in_the_actors_turn


def _tick():
    """A wake-up with no work of its own: the loop runs ``after_batch`` and re-arms."""


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
        self._wake_at = float("inf")   # when the idle loop wakes for timed work (see call)
        self._timed = type(self).wakeup_in is not Actor.wakeup_in

    def start(self):
        self.greenlet = gevent.spawn(self._run)
        self.greenlet.name = self.label
        return self

    def send(self, handler, *args):
        """Post a message for ``handler`` (one of this actor's bound ``on_*`` methods);
        blocks only when a bounded mailbox is full (backpressure)."""
        if self.stopped:
            self.refuse((handler, *args))
        else:
            self.mailbox.put((handler, *args))

    def call(self, handler, *args):
        """Handle a message now if the actor is idle, else post it like ``send``."""
        turn = self.turn
        if self.stopped or turn.locked() or self.mailbox.qsize():
            self.send(handler, *args)
            return
        # Only this message: anything posted meanwhile may have been taken by the actor's
        # own greenlet, which waits for the turn and keeps the order.
        turn.acquire()
        try:
            try:
                handler(*args)
            except Exception as exc:
                self._failed(handler, args, exc)
            if not self.stopped:
                self._after_batch()
        finally:
            turn.release()
        if self._timed:
            # The idle loop sleeps until the timed work it knew of; if this message brought
            # earlier work (a delivery's timeout, a deferred message), wake it to re-arm.
            due = self.wakeup_in()
            if due is not None and time.monotonic() + due < self._wake_at:
                try:
                    self.mailbox.put_nowait((_tick,))
                except Full:
                    pass   # the loop has messages to handle, and re-arms after them

    def ask(self, handler, *args):
        """Have the message handled (at once if the actor is idle) and wait until it has
        been; the handler's exception, or ``Refused``, is raised here."""
        receipt = Receipt()
        self.call(self._answer, receipt, handler, args)
        receipt.wait()

    def _answer(self, receipt, handler, args):
        handler(*args)
        receipt.done()

    def _failed(self, handler, args, exc):
        """A handler raised: fail the receipts its message carries, so their senders are
        answered; the actor goes on with its next message."""
        if not isinstance(exc, StoreFailed):   # logged where it happened
            failed = args[1] if handler == self._answer else handler
            log.exception("%s: unexpected error in %s", self.label,
                          getattr(failed, "__name__", failed))
            exc = HandlerFailed(f"internal error in {self.label}")
        for arg in args:
            if isinstance(arg, Receipt):
                arg.abort(exc)

    def _after_batch(self):
        try:
            self.after_batch()
        except Exception:
            log.exception("%s: unexpected error after a batch", self.label)

    def refuse(self, message):
        """A message sent after the actor stopped: fail the receipts it carries."""
        for arg in message[1:]:
            if isinstance(arg, Receipt):
                arg.fail(Refused())

    def wakeup_in(self):
        """Seconds until the actor must run even with an empty mailbox (None: never)."""
        return None

    def after_batch(self):
        """Called after each burst of messages, and on every timed wakeup."""

    def stop_loop(self):
        """Ends the loop after the current message. Stopped by a handler that ran in a
        caller's greenlet (see ``call``), the loop is woken: it would otherwise wait for
        a message that never comes, and keep the actor and all it holds for good."""
        self.stopped = True
        if self.greenlet is not None and gevent.getcurrent() is not self.greenlet:
            try:
                self.mailbox.put_nowait((_tick,))
            except Full:
                pass   # messages wait: the loop wakes for them, and refuses them

    def _run(self):
        mailbox = self.mailbox
        while not self.stopped:
            timeout = self.wakeup_in()
            self._wake_at = float("inf") if timeout is None else time.monotonic() + timeout
            try:
                message = mailbox.get(timeout=timeout)
            except Empty:
                message = None
            self._wake_at = float("-inf")   # awake: anything new is seen before it sleeps
            with self.turn:
                if self.stopped:   # by a handler run in another greenlet meanwhile
                    if message is not None:
                        self.refuse(message)
                    break
                self._handle_burst(message)
        while self.mailbox.qsize():
            self.refuse(self.mailbox.get_nowait())

    def _handle_burst(self, message):
        """Handle ``message`` and whatever else waits (up to ``burst``), then after_batch."""
        mailbox = self.mailbox
        handled = 0
        while message is not None:
            try:
                message[0](*message[1:])
            except Exception as exc:
                self._failed(message[0], message[1:], exc)
            if self.stopped:
                return
            handled += 1
            message = (mailbox.get_nowait()
                       if handled < self.burst and mailbox.qsize() else None)
        self._after_batch()


class MessageHolder(Actor):
    """An actor that owns a ``queue`` (a ``MessageQueue``: services/nsqd/message_queue.py)
    and can be paused: a topic or a channel. Pause state is part of nsqd's metadata, so
    changing it schedules a write."""

    paused = False

    @property
    def depth(self):
        return len(self.queue)

    @property
    def backend_depth(self):
        return self.queue.backend_depth

    def store(self, msgs, receipt):
        """Put a published batch into the queue (``place``); ``receipt`` is done once the
        queue has it stored (in memory or written; in durable mode, fsynced). On a disk
        error the publisher is told (NSQ's ``PUB failed <error>``); the disk queue tells
        nsqd's health. Without a receipt the messages were accepted before (a topic's
        backlog handed over) and a failed write keeps them in memory. True if stored."""
        try:
            self.place(msgs, accepted=receipt is None)
        except (OSError, ValueError) as exc:
            log.error("%s: failed to write messages to backend - %s", self.label, exc)
            if receipt is not None:
                receipt.fail(StoreFailed(str(exc)))
            return False
        if receipt is not None:
            self.queue.when_stored(receipt.stored)
        return True

    def place(self, msgs, accepted=False):
        """Where a published batch goes: the queue."""
        self.queue.put_many(msgs, accepted)

    def empty_queue(self):
        """Drop everything queued; a disk error is logged and raised as ``StoreFailed``."""
        try:
            self.queue.empty()
        except OSError as exc:
            log.error("%s: failed to empty the queue - %s", self.label, exc)
            raise StoreFailed(str(exc)) from None

    def on_pause(self):
        self.paused = True
        self.nsqd.metadata_changed()

    def on_unpause(self):
        self.paused = False
        self.nsqd.metadata_changed()


use_compiled(globals())
