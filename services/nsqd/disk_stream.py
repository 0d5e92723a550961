"""The part of a queue's state that is on disk, sent to a replica from the files as they
were when the state was taken, while the queue goes on (README, "Catching up").

A queue's state is taken in its owner's turn: what memory holds at once, and for the
disk queue its unread records' span, with every segment file of it opened then. The
queue may read (and delete) those segments meanwhile; an open file stays readable, and
the stream stops at the write position of that moment, so it sends exactly the records
that were unread then. Records are go-diskqueue's, which is what a PUT frame carries:
the default mode's are sent as they are, a chunk at a time; a durable queue's skip what
is not queued any more (held in memory, sent with it; finished before a restart) and
send the deferred ones with their due time.
"""

import bisect
import logging
import os
import struct

from greensq.services.nsqd import replication_wire as wire
from greensq.services.nsqd.diskqueue import record_offset
from greensq.services.nsqd.durable_queue import DurableQueue
from greensq.services.shared.message import HEADER_SIZE

log = logging.getLogger("greensq")

LENGTH = struct.Struct(">i")
CHUNK = 256 * 1024


class DiskStream:
    """The unread records of one queue's disk queue, as PUT (and DEFERRED) frames for the
    copy of that queue (``prefix``), a chunk at a time (``next_frames``)."""

    def __init__(self, prefix, segments, skipped=None, finished=(), due=None):
        self.prefix = prefix
        self.segments = segments       # [(segment number, fd, start, end)]
        self.skipped = skipped or set()
        self.finished = list(finished)
        self.due = due or {}
        self.sent = 0

    @classmethod
    def of(cls, queue, prefix):
        """The stream of ``queue``'s unread records (None when there are none): called
        in the queue owner's turn."""
        if isinstance(queue, DurableQueue):
            disk = queue.queue_of_record
            extra = {"skipped": set(queue.ahead), "finished": queue.finish_log.finished,
                     "due": dict(queue.finish_log.due)}
        else:
            disk = getattr(queue, "overflow", None)
            extra = {}
        if disk is None or not disk.depth:
            return None
        read_num, read_pos, write_num, write_pos = disk.unread_span()
        segments = []
        for num in range(read_num, write_num + 1):
            try:
                fd = os.open(disk.segment_path(num), os.O_RDONLY)
            except OSError:
                continue      # a missing segment: the queue's reader skips it too
            start = read_pos if num == read_num else 0
            end = write_pos if num == write_num else os.fstat(fd).st_size
            if end > start:
                segments.append((num, fd, start, end))
            else:
                os.close(fd)
        return cls(prefix, segments, **extra) if segments else None

    def next_frames(self):
        """The frames of the next chunk of records, or None at the end."""
        while self.segments:
            num, fd, start, end = self.segments[0]
            data = os.pread(fd, min(CHUNK, end - start), start)
            records, used = self._frames(num, start, data)
            if used == 0 and data:
                if len(data) < end - start and len(data) >= 4:
                    # One record longer than a chunk: read it whole.
                    (size,) = LENGTH.unpack_from(data)
                    data = os.pread(fd, 4 + size, start)
                    records, used = self._frames(num, start, data)
                if used == 0:
                    log.error("replication: unreadable record in %s at %d, skipping the "
                              "rest of that segment", self.prefix, start)
                    self._next_segment()
                    continue
            start += used
            if start >= end:
                self._next_segment()
            else:
                self.segments[0] = (num, fd, start, end)
            if records:
                return records
        return None

    def _frames(self, num, start, data):
        """The frames for the whole records at the start of ``data`` (read at ``start``
        of segment ``num``), and how many bytes they took."""
        at, records = 0, []
        plain = not (self.skipped or self.finished or self.due)
        deferred = []
        run_start = 0
        while at + 4 <= len(data):
            (size,) = LENGTH.unpack_from(data, at)
            if size < HEADER_SIZE or at + 4 + size > len(data):
                break
            if not plain:
                offset = record_offset(num, start + at)
                if offset in self.skipped or self._finished(offset) or offset in self.due:
                    if at > run_start:
                        records.append(data[run_start:at])
                    if offset in self.due:
                        deferred.append((self.due[offset], data[at:at + 4 + size]))
                    run_start = at + 4 + size
            at += 4 + size
        if at > run_start:
            records.append(data[run_start:at])
        frames = [_put_frame(self.prefix, chunk) for chunk in records]
        if deferred:
            frames.append(_deferred_frame(self.prefix, deferred))
        self.sent += at
        return frames, at

    def _finished(self, offset):
        ranges = self.finished
        if not ranges:
            return False
        index = bisect.bisect_right(ranges, (offset, float("inf"))) - 1
        return index >= 0 and ranges[index][0] <= offset < ranges[index][1]

    def _next_segment(self):
        os.close(self.segments.pop(0)[1])

    def close(self):
        for segment in self.segments:
            os.close(segment[1])
        self.segments = []


def _put_frame(prefix, records):
    head = prefix + wire.PUT_FIELDS.pack(wire.SNAPSHOT_PART, 0)
    return b"".join([wire.HEADER.pack(len(head) + len(records) + 1, wire.PUT[0]), head,
                     records])


def _deferred_frame(prefix, entries):
    data = b"".join([prefix, bytes((wire.SNAPSHOT_PART | wire.WHOLE_RECORDS,))]
                    + [wire.DUE_TIME.pack(due) + record for due, record in entries])
    return wire.HEADER.pack(len(data) + 1, wire.DEFERRED[0]) + data
