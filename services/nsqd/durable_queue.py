"""A topic's or channel's queue in durable mode (``--durable``): a message stays in the
disk queue from the moment its publish is answered until it is finished.

The default mode's ``MemoryFirstQueue`` keeps messages in memory up to
``--mem-queue-size`` and writes only the overflow to disk, so what memory holds (and what
is in flight or deferred) is lost with the process. Here the disk queue is the queue of
record (``queue_of_record``, a retaining ``DiskQueue``):

- every published message is appended, and ``when_stored`` answers only after the
  fsync that covers it (concurrent publishes share one fsync: the disk queue's group
  commit);
- a message requeued or deferred is appended again with its attempts (and its due
  time, in the finish log), and the old record is done with;
- the disk queue's persisted read position (retain mode) moves only past records that
  are done with: FINished, or superseded by a newer record. Records done with out of
  order are written to the finish log (``services/nsqd/finish_log.py``), so a restart does
  not deliver them again.

Memory still holds up to ``--mem-queue-size`` messages, all of them already on disk, so
delivery does not wait for reads. Records between the persisted read position and the
read cursor form the window: a list in disk order in which a run of finished records is
one entry, so one slow message holds back the read position without the finished ones
behind it costing more than an entry per gap. A message held in memory that was written
after the cursor (a requeue while a backlog waits on disk) is "ahead": the cursor skips
its record when it gets there.

After SIGKILL or a power cut every published, unfinished message is delivered again (at
least once: the ones in flight at the crash may be delivered twice). Go nsqd reading the
same files delivers from the persisted read position, finished ones included.

When the disk fails, a publish is refused (its write or fsync raised), and nothing
accepted is lost: a message that cannot be written again (requeued, deferred) keeps its
old record and stays in memory; finish-log entries that cannot be written are dropped,
so the records they finished are delivered again after a restart.
"""

import itertools
import logging
import time

from greensq.services.nsqd.message_queue import MessageQueue
from greensq.services.shared.message import Message

log = logging.getLogger("greensq")


class _Entry:
    """One record (or a run of finished records) in the window."""

    __slots__ = ("start", "end", "count", "done", "prev", "next")

    def __init__(self, start, end, done=False):
        self.start, self.end, self.count, self.done = start, end, 1, done
        self.prev = self.next = None


class Window:
    """Records read (or held since written) and not yet committed, in disk order."""

    def __init__(self):
        self.head = self.tail = None

    def append(self, entry):
        entry.prev, entry.next = self.tail, None
        if self.tail is None:
            self.head = entry
        else:
            self.tail.next = entry
        self.tail = entry
        if entry.done:
            self._merge(entry)

    def finish(self, entry):
        entry.done = True
        if entry.prev is not None or self.head is entry:
            self._merge(entry)

    def _merge(self, entry):
        """Fold a finished entry into finished neighbours."""
        prev, nxt = entry.prev, entry.next
        if prev is not None and prev.done:
            prev.end, prev.count = entry.end, prev.count + entry.count
            self._unlink(entry)
            entry = prev
        if nxt is not None and nxt.done:
            entry.end, entry.count = nxt.end, entry.count + nxt.count
            self._unlink(nxt)

    def _unlink(self, entry):
        if entry.prev is None:
            self.head = entry.next
        else:
            entry.prev.next = entry.next
        if entry.next is None:
            self.tail = entry.prev
        else:
            entry.next.prev = entry.prev

    def pop_done(self):
        """Drop the finished run at the head; how many records it held."""
        head = self.head
        if head is None or not head.done:
            return 0
        self._unlink(head)
        return head.count

    def finished_ranges(self):
        ranges, entry = [], self.head
        while entry is not None:
            if entry.done:
                ranges.append((entry.start, entry.end))
            entry = entry.next
        return ranges

    def clear(self):
        self.head = self.tail = None


