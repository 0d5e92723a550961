"""A FIFO queue of byte records on disk, in go-diskqueue's file format.

nsqd keeps the overflow of every topic and channel in one of these (in durable mode,
every message: the queue of record), so a data directory written by Go nsqd can be read
by greensq and the other way round.

Files, for a queue called ``<name>`` in ``<data_path>``:

``<name>.diskqueue.000000.dat``, ``...000001.dat``, ...  (segments)
    Each record is a big-endian signed int32 payload length followed by the
    payload. Segments are numbered with ``%06d`` and never contain anything
    else (no header, no padding).

``<name>.diskqueue.meta.dat``  (metadata)
    Text: ``"%d\\n%d,%d\\n%d,%d\\n"`` = depth, read file number, read byte
    offset, write file number, write byte offset. It is replaced atomically:
    written to ``<meta>.<random>.tmp``, fsynced, then renamed over the old one.

Rules shared with current go-diskqueue (v1.1 and later):

* Rotation happens *before* a write: if the current segment is not empty and
  the record would take it past ``max_bytes_per_file``, the writer moves to the
  next file number first. So a segment only exceeds the limit when it holds a
  single record bigger than the limit.
* The reader does not assume where a segment ends: for a finished segment (one
  below the write file number) the end is the file's actual size, for the
  segment being written it is the write offset. Files from writers that used
  other rotation rules (older Go nsqd) read fine.
* A fully read segment is deleted.
* A length outside ``[min_msg_size, max_msg_size]``, a short read or a missing
  segment is corruption: the segment is renamed to ``<file>.bad``, an error is
  logged and reading continues with the next file number (if the bad file was
  also the write file, the writer moves on too). The records lost with it are
  not counted; like go-diskqueue, depth is forced back to 0, with an error log,
  whenever the reader reaches the tail of the queue with a non-zero depth.
* On open, if the write segment on disk is longer than the metadata's write
  offset, or later segments exist (the metadata was not synced before a crash,
  perhaps not since a rotation), writing continues in a fresh segment after the
  last one and the reader salvages the records past the stale offset and in the
  later segments. (greensq also moves on when the segment is *shorter* than the
  offset, where Go would leave a hole of zeros.) Temporary metadata files left
  by a crash are removed.

Durability and gevent: each ``put``/``put_many`` is one unbuffered ``write(2)``
per segment touched, so what is on disk always matches the write offset, a
crashed worker loses nothing the kernel already has, and the reader sees new
records at once. ``fsync`` never runs on the hub: it goes to the hub's thread
pool. Syncing (fsync of data, then metadata) is done by a small background
greenlet, started lazily by the first read or write (or by a repair done
while opening). It syncs after
``sync_every`` reads+writes (go-diskqueue counts both), after a segment
rotation or another file change, and otherwise at least every
``sync_timeout`` seconds when there was any activity. So ``put``, ``get`` and
their batch forms never yield; ``sync``, ``empty``, ``close`` and ``delete``
do (they wait for the thread pool). ``close`` and ``delete`` stop the
background greenlet.

Failures: a write that fails raises ``OSError`` with nothing of it left in the segment
(a partial record is truncated away), so the files keep matching the positions. A failed
sync is logged, handed to the ``when_synced`` waiters and retried at the next sync. With
``on_error``, every write and every sync reports its outcome: the ``OSError``, or None
once writing works again (a write clears a write error, a sync clears any), as nsqd's
health does.

``when_synced(callback)`` asks for the data written so far to be fsynced and calls
back once it is: writes that arrive during an fsync share the next one (group commit).
Such a sync writes the metadata only when it is due anyway.

Retaining (``retain=True``, durable mode): reading moves a cursor but not the persisted
read position. Records read stay on disk until the owner ``commit``s past them (it
finishes them out of order and tracks which); the metadata's read position and depth are
the committed ones, so Go nsqd reading the files starts from the oldest record not done
with. ``get``/``get_many``/``put_many`` can report each record's offset (segment number
and position in one int) and ``skip_read`` counts records the owner already has as read.

Not thread-safe and not meant to be shared: one owner greenlet calls it.
"""

from __future__ import annotations

import logging
import os
import re
import struct

import gevent
import gevent.event
import gevent.lock

from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.files import fsync, replace_file

