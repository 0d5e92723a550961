"""A replica's copy of one of a primary's queues (a topic's own queue, or a channel with
its messages in flight and deferred): the messages the primary has not finished.

The primary tells the copy what changes its queue, in order: messages put, delivered
(attempts), finished, deferred, a topic's backlog handed over to its channels. A copy
does not take messages to deliver them; it keeps them until the primary is done with
them, and hands them all over if the primary dies (``drain``).

The primary delivers its queue from the front, so what it finishes is nearly always
among the oldest messages it holds. The copy keeps those in ``head``, a dict by ID in
queue order, up to ``limit`` messages (at least the replica's --mem-queue-size), so a FIN
costs one dict lookup; the rest waits in ``parts``, queues of the replica's own mode:
in the default mode disk only (messages go straight to ``head`` while nothing waits
behind it; a batch bound for a part whole is written as the primary encoded it), in ``--durable`` the disk queue of record (every message written and
fsynced before the primary is answered; ``head`` then holds messages read from it,
which stay on disk until they are finished). A FIN for a message not in ``head`` yet
leaves its ID in ``gone``; the message is dropped when it is read.

When the link connects, the primary sends its whole state (the replica builds a new
copy): the state goes to a first part, marked open until the state is complete, and
what happens meanwhile to a second, so the copy keeps the primary's order.

A topic's copy also keeps, in ``transit``, messages of its backlog that the primary
handed over to its channels until every one of those channels has them: a primary that
dies in between loses nothing, the message still goes to the channels that lack it.
"""

import logging
import time

log = logging.getLogger("greensq")

TAKE = 1024      # messages read from a part at a time


class Part:
    """One of a copy's queues (``queue``), and how many of its messages ``head`` holds;
    ``open`` while the primary's state is still arriving in it."""

    __slots__ = ("queue", "snapshot", "open", "held", "touched")

    def __init__(self, queue, snapshot):
        self.queue = queue
        self.snapshot = snapshot
        self.open = snapshot
        self.held = 0
        self.touched = False      # written since the last ``when_stored``

    def exhausted(self):
        return not self.open and not self.held and not len(self.queue)