class DurableQueue(MessageQueue):
    """Memory in front of ``queue_of_record``, a retaining disk queue that holds every
    message until it is finished, and its finish log. Never bounded:
    --max-bytes-per-topic/-channel bound the default mode's queues.

    ``on_due(msg, delay)`` is called for records read from disk whose due time is still
    to come (the channel defers them)."""

    durable = True

    def __init__(self, label, mem_limit, queue_of_record, finish_log, on_due=None):
        super().__init__(label, mem_limit)
        self.queue_of_record = queue_of_record
        self.finish_log = finish_log
        self.on_due = on_due
        self.window = Window()
        self.ahead = {}            # start offset -> entry of a record held past the cursor
        self._dirty = False
        self._due_unsynced = False
        self._finish_log_error = None   # the finish log's last write error, if it failed

    # -- sizes ------------------------------------------------------------------------------

    @property
    def backend_depth(self):
        """Records on disk not yet read (those already held in memory excluded)."""
        return self.queue_of_record.depth - len(self.ahead)

    @property
    def backend_bytes(self):
        return self.queue_of_record.bytes

    def refuses(self, count, bytes_from):
        return False

    def _peek_disk(self, count, max_bytes):
        """Records on disk as they are, without skipping those finished before a
        restart."""
        if not self.queue_of_record.depth:
            return []
        return Message.decode_many(self.queue_of_record.peek(count, max_bytes))[0]

    # -- new messages -----------------------------------------------------------------------

    def put_many(self, msgs, accepted=False):
        """Append new messages; they are held in memory too when nothing unread is on
        disk before them and memory has room. A failed write raises, or with
        ``accepted`` holds them in memory only."""
        starts = []
        payloads = [msg.encode() for msg in msgs]
        at_cursor = self.queue_of_record.read_offset
        try:
            self.queue_of_record.put_many(payloads, starts)
        except OSError as exc:
            if not accepted:
                raise
            self._write_failed(exc, len(msgs))
            self.memory.extend(msgs)
            return
        if (starts[0] == at_cursor and not self.ahead
                and len(self.memory) + len(msgs) <= self.mem_limit):
            window = self.window
            for msg, start, payload in zip(msgs, starts, payloads):
                msg.entry = entry = _Entry(start, start + 4 + len(payload))
                window.append(entry)
            self.queue_of_record.skip_read(entry.end, len(msgs))
            self.memory.extend(msgs)

    def when_stored(self, callback):
        """Once what was written so far (and the finish log's due times) is fsynced."""
        if self._due_unsynced:
            self._due_unsynced = False
            if not self._write_finish_log():
                callback(self._finish_log_error)
                return
            self.queue_of_record.when_synced(
                lambda error: self._sync_finish_log(callback, error))
        else:
            self.queue_of_record.when_synced(callback)

    def _sync_finish_log(self, callback, error):
        try:
            if error is None:
                self.finish_log.sync()
        except OSError as exc:
            error = exc
        callback(error)

    # -- taking and giving back -------------------------------------------------------------

    def _take_from_disk(self, count, taken):
        """Records read from disk (those finished before a restart and those already
        held are skipped)."""
        disk = self.queue_of_record
        while len(taken) < count and disk.depth > len(self.ahead):
            starts = []
            payloads = disk.get_many(count - len(taken), starts)
            if not payloads:
                break
            self._materialize(payloads, starts, taken)

    def _materialize(self, payloads, starts, taken):
        window, ahead, finish_log = self.window, self.ahead, self.finish_log
        now = time.time_ns()
        for payload, start in zip(payloads, starts):
            held = ahead.pop(start, None)
            if held is not None:
                window.append(held)
                continue
            entry = _Entry(start, start + 4 + len(payload))
            if finish_log.finished and finish_log.is_finished(start):
                entry.done = True
                window.append(entry)
                self._dirty = True
                continue
            decoded, _ = Message.decode_many((payload,))
            window.append(entry)
            if not decoded:
                entry.done = True
                self._dirty = True
                continue
            msg = decoded[0]
            msg.entry = entry
            due = finish_log.due.get(start)
            if due is not None and due > now and self.on_due is not None:
                self.on_due(msg, (due - now) / 1e9)
            else:
                taken.append(msg)
        if finish_log.finished and (not starts or finish_log.finished[-1][1] <= starts[-1]):
            finish_log.forget_loaded()

    def requeue(self, msg):
        """A message back to the queue (timed out, REQ without delay, its consumer
        gone): written again with its attempts; held in memory if there is room (if
        it cannot be written, in memory whatever the room)."""
        if not self._rewrite(msg):
            self.memory.append(msg)
        elif len(self.memory) < self.mem_limit:
            self._hold(msg)
            self.memory.append(msg)

    def defer(self, msg, delay):
        """A message to the deferred list (DPUB, REQ with a delay): written (again) with
        its attempts and due time, and held (if it cannot be written, held with its
        old record, due at once after a restart)."""
        if not self._rewrite(msg):
            return
        self.finish_log.record_due(self._written, time.time_ns() + int(delay * 1e9))
        self._due_unsynced = True
        self._dirty = True
        self._hold(msg)

    def undefer(self, msg):
        """A deferred message is due: its record stays as it is."""
        self.memory.append(msg)

    def finish(self, msgs):
        """FIN: the messages are done with. Their records are written to the finish log at
        once, not at the end of the turn: a reply the client gets later (an error for a
        FIN further on, say) tells it these FINs were handled, and the turn may yield
        before it ends (an fsync for a requeue), letting that reply out first."""
        for msg in msgs:
            entry = getattr(msg, "entry", None)
            if entry is not None:
                msg.entry = None
                self._done(entry)
        self._write_finish_log()

    def _rewrite(self, msg):
        """Write the message again; its old record is done with once the new one is
        written. False if the write failed: the message keeps its old record."""
        starts = []
        payload = msg.encode()
        try:
            self.queue_of_record.put_many((payload,), starts)
        except OSError as exc:
            self._write_failed(exc, 1)
            return False
        entry = getattr(msg, "entry", None)
        if entry is not None:
            self._done(entry)
        self._written = starts[0]
        msg.entry = _Entry(starts[0], starts[0] + 4 + len(payload))
        return True

    def _hold(self, msg):
        entry = msg.entry
        if self.queue_of_record.read_offset == entry.start and not self.ahead:
            self.queue_of_record.skip_read(entry.end, 1)
            self.window.append(entry)
        else:
            self.ahead[entry.start] = entry

    def _done(self, entry):
        if entry.start in self.ahead and self.ahead[entry.start] is entry:
            entry.done = True            # linked, finished, when the cursor gets there
        else:
            self.window.finish(entry)
        self.finish_log.record_finished(entry.start, entry.end)
        self._dirty = True

    def flush(self):
        """End of a turn: write the finish log and move the persisted read position
        past the records at the head that are done with."""
        if not self._dirty:
            return
        self._dirty = False
        self._write_finish_log()
        committed = 0
        while True:
            count = self.window.pop_done()
            if not count:
                break
            committed += count
        if committed:
            head = self.window.head
            self.queue_of_record.commit(
                head.start if head is not None else self.queue_of_record.read_offset, committed)
        if self.finish_log.wants_compaction:
            try:
                self.finish_log.rewrite(self.window.finished_ranges(), self._live_dues())
            except OSError as exc:
                self._finish_log_failed(exc)

    def _write_finish_log(self):
        """Write the finish log's new entries; False if that failed (they are dropped:
        what they finished is delivered again after a restart)."""
        try:
            self.finish_log.flush()
        except OSError as exc:
            self._finish_log_failed(exc)
            return False
        self._finish_log_error = None
        return True

    def _finish_log_failed(self, error):
        self._finish_log_error = error
        log.error("%s: failed to write %s - %s", self.label, self.finish_log.path, error)

    def _live_dues(self):
        """Due times of records not yet behind the persisted read position."""
        head = self.window.head
        committed = head.start if head is not None else self.queue_of_record.read_offset
        due = self.finish_log.due
        for start in [start for start in due if start < committed and start not in self.ahead]:
            del due[start]
        return due

    # -- lifecycle --------------------------------------------------------------------------

    def empty(self):
        self.memory.clear()
        self.window.clear()
        self.ahead.clear()
        self.finish_log.due.clear()
        self.finish_log.rewrite([], {})
        self.queue_of_record.empty()

    def delete(self):
        self.memory.clear()
        self.finish_log.delete()
        self.queue_of_record.delete()

    def close(self, extra=()):
        """Shutdown: everything held is on disk already (``extra``, the in-flight and
        deferred messages, included) but what a failed write kept in memory only, which
        is written now. False if something could not be written or synced."""
        unwritten = [msg for msg in itertools.chain(self.memory, extra)
                     if getattr(msg, "entry", None) is None]
        self._dirty = True
        self.flush()
        finish_log_written = self._finish_log_error is None
        self.finish_log.close()
        return self._close_disk(self.queue_of_record, unwritten) and finish_log_written