__all__ = ["DiskQueue", "record_offset"]

_LENGTH = struct.Struct(">i")
# A record's offset: its segment number and byte position in one sortable int.
_OFFSET_BITS = 40
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


def record_offset(num: int, pos: int) -> int:
    """A record's offset (``positions``, ``read_offset``) from its segment and position."""
    return (num << _OFFSET_BITS) | pos


_META_RE = re.compile(rb"\s*(-?\d+)\n(-?\d+),(-?\d+)\n(-?\d+),(-?\d+)\s*\Z")
_READ_BUFFER = 64 * 1024


class _Corrupt(Exception):
    """The current read segment cannot be trusted past this point."""


class DiskQueue:
    """A persistent FIFO of byte records; see the module docstring."""

    def __init__(self, name: str, data_path: str, max_bytes_per_file: int,
                 min_msg_size: int, max_msg_size: int, sync_every: int,
                 sync_timeout: float, logger: logging.Logger, retain: bool = False,
                 on_error=None):
        """Open the queue, loading ``<name>.diskqueue.meta.dat`` if present. With
        ``retain``, records read stay on disk until ``commit`` (see "Retaining");
        ``on_error(error)`` hears how writes and syncs go (see "Failures")."""
        self.name = name
        self.data_path = data_path
        self.max_bytes_per_file = max_bytes_per_file
        self.min_msg_size = min_msg_size
        self.max_msg_size = max_msg_size
        self.sync_every = max(1, sync_every)
        self.sync_timeout = sync_timeout
        self.log = logger

        # Persisted state.
        self._depth = 0
        self._read_num = 0
        self._read_pos = 0
        self._write_num = 0
        self._write_pos = 0
        self._bytes = 0            # bytes of the records not yet read (length prefixes too)

        self._rfile = None         # buffered reader on segment _read_num
        self._read_end = None      # known end of the read segment, once finished
        self._wfd = None           # raw fd on segment _write_num
        self._retired: list[int] = []   # fds of rotated-away segments, to fsync+close

        self._ops = 0              # reads + writes since the last sync
        self._need_sync = False
        self._closed = False
        self._deleted = False
        self._syncer = None
        self._wake = gevent.event.Event()
        self._sync_lock = gevent.lock.Semaphore()
        self._sync_waiters = []    # callbacks for the next fsync (group commit)
        self._meta_due = False     # the next sync writes the metadata too
        self._new_file = False     # a segment was created since the last sync

        self.retain = retain
        self._uncommitted = 0      # records read but not committed (retain mode)

        self._on_error = on_error
        self._sync_error = None    # the last sync's error, until a sync works

        self._load()
        # Retain mode persists this as the read position; reading moves on from it.
        self._committed = (self._read_num, self._read_pos)

    # ------------------------------------------------------------------ names

    @property
    def meta_path(self) -> str:
        """Path of the metadata file."""
        return os.path.join(self.data_path, "%s.diskqueue.meta.dat" % self.name)

    def segment_path(self, num: int) -> str:
        """Path of segment number ``num``."""
        return os.path.join(self.data_path, "%s.diskqueue.%06d.dat" % (self.name, num))

    @property
    def depth(self) -> int:
        """Number of records written and not yet read."""
        return self._depth

    @property
    def bytes(self) -> int:
        """Bytes of the records written and not yet read, as stored (with their length
        prefixes). The disk holds at most one segment more: a segment is deleted once it
        has been read to its end."""
        return self._bytes

    def _measure_bytes(self) -> int:
        """``bytes`` from the positions and the segments' sizes (after a repair)."""
        if self._read_num > self._write_num:
            return 0
        total = sum(self._file_size(num) for num in range(self._read_num, self._write_num))
        return max(0, total - self._read_pos + self._write_pos)

    # ------------------------------------------------------------------ writing

    def put(self, payload: bytes) -> None:
        """Append one record. Raises ValueError if its size is out of bounds."""
        self.put_many((payload,))

    def put_many(self, payloads, positions: list | None = None) -> None:
        """Append records in order, with one write per segment touched; with a
        ``positions`` list, their offsets are appended to it.

        All sizes are checked first: on ValueError nothing is written.
        """
        self._check_open()
        if not isinstance(payloads, (list, tuple)):
            payloads = list(payloads)
        for p in payloads:
            n = len(p)
            if n < self.min_msg_size or n > self.max_msg_size:
                raise ValueError(
                    "invalid message write size (%d) minMsgSize=%d maxMsgSize=%d"
                    % (n, self.min_msg_size, self.max_msg_size))
        try:
            self._append(payloads, positions)
        except OSError as exc:
            self._report(exc)
            raise
        self._report(self._sync_error)

    def put_records(self, records) -> int:
        """Append records given as the files hold them (``[4-byte size][payload]`` each,
        as a replica receives them): sizes checked, then the bytes written as they are,
        one write per segment touched. Returns how many; ValueError (nothing written) if
        a record is truncated or its size out of bounds."""
        self._check_open()
        read_size = _LENGTH.unpack_from
        low, high = self.min_msg_size, self.max_msg_size
        end = len(records)
        at = count = 0
        while at < end:
            if at + 4 > end:
                raise ValueError("truncated record")
            size = read_size(records, at)[0]
            if size < low or size > high:
                raise ValueError(
                    "invalid message write size (%d) minMsgSize=%d maxMsgSize=%d"
                    % (size, low, high))
            at += 4 + size
            count += 1
        if at > end:
            raise ValueError("truncated record")
        try:
            if self._write_pos + end <= self.max_bytes_per_file:
                self._write(records, count)
            else:
                self._append_records(records)
        except OSError as exc:
            self._report(exc)
            raise
        self._report(self._sync_error)
        return count

    def _append_records(self, records) -> None:
        """``put_records``' write across segments: each run of records that fits."""
        read_size = _LENGTH.unpack_from
        view = memoryview(records)
        start = at = count = 0
        pos = self._write_pos
        while at < len(view):
            size = 4 + read_size(view, at)[0]
            if pos > 0 and pos + size > self.max_bytes_per_file:
                if count:
                    self._write(view[start:at], count)
                    start, count = at, 0
                self._rotate()
                pos = 0
            pos += size
            at += size
            count += 1
        if count:
            self._write(view[start:at], count)

    def _append(self, payloads, positions: list | None) -> None:
        chunk = bytearray()
        pos = self._write_pos      # where the next record in `chunk` will land
        count = 0
        for p in payloads:
            size = 4 + len(p)
            if pos > 0 and pos + size > self.max_bytes_per_file:
                if chunk:
                    self._write(chunk, count)
                    chunk, count = bytearray(), 0
                self._rotate()
                pos = 0
            if positions is not None:
                positions.append((self._write_num << _OFFSET_BITS) | pos)
            chunk += _LENGTH.pack(len(p))
            chunk += p
            pos += size
            count += 1
        if chunk:
            self._write(chunk, count)

    def _report(self, error) -> None:
        if self._on_error is not None:
            self._on_error(error)

    def _write(self, data: bytearray, count: int) -> None:
        if self._wfd is None:
            path = self.segment_path(self._write_num)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if self._write_pos == 0 else 0)
            self._wfd = os.open(path, flags, 0o600)
            self._new_file = self._new_file or self._write_pos == 0
            if self._write_pos:
                os.lseek(self._wfd, self._write_pos, os.SEEK_SET)
            self.log.debug("DISKQUEUE(%s): writing %s", self.name, path)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._wfd, view):]
        except OSError:
            # Drop any partial record so the file keeps matching _write_pos.
            try:
                os.ftruncate(self._wfd, self._write_pos)
            except OSError:
                pass
            os.close(self._wfd)
            self._wfd = None
            raise
        self._write_pos += len(data)
        self._bytes += len(data)
        self._depth += count
        self._count_ops(count)

    def _rotate(self) -> None:
        if self._read_num == self._write_num and self._rfile is not None:
            self._read_end = self._write_pos
        if self._wfd is not None:
            self._retired.append(self._wfd)   # fsynced and closed by the next sync
            self._wfd = None
        self._write_num += 1
        self._write_pos = 0
        self._want_sync()

    # ------------------------------------------------------------------ reading

    def get(self, positions: list | None = None) -> bytes | None:
        """Return the next record, or None if the queue is empty. With a ``positions``
        list, the record's offset (see ``offset``) is appended to it."""
        self._check_open()
        while (self._read_num, self._read_pos) < (self._write_num, self._write_pos):
            start = (self._read_num << _OFFSET_BITS) | self._read_pos
            try:
                payload = self._read_one()
            except (_Corrupt, OSError) as e:
                self.log.error("DISKQUEUE(%s) reading at %d of %s - %s", self.name,
                               self._read_pos, self.segment_path(self._read_num), e)
                self._skip_bad_segment()
                continue
            if payload is None:
                continue
            if positions is not None:
                positions.append(start)
            self._depth -= 1
            if self.retain:
                self._uncommitted += 1
            self._bytes -= 4 + len(payload)
            self._count_ops(1)
            if self._read_num < self._write_num and self._read_pos >= self._segment_end():
                self._finish_segment()
            self._check_tail()
            return payload
        return None

    def get_many(self, limit: int, positions: list | None = None) -> list[bytes]:
        """Return up to ``limit`` records (fewer if the queue runs out); with a
        ``positions`` list, their offsets are appended to it."""
        self._check_open()
        out = []
        while len(out) < limit:
            if self._read_run(limit - len(out), out, positions):
                continue
            payload = self.get(positions)
            if payload is None:
                break
            out.append(payload)
        return out

    def peek(self, limit: int, max_bytes: int) -> list[bytes]:
        """Up to ``limit`` records from the read position on, without reading them (the
        queue's state is untouched), stopping once they add up to ``max_bytes``. Stops
        early at anything malformed, which ``get`` will deal with when it gets there."""
        self._check_open()
        out = []
        num, pos = self._read_num, self._read_pos
        while (len(out) < limit and max_bytes > 0
               and (num, pos) < (self._write_num, self._write_pos)):
            end = self._write_pos if num == self._write_num else self._file_size(num)
            try:
                with open(self.segment_path(num), "rb") as f:
                    f.seek(pos)
                    while len(out) < limit and max_bytes > 0 and end - pos >= 4:
                        size = _LENGTH.unpack(f.read(4))[0]
                        if not self.min_msg_size <= size <= self.max_msg_size \
                                or pos + 4 + size > end:
                            return out
                        out.append(f.read(size))
                        pos += 4 + size
                        max_bytes -= size
            except (OSError, struct.error):
                return out
            if pos < end:
                break
            num, pos = num + 1, 0
        return out

    def _read_run(self, limit: int, out: list, positions: list | None = None) -> int:
        """Append up to ``limit`` well-formed records from inside the open read segment,
        with the bookkeeping done once for the run; return how many. Whatever needs care
        (opening or finishing a segment, a bad record, the tail) is left to ``get``."""
        rfile = self._rfile
        if rfile is None:
            return 0
        end = self._segment_end()
        pos = start = self._read_pos
        read, unpack = rfile.read, _LENGTH.unpack
        low, high = self.min_msg_size, self.max_msg_size
        count = 0
        while count < limit and end - pos >= 4:
            head = read(4)
            size = unpack(head)[0] if len(head) == 4 else -1
            payload = read(size) if low <= size <= high and pos + 4 + size <= end else b""
            if len(payload) != size:
                rfile.seek(pos)             # let get() report and skip it
                break
            out.append(payload)
            if positions is not None:
                positions.append((self._read_num << _OFFSET_BITS) | pos)
            pos += 4 + size
            count += 1
        if count:
            self._read_pos = pos
            self._bytes -= pos - start
            self._depth -= count
            if self.retain:
                self._uncommitted += count
            self._count_ops(count)
            if (self._read_num, pos) >= (self._write_num, self._write_pos):
                self._check_tail()
        elif pos != start:
            rfile.seek(start)
        return count

    def _segment_end(self) -> int:
        if self._read_num == self._write_num:
            return self._write_pos
        if self._read_end is None:
            self._read_end = os.fstat(self._rfile.fileno()).st_size
        return self._read_end

    def _read_one(self) -> bytes | None:
        """Read the record at the read position; None if a segment was finished."""
        if self._rfile is None:
            path = self.segment_path(self._read_num)
            self._rfile = open(path, "rb", buffering=_READ_BUFFER)
            self._read_end = None
            if self._read_pos:
                self._rfile.seek(self._read_pos)
            self.log.debug("DISKQUEUE(%s): reading %s", self.name, path)
        end = self._segment_end()
        if self._read_pos >= end:           # a finished segment, already consumed
            self._finish_segment()
            return None
        if end - self._read_pos < 4:
            raise _Corrupt("truncated length prefix")
        head = self._rfile.read(4)
        if len(head) < 4:
            raise _Corrupt("unexpected end of file in length prefix")
        (size,) = _LENGTH.unpack(head)
        if size < self.min_msg_size or size > self.max_msg_size:
            raise _Corrupt("invalid message read size (%d)" % size)
        if self._read_pos + 4 + size > end:
            raise _Corrupt("record of %d bytes runs past end of segment" % size)
        payload = self._rfile.read(size)
        if len(payload) < size:
            raise _Corrupt("unexpected end of file in record body")
        self._read_pos += 4 + size
        return payload

    def _close_reader(self) -> None:
        if self._rfile is not None:
            self._rfile.close()
            self._rfile = None
        self._read_end = None

    def _finish_segment(self) -> None:
        """Delete the fully read segment (in retain mode: once committed) and move to
        the next one."""
        self._close_reader()
        if not self.retain:
            self._remove_segment(self._read_num)
        self._read_num += 1
        self._read_pos = 0
        self._want_sync()

    def _remove_segment(self, num: int) -> None:
        self._remove_file(self.segment_path(num))

    def _remove_file(self, path: str) -> None:
        """Remove one of the queue's files; a failure is logged, as go-diskqueue does."""
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.error("DISKQUEUE(%s) failed to remove %s - %s", self.name, path, e)

    # ------------------------------------------------------------------ retaining

    @property
    def read_offset(self) -> int:
        """The offset of the next record to read."""
        return (self._read_num << _OFFSET_BITS) | self._read_pos

    def unread_span(self) -> tuple[int, int, int, int]:
        """Where the records not read yet are: the read segment and position, the write
        segment and position (a replica's copy of the queue reads them from the files,
        through ``segment_path``, while the queue goes on)."""
        return self._read_num, self._read_pos, self._write_num, self._write_pos

    def skip_read(self, end_offset: int, count: int) -> None:
        """Count the ``count`` records from the read position up to ``end_offset`` as
        read without reading them: the caller has them (it just wrote them)."""
        num, pos = end_offset >> _OFFSET_BITS, end_offset & _OFFSET_MASK
        if num != self._read_num:
            self._close_reader()
            self._read_num = num
        elif self._rfile is not None:
            self._rfile.seek(pos)
        self._read_pos = pos
        self._depth -= count
        if self.retain:
            self._uncommitted += count
        self._count_ops(count)

    def commit(self, offset: int, count: int) -> None:
        """Retain mode: every record before ``offset`` (a record's offset, or
        ``read_offset``) is done with, ``count`` of them since the last commit. The
        persisted read position moves there and segments wholly before it go."""
        num, pos = offset >> _OFFSET_BITS, offset & _OFFSET_MASK
        first = self._committed[0]
        self._committed = (num, pos)
        self._uncommitted -= count
        for old in range(first, min(num, self._read_num)):
            self._remove_segment(old)
        self._count_ops(count)

    def _skip_bad_segment(self) -> None:
        """Rename the unreadable read segment to .bad and move past it."""
        self._close_reader()
        if self._read_num == self._write_num:
            # The write segment is the bad one: stop appending to it too.
            if self._wfd is not None:
                os.close(self._wfd)
                self._wfd = None
            self._write_num += 1
            self._write_pos = 0
        bad = self.segment_path(self._read_num)
        self.log.warning("DISKQUEUE(%s) jump to next file and saving bad file as %s.bad",
                         self.name, bad)
        try:
            os.rename(bad, bad + ".bad")
        except OSError as e:
            self.log.error("DISKQUEUE(%s) failed to rename bad file %s - %s", self.name, bad, e)
        self._read_num += 1
        self._read_pos = 0
        self._bytes = self._measure_bytes()
        self._want_sync()
        self._check_tail()

    def _check_tail(self) -> None:
        """At the tail depth must be 0 and positions equal; repair if not."""
        rd, wr = (self._read_num, self._read_pos), (self._write_num, self._write_pos)
        if rd < wr:
            return
        self._bytes = 0
        if self._depth != 0:
            self.log.error("DISKQUEUE(%s) %s depth at tail (%d), %s, resetting 0...",
                           self.name, "negative" if self._depth < 0 else "positive",
                           self._depth,
                           "metadata corruption" if self._depth < 0 else "data loss")
            self._depth = 0
            self._want_sync()
        if rd != wr:
            self.log.error("DISKQUEUE(%s) read position %d,%d is past write position %d,%d,"
                           " corruption, skipping to next file", self.name, *rd, *wr)
            self._drop_segments()
            self._want_sync()

    def _drop_segments(self) -> None:
        """Delete every segment and continue at a fresh file number, depth 0."""
        self._close_reader()
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        first = min(self._committed[0], self._read_num, self._write_num)
        last = max(self._read_num, self._write_num)
        for num in range(first, last + 1):
            try:
                os.remove(self.segment_path(num))
            except FileNotFoundError:
                pass
            except OSError as e:
                self.log.error("DISKQUEUE(%s) failed to remove data file - %s", self.name, e)
        self._write_num = self._read_num = last + 1
        self._write_pos = self._read_pos = 0
        self._depth = 0
        self._committed = (self._read_num, 0)
        self._uncommitted = 0
        self._bytes = 0

    # ------------------------------------------------------------------ metadata / sync

    def _load(self) -> None:
        try:
            with open(self.meta_path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            text = None
        if text is not None:
            m = _META_RE.match(text)
            if m:
                (self._depth, self._read_num, self._read_pos,
                 self._write_num, self._write_pos) = (int(x) for x in m.groups())
            else:
                self.log.error("DISKQUEUE(%s) failed to parse metadata %s: %r",
                               self.name, self.meta_path, text[:100])
        self._remove_stale_meta_files()
        size = self._file_size(self._write_num)
        later = []      # segments begun after the last metadata sync (rotated, then killed)
        while os.path.exists(self.segment_path(self._write_num + len(later) + 1)):
            later.append(self._write_num + len(later) + 1)
        if size != self._write_pos or later:
            self.log.warning("DISKQUEUE(%s) %s metadata writePos %d != file size of %d%s,"
                             " skipping to new file", self.name,
                             self.segment_path(self._write_num), self._write_pos, size,
                             " (and %d later segments)" % len(later) if later else "")
            # Records written after the last metadata sync (a crash): count them in.
            if size > self._write_pos:
                self._depth += self._count_records(
                    self.segment_path(self._write_num), self._write_pos, size)
            for num in later:
                self._depth += self._count_records(
                    self.segment_path(num), 0, self._file_size(num))
            self._write_num = (later[-1] if later else self._write_num) + 1
            self._write_pos = 0
        self._check_tail()
        self._bytes = self._measure_bytes()

    def _file_size(self, num: int) -> int:
        try:
            return os.stat(self.segment_path(num)).st_size
        except FileNotFoundError:
            return 0

    def _remove_stale_meta_files(self) -> None:
        """Temporary metadata files left by a crash in the middle of a metadata write."""
        prefix = os.path.basename(self.meta_path) + "."
        try:
            names = os.listdir(self.data_path)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix) and name.endswith(".tmp"):
                try:
                    os.remove(os.path.join(self.data_path, name))
                except OSError:
                    pass

    def _count_records(self, path: str, start: int, end: int) -> int:
        """How many whole records lie between ``start`` and ``end`` of a segment."""
        count = 0
        with open(path, "rb") as f:
            f.seek(start)
            pos = start
            while pos + 4 <= end:
                size = int.from_bytes(f.read(4), "big", signed=True)
                if size < self.min_msg_size or size > self.max_msg_size or pos + 4 + size > end:
                    break
                f.seek(size, os.SEEK_CUR)
                pos += 4 + size
                count += 1
        return count

    def _meta_text(self) -> bytes:
        if self.retain:     # Go nsqd reads on from the oldest record not yet done with
            depth, (read_num, read_pos) = self._depth + self._uncommitted, self._committed
        else:
            depth, read_num, read_pos = self._depth, self._read_num, self._read_pos
        return b"%d\n%d,%d\n%d,%d\n" % (depth, read_num, read_pos,
                                        self._write_num, self._write_pos)

    def _sync(self, meta: bool = True) -> None:
        """fsync written data (and the directory, after a new segment), then persist the
        metadata as of the call, then tell the ``when_synced`` waiters."""
        # Serialised: the background greenlet and an explicit sync()/empty()
        # may both get here, and each yields while the thread pool works.
        with self._sync_lock:
            text = self._meta_text()
            waiters, self._sync_waiters = self._sync_waiters, []
            if meta:
                self._ops = 0
                self._need_sync = False
            fds, self._retired = self._retired, []
            error = None
            try:
                if self._wfd is not None:
                    # A duplicate, so the owner may close its fd while we fsync.
                    fds.append(os.dup(self._wfd))
                if self._new_file:
                    fds.append(os.open(self.data_path, os.O_RDONLY | os.O_DIRECTORY))
                    self._new_file = False
                for fd in fds:
                    fsync(fd)
                if meta:
                    replace_file(self.meta_path, text)
            except OSError as exc:
                error = exc
                self._need_sync = True     # tried again at the next sync
                raise
            finally:
                for fd in fds:
                    os.close(fd)
                self._sync_error = error
                self._report(error)
                for callback in waiters:
                    callback(error)

    def when_synced(self, callback) -> None:
        """Call ``callback(error)`` once an fsync covers everything written so far
        (``error`` None on success). Writes that arrive while an fsync runs share the
        next one: group commit."""
        self._sync_waiters.append(callback)
        if self._syncer is None:
            self._start_syncer()
        self._wake.set()

    def _count_ops(self, n: int) -> None:
        self._ops += n
        if self._ops >= self.sync_every:
            self._want_sync()
        elif self._syncer is None:
            self._start_syncer()

    def _want_sync(self) -> None:
        self._need_sync = True
        if self._syncer is None:
            self._start_syncer()
        self._wake.set()

    def _start_syncer(self) -> None:
        if not self._closed:
            self._syncer = gevent.spawn(self._sync_loop)

    def _sync_loop(self) -> None:
        timeout = self.sync_timeout if self.sync_timeout and self.sync_timeout > 0 else None
        while not self._closed:
            self._wake.wait(timeout)
            self._wake.clear()
            if self._closed:
                return
            if self._need_sync or self._ops or self._sync_waiters:
                # Waiters alone get the data synced; the metadata follows sync_every,
                # sync_timeout and file changes, as without them.
                meta = self._need_sync or self._ops >= self.sync_every or not self._sync_waiters
                try:
                    self._sync(meta)
                except OSError as e:
                    self.log.error("DISKQUEUE(%s) failed to sync - %s", self.name, e)

    def _stop_syncer(self) -> None:
        self._closed = True
        if self._syncer is not None:
            self._wake.set()
            self._syncer.join()    # lets an in-flight sync finish; never kills it
            self._syncer = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("DISKQUEUE(%s) is closed" % self.name)

    # ------------------------------------------------------------------ lifecycle

    def sync(self) -> None:
        """fsync the data written so far and write the metadata, now."""
        self._check_open()
        self._sync()

    def empty(self) -> None:
        """Drop every record: delete the segments, depth 0, write the metadata.

        Like go-diskqueue, reading and writing continue at the next unused file
        number rather than going back to 0.
        """
        self._check_open()
        self.log.info("DISKQUEUE(%s): emptying", self.name)
        self._drop_segments()
        self._sync()

    def close(self) -> None:
        """Stop background syncing, fsync, write the metadata, close files.

        The queue cannot be used afterwards. Calling it again does nothing.
        """
        if self._closed:
            return
        self.log.info("DISKQUEUE(%s): closing", self.name)
        self._stop_syncer()
        try:
            self._sync()
        finally:
            self._release_files()

    def delete(self) -> None:
        """Close the queue and remove its segments and metadata file.

        ``.bad`` files are left for the operator.
        """
        if self._deleted:
            return
        self._deleted = True
        self.log.info("DISKQUEUE(%s): deleting", self.name)
        self._stop_syncer()
        self._release_files()
        first = min(self._read_num, self._write_num)
        last = max(self._read_num, self._write_num)
        for path in [self.segment_path(n) for n in range(first, last + 1)] + [self.meta_path]:
            self._remove_file(path)

    def _release_files(self) -> None:
        self._close_reader()
        for fd in self._retired + ([self._wfd] if self._wfd is not None else []):
            os.close(fd)
        self._retired = []
        self._wfd = None


use_compiled(globals())
