"""What a durable queue must remember beyond its disk queue: records already finished
past the persisted read position, and the due times of deferred records.

The disk queue's persisted read position can only move past a record once every record
before it is done with; FINs arrive out of order, so a restart must also know which
later records were finished (they are not delivered again) and when deferred ones are
due. That is this file, ``<name>.diskqueue.finished.dat`` beside the queue's own files
(Go nsqd ignores it and simply delivers from the read position: at least once).

It is an append-only log of fixed-size entries, written with one ``write`` per batch so
a killed process loses at most the batch in hand:

    b"F" <start int64> <end int64>   records in [start, end) are finished
    b"D" <start int64> <due int64>   the record at start is due at ``due`` (ns, epoch)

Offsets are the disk queue's (segment number and position in one int). The log is
rewritten, compactly, from the live state when it grows past ``COMPACT_AT``.
"""

import bisect
import errno
import os
import struct

from greensq.services.shared.files import fsync, replace_file

ENTRY = struct.Struct(">cqq")
COMPACT_AT = 1 << 20


class FinishLog:
    """The finished ranges and due times of one durable queue."""

    def __init__(self, path):
        self.path = path
        self.finished = []      # sorted, disjoint [start, end) ranges read at open
        self.due = {}           # start offset -> due time (ns since the epoch)
        self._pending = bytearray()
        self._fd = None
        self._size = 0
        self._load()

    def _load(self):
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return
        ranges = []
        for offset in range(0, len(data) - len(data) % ENTRY.size, ENTRY.size):
            kind, start, value = ENTRY.unpack_from(data, offset)
            if kind == b"F" and value > start:
                ranges.append((start, value))
            elif kind == b"D":
                self.due[start] = value
        self.finished = _merge(ranges)
        self._size = len(data)

    def is_finished(self, start):
        """True if the record at ``start`` was finished before the last restart."""
        index = bisect.bisect_right(self.finished, (start, float("inf"))) - 1
        return index >= 0 and self.finished[index][0] <= start < self.finished[index][1]

    def record_finished(self, start, end):
        self._pending += ENTRY.pack(b"F", start, end)

    def record_due(self, start, due_ns):
        self._pending += ENTRY.pack(b"D", start, due_ns)

    def flush(self):
        """Write what was recorded since the last flush (one write). If that fails it
        is dropped, with nothing of it left in the file, and the ``OSError`` raised."""
        if not self._pending:
            return
        data, self._pending = bytes(self._pending), bytearray()
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)   # no torn entry to misalign the rest
            except OSError:
                pass
            raise
        self._size += len(data)

    def sync(self):
        """fsync what was flushed (off the hub), for due times that must survive a power
        cut before a deferred publish is answered."""
        if self._fd is not None:
            fsync(self._fd)

    @property
    def wants_compaction(self):
        return self._size > COMPACT_AT

    def rewrite(self, finished_ranges, due):
        """Replace the file with the live state: ``finished_ranges`` past the read
        position and ``due`` times of records still deferred."""
        self._pending = bytearray()
        data = b"".join([ENTRY.pack(b"F", start, end) for start, end in finished_ranges]
                        + [ENTRY.pack(b"D", start, when) for start, when in due.items()])
        replace_file(self.path, data, temp_path=self.path + ".tmp", sync=False)
        self.close()
        self._size = len(data)

    def forget_loaded(self):
        """The records read at open are all behind the cursor now: drop them."""
        self.finished = []

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self):
        self.close()
        self._pending = bytearray()
        for path in (self.path, self.path + ".tmp"):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def _merge(ranges):
    merged = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