class CopyQueue:
    """The copy of the primary's queue ``channel`` of ``topic`` (None: the topic's own).

    ``make_part(snapshot, on_due)`` makes a part's queue (its files named for this queue
    and whether it holds the primary's state or what followed it; ``on_due`` takes the
    deferred records a durable part reads back); ``durable``: every message must be in a
    part, stored, before it counts as stored."""

    def __init__(self, topic, channel, make_part, limit, durable):
        self.topic = topic
        self.channel = channel
        self.make_part = make_part
        self.limit = limit
        self.durable = durable
        self.parts = []
        self.head = {}
        self.gone = set()
        self.transit = {}    # topic copies: id -> [message, names of the channels lacking it]
        self._reading = None  # the part being read (its deferred records come to _on_due)

    def __len__(self):
        return len(self.head) + sum([len(part.queue) for part in self.parts]) + len(self.transit)

    # -- what the primary did -----------------------------------------------------------

    def put(self, msgs, snapshot=False):
        """New messages at the end of the queue (``snapshot``: of the state being sent)."""
        if self.gone:
            msgs = [msg for msg in msgs if not self._forget(msg.id)]
            if not msgs:
                return
        if (not self.durable and not snapshot and not self.parts
                and len(self.head) + len(msgs) <= self.limit):
            head = self.head
            for msg in msgs:
                msg.owner = None
                head[msg.id] = msg
            return
        part = self._part(snapshot)
        part.queue.put_many(msgs)
        part.touched = True
        self._refill()

    def put_records(self, records, snapshot=False):
        """New messages as the primary encoded them (a PUT's records), written to a part
        as they are when they all go to one (no FIN waiting for them, ``head`` full or
        a part already behind it); False if they must come as messages (``put``).
        ValueError if a record is malformed."""
        if self.durable or self.gone or not (snapshot or self.parts
                                             or len(self.head) >= self.limit):
            return False
        part = self._part(snapshot)
        if part.queue.put_records(records) is None:
            return False
        part.touched = True
        self._refill()
        return True

    def defer(self, entries, whole):
        """Messages deferred until a time (ns since the epoch): whole ones (a DPUB) are
        new, the others (``(id, attempts)``: REQ with a delay) are held already."""
        head = self.head
        if whole:
            part = self._part(False) if self.durable else None
            for msg, due in entries:
                if self.gone and self._forget(msg.id):
                    continue
                msg.deadline = due
                msg.owner = None
                if part is not None:
                    part.queue.defer(msg, 0)    # written, held by us until finished
                    part.touched = True
                    msg.owner = part
                    part.held += 1
                head[msg.id] = msg
            return
        for (msg_id, attempts), due in entries:
            msg = head.get(msg_id)
            if msg is not None:
                msg.attempts = attempts
                msg.deadline = due

    def delivered(self, ids):
        """Attempts: the primary delivered these messages once more."""
        head = self.head
        for msg_id in ids:
            msg = head.get(msg_id)
            if msg is not None:
                msg.attempts += 1

    def finished(self, ids):
        """The primary is done with these messages (FIN, dead-lettered)."""
        head = self.head
        done = []
        for msg_id in ids:
            msg = head.pop(msg_id, None)
            if msg is not None:
                done.append(msg)
            elif self.parts:
                self.gone.add(msg_id)
        if done:
            self._done(done)
        self._refill()

    def handed_over(self, channels, ids):
        """A topic's backlog moved to ``channels``: each message waits in ``transit``
        until every one of them has it (``landed``)."""
        head, transit = self.head, self.transit
        for msg_id in ids:
            msg = head.pop(msg_id, None)
            if msg is None:
                if self.parts:
                    self.gone.add(msg_id)
            elif channels:
                transit[msg_id] = [msg, set(channels)]
            else:
                self._done([msg])
        self._refill()

    def landed(self, channel, msgs):
        """``channel``'s copy received ``msgs``: those in transit to it have arrived."""
        transit = self.transit
        done = []
        for msg in msgs:
            entry = transit.get(msg.id)
            if entry is not None:
                entry[1].discard(channel)
                if not entry[1]:
                    del transit[msg.id]
                    done.append(entry[0])
        if done:
            self._done(done)

    def channel_deleted(self, channel):
        """A deleted channel no longer waits for anything in transit."""
        done = []
        for msg_id, entry in list(self.transit.items()):
            entry[1].discard(channel)
            if not entry[1]:
                del self.transit[msg_id]
                done.append(entry[0])
        if done:
            self._done(done)

    def emptied(self):
        """The primary emptied the queue (what is in transit to channels stays)."""
        self.head.clear()
        self.gone.clear()
        for part in self.parts:
            part.queue.empty()
            part.held = 0
            part.touched = True

    def reopen_part(self, snapshot):
        """A part a previous run left on disk (nothing more will arrive in it)."""
        self._part(snapshot).open = False

    def snapshot_complete(self):
        for part in self.parts:
            part.open = False
        self._refill()

    # -- storage ----------------------------------------------------------------------

    def touched_parts(self):
        """The parts written since the last call: what an acknowledgement waits for."""
        touched = [part for part in self.parts if part.touched]
        for part in touched:
            part.touched = False
        return touched

    def delete(self):
        """Drop everything and remove the parts' files."""
        self.head.clear()
        self.gone.clear()
        self.transit.clear()
        for part in self.parts:
            part.queue.delete()
        self.parts = []

    def close(self):
        """Shutdown: what only memory holds goes to disk (in the default mode ``head``
        is memory only); False if something could not be written (logged)."""
        held = list(self.head.values()) + [entry[0] for entry in self.transit.values()]
        unwritten = held if not self.durable else [msg for msg in held if msg.owner is None]
        if unwritten and not self.parts:
            self._part(False)
        persisted = True
        for index, part in enumerate(self.parts):
            extra = unwritten if index == len(self.parts) - 1 else ()
            persisted = part.queue.close(extra) and persisted
        return persisted

    # -- failover -----------------------------------------------------------------------

    def drain(self):
        """Every message of the copy, a batch at a time (lists), until none is left:
        ``head``, then the parts in order (their files go once read); then
        ``transit_targets`` gives what was in transit. Each message comes as a new
        one would, with its attempts and its due time (``deadline``, or None)."""
        if self.head:
            batch = [_released(msg) for msg in self.head.values()]
            self.head.clear()
            yield batch
        for part in self.parts:
            part.open = False
            while len(part.queue):
                taken = part.queue.take(TAKE)
                if not taken:
                    break
                if self.gone:
                    taken = [msg for msg in taken if not self._forget(msg.id)]
                if taken:
                    yield [_released(msg) for msg in taken]
        self.delete_parts()

    def delete_parts(self):
        for part in self.parts:
            part.queue.delete()
        self.parts = []

    def transit_targets(self):
        """What was in transit: [(message, channels lacking it)], and forgets it."""
        entries = [(_released(msg), sorted(channels))
                   for msg, channels in self.transit.values()]
        self.transit.clear()
        return entries

    # -- internals ----------------------------------------------------------------------

    def _forget(self, msg_id):
        if msg_id in self.gone:
            self.gone.discard(msg_id)
            return True
        return False

    def _part(self, snapshot):
        """The part new messages go to: the open snapshot part, or the last other one."""
        parts = self.parts
        if snapshot:
            if parts and parts[0].snapshot and parts[0].open:
                return parts[0]
            part = Part(self.make_part(True, self._on_due), True)
            parts.insert(0, part)
            return part
        if parts and not parts[-1].snapshot:
            return parts[-1]
        part = Part(self.make_part(False, self._on_due), False)
        parts.append(part)
        return part

    def _done(self, msgs):
        for msg in msgs:
            part = msg.owner
            if part is not None:
                msg.owner = None
                part.held -= 1
                part.queue.finish((msg,))
                part.touched = part.touched or self.durable

    def _refill(self):
        """Bring ``head`` up to ``limit`` from the parts, in order; a part the primary's
        state is still arriving in is read no further than it has arrived. A part read
        to its end whose messages are all finished goes (with its files)."""
        parts = self.parts
        for part in [part for part in parts if part.exhausted()]:
            parts.remove(part)
            part.queue.delete()
        if not parts:
            self.gone.clear()     # no message left that a remembered FIN could match
            return
        head = self.head
        while len(head) < self.limit:
            part = next((part for part in parts if part.open or len(part.queue)), None)
            if part is None or not len(part.queue):
                return
            self._reading = part
            try:
                taken = part.queue.take(min(TAKE, self.limit - len(head)))
            finally:
                self._reading = None
            if not taken:
                return
            gone = self.gone
            for msg in taken:
                if gone and msg.id in gone:
                    gone.discard(msg.id)
                    part.queue.finish((msg,))
                    continue
                msg.owner = part
                part.held += 1
                head[msg.id] = msg


    def _on_due(self, msg, delay):
        """A deferred record a durable part read back: held, with its due time."""
        part = self._reading
        msg.deadline = time.time_ns() + int(delay * 1e9)
        msg.owner = part
        if part is not None:
            part.held += 1
        self.head[msg.id] = msg


def _released(msg):
    """A copy's message as the replica's own queues take a new one: no part owns it, no
    disk record is its own; its due time (or None) stays in ``deadline``."""
    msg.owner = None
    msg.entry = None
    if not hasattr(msg, "deadline"):
        msg.deadline = None
    return msg
