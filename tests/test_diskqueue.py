"""Tests for greensq.services.nsqd.diskqueue: go-diskqueue's on-disk format and semantics."""

import errno
import logging
import os
import struct
import time

import gevent
import pytest

from greensq.services.nsqd.diskqueue import DiskQueue

NAME = "t"
LOG = logging.getLogger("test.diskqueue")


def rec(payload: bytes) -> bytes:
    """One record exactly as go-diskqueue lays it out: int32 BE length + payload."""
    return struct.pack(">i", len(payload)) + payload


def seg(tmp_path, num: int) -> str:
    return str(tmp_path / ("%s.diskqueue.%06d.dat" % (NAME, num)))


def meta(tmp_path) -> str:
    return str(tmp_path / ("%s.diskqueue.meta.dat" % NAME))


def write_meta(tmp_path, depth, read_num, read_pos, write_num, write_pos):
    with open(meta(tmp_path), "wb") as f:
        f.write(b"%d\n%d,%d\n%d,%d\n" % (depth, read_num, read_pos, write_num, write_pos))


def read_meta(tmp_path) -> str:
    with open(meta(tmp_path)) as f:
        return f.read()


def files(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path))


def make(tmp_path, max_bytes=1024, min_size=1, max_size=1024, sync_every=10_000,
         sync_timeout=60.0):
    return DiskQueue(NAME, str(tmp_path), max_bytes, min_size, max_size, sync_every,
                     sync_timeout, LOG)


def drain(dq) -> list[bytes]:
    out = []
    while (p := dq.get()) is not None:
        out.append(p)
    return out


def wait_for(cond, timeout=5.0):
    """Poll cond() while yielding to the hub, until true or a deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met before deadline"
        gevent.sleep(0.005)


def payloads(n):
    return [(b"msg-%04d-" % i) + b"x" * (i % 23) for i in range(n)]


# ---------------------------------------------------------------- round trip


def test_round_trip_across_segments_and_segments_deleted(tmp_path):
    dq = make(tmp_path, max_bytes=100)
    data = payloads(200)
    for p in data[:50]:
        dq.put(p)
    dq.put_many(data[50:])
    assert dq.depth == 200
    segments = [f for f in files(tmp_path) if f.endswith(".dat") and "meta" not in f]
    assert len(segments) > 10
    for f in segments:
        assert os.path.getsize(tmp_path / f) <= 100

    got = dq.get_many(70)
    assert got == data[:70]
    assert dq.depth == 130
    # segments fully read are gone; the one being read is still there
    assert not os.path.exists(seg(tmp_path, 0))
    assert got + drain(dq) == data
    assert dq.depth == 0
    assert dq.get() is None and dq.get_many(5) == []
    dq.close()
    remaining = [f for f in files(tmp_path) if "meta" not in f]
    assert len(remaining) <= 1          # at most the (fully read) write segment
    assert not any(f.endswith(".bad") for f in files(tmp_path))


def test_reader_keeping_up_with_writer_across_rotations(tmp_path):
    # The reader sits at the very end of the write segment when the writer
    # rotates (go-diskqueue issues #38/#42): no record lost, no .bad file.
    dq = make(tmp_path, max_bytes=10 * 14)
    msg = b"0123456789"
    for i in range(35):
        dq.put(msg)
        assert dq.depth == 1
        assert dq.get() == msg
        assert dq.depth == 0
    assert dq._write_num == 3 and dq._write_pos == 5 * 14
    dq.close()
    assert not any(f.endswith(".bad") for f in files(tmp_path))
    assert read_meta(tmp_path) == "0\n3,70\n3,70\n"


def test_record_larger_than_segment_goes_alone(tmp_path):
    dq = make(tmp_path, max_bytes=16, max_size=100)
    dq.put_many([b"a", b"b" * 40, b"c"])
    dq.close()
    with open(seg(tmp_path, 0), "rb") as f:
        assert f.read() == rec(b"a")
    with open(seg(tmp_path, 1), "rb") as f:
        assert f.read() == rec(b"b" * 40)
    with open(seg(tmp_path, 2), "rb") as f:
        assert f.read() == rec(b"c")
    dq = make(tmp_path, max_bytes=16, max_size=100)
    assert drain(dq) == [b"a", b"b" * 40, b"c"]
    dq.close()


def test_encoded_records_are_written_as_put_many_writes_them(tmp_path):
    # put_records (a replica's copy, a replicated topic) writes records as they come:
    # the same files, segments cut at the same records, as put_many of their payloads.
    data = payloads(60) + [b"b" * 40]
    (tmp_path / "encoded").mkdir()
    (tmp_path / "plain").mkdir()
    encoded = make(tmp_path / "encoded", max_bytes=100, max_size=100)
    assert encoded.put_records(memoryview(b"".join(map(rec, data[:7])))) == 7
    assert encoded.put_records(b"".join(map(rec, data[7:]))) == len(data) - 7
    assert encoded.depth == len(data)
    plain = make(tmp_path / "plain", max_bytes=100, max_size=100)
    plain.put_many(data[:7])
    plain.put_many(data[7:])
    encoded.close()
    plain.close()
    assert files(tmp_path / "encoded") == files(tmp_path / "plain")
    for name in files(tmp_path / "plain"):
        assert (tmp_path / "encoded" / name).read_bytes() == (
            tmp_path / "plain" / name).read_bytes()
    assert drain(make(tmp_path / "encoded", max_bytes=100, max_size=100)) == data


def test_malformed_encoded_records_raise_and_write_nothing(tmp_path):
    dq = make(tmp_path, min_size=2, max_size=10)
    for records in (rec(b"fine") + rec(b"x" * 11), rec(b"fine") + rec(b"x"),
                    rec(b"fine") + rec(b"cut")[:-1], rec(b"fine") + b"\0\0"):
        with pytest.raises(ValueError):
            dq.put_records(records)
    assert dq.depth == 0
    assert not os.path.exists(seg(tmp_path, 0))
    dq.close()


# ---------------------------------------------------------------- persistence


def test_close_and_reopen_resumes_at_read_pos(tmp_path):
    data = payloads(60)
    dq = make(tmp_path, max_bytes=200)
    dq.put_many(data)
    assert dq.get_many(27) == data[:27]
    dq.close()
    with pytest.raises(RuntimeError):
        dq.put(b"late")

    depth, read, write = read_meta(tmp_path).splitlines()
    assert depth == "33"
    read_num, read_pos = map(int, read.split(","))
    assert read_pos > 0              # mid-segment
    # the segment being read starts with the records 25 and 26
    with open(seg(tmp_path, read_num), "rb") as f:
        assert f.read(read_pos) == rec(data[25]) + rec(data[26])

    dq = make(tmp_path, max_bytes=200)
    assert dq.depth == 33
    assert dq.get() == data[27]
    dq.put(b"after-reopen")
    assert drain(dq) == data[28:] + [b"after-reopen"]
    assert dq.depth == 0
    dq.close()


def test_reopen_with_stale_metadata_salvages_unsynced_records(tmp_path):
    # Metadata says the write segment ends at 2 records but the file holds 3
    # (crash before the metadata sync): writing goes on in a fresh file and
    # the extra record is still read.
    with open(seg(tmp_path, 0), "wb") as f:
        f.write(rec(b"one") + rec(b"two") + rec(b"three"))
    write_meta(tmp_path, 2, 0, 0, 0, len(rec(b"one") + rec(b"two")))
    dq = make(tmp_path)
    dq.put(b"four")
    assert os.path.getsize(seg(tmp_path, 1)) == len(rec(b"four"))
    assert drain(dq) == [b"one", b"two", b"three", b"four"]
    assert dq.depth == 0
    dq.close()


def test_reopen_salvages_segments_begun_after_the_last_metadata_sync(tmp_path):
    # A crash after a rotation but before the metadata recorded it: the metadata still
    # names segment 0, yet segments 1 and 2 hold records. Nothing may be overwritten.
    with open(seg(tmp_path, 0), "wb") as f:
        f.write(rec(b"one") + rec(b"two"))
    with open(seg(tmp_path, 1), "wb") as f:
        f.write(rec(b"three"))
    with open(seg(tmp_path, 2), "wb") as f:
        f.write(rec(b"four") + rec(b"five"))
    write_meta(tmp_path, 2, 0, 0, 0, len(rec(b"one") + rec(b"two")))
    with open(meta(tmp_path) + ".123.tmp", "wb") as f:
        f.write(b"half a metadata wri")
    dq = make(tmp_path)
    assert dq.depth == 5
    assert not any(name.endswith(".tmp") for name in files(tmp_path))
    dq.put(b"six")
    assert os.path.getsize(seg(tmp_path, 3)) == len(rec(b"six"))
    assert drain(dq) == [b"one", b"two", b"three", b"four", b"five", b"six"]
    assert dq.depth == 0
    dq.close()


# ---------------------------------------------------------------- format pinning


def test_reads_hand_built_go_fixture(tmp_path):
    # Segment 3: one record already consumed (readPos points past it), then two.
    # Its size exceeds max_bytes_per_file, as files from older Go writers can:
    # the reader must use the real file size of a finished segment.
    s3 = rec(b"consumed") + rec(b"alpha") + rec(b"bravo-bravo-bravo")
    s4 = rec(b"charlie") + rec(b"d" * 30)
    with open(seg(tmp_path, 3), "wb") as f:
        f.write(s3)
    with open(seg(tmp_path, 4), "wb") as f:
        f.write(s4)
    write_meta(tmp_path, 4, 3, len(rec(b"consumed")), 4, len(s4))

    dq = make(tmp_path, max_bytes=20, max_size=64)
    assert dq.depth == 4
    assert dq.get() == b"alpha"
    assert dq.get() == b"bravo-bravo-bravo"
    assert not os.path.exists(seg(tmp_path, 3))    # finished and deleted
    assert dq.depth == 2
    assert dq.get_many(10) == [b"charlie", b"d" * 30]
    assert dq.depth == 0
    dq.close()
    assert read_meta(tmp_path) == "0\n4,%d\n4,%d\n" % (len(s4), len(s4))
    assert not any(f.endswith(".bad") for f in files(tmp_path))


def test_written_bytes_and_meta_text_are_exact(tmp_path):
    dq = make(tmp_path, max_bytes=20)
    dq.put(b"abc")            # 7 bytes
    dq.put(b"defgh")          # 9 bytes -> 16
    dq.put(b"ij")             # 6 more would make 22 > 20: rotate first
    dq.put_many([b"kl", b"mno"])   # 6 + 6 + 7 = 19: same segment
    dq.close()
    with open(seg(tmp_path, 0), "rb") as f:
        assert f.read() == (b"\x00\x00\x00\x03abc" b"\x00\x00\x00\x05defgh")
    with open(seg(tmp_path, 1), "rb") as f:
        assert f.read() == (b"\x00\x00\x00\x02ij" b"\x00\x00\x00\x02kl"
                            b"\x00\x00\x00\x03mno")
    assert read_meta(tmp_path) == "5\n0,0\n1,19\n"
    assert not any(f.endswith(".tmp") for f in files(tmp_path))

    dq = make(tmp_path, max_bytes=20)
    assert dq.get() == b"abc"
    dq.sync()
    assert read_meta(tmp_path) == "4\n0,7\n1,19\n"
    dq.close()


# ---------------------------------------------------------------- corruption


def test_bad_length_renames_segment_and_continues(tmp_path, caplog):
    s0 = rec(b"good-0") + struct.pack(">i", 5000) + b"garbage" + rec(b"unreachable")
    s1 = rec(b"good-1") + rec(b"good-2")
    with open(seg(tmp_path, 0), "wb") as f:
        f.write(s0)
    with open(seg(tmp_path, 1), "wb") as f:
        f.write(s1)
    write_meta(tmp_path, 4, 0, 0, 1, len(s1))

    dq = make(tmp_path, max_size=100)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert drain(dq) == [b"good-0", b"good-1", b"good-2"]
    assert os.path.exists(seg(tmp_path, 0) + ".bad")
    assert not os.path.exists(seg(tmp_path, 0))
    assert any(r.levelno == logging.ERROR and "5000" in r.getMessage()
               for r in caplog.records)
    # the unreadable record was never counted down; depth is reset at the tail
    assert dq.depth == 0
    dq.put(b"still-works")
    assert dq.get() == b"still-works"
    dq.close()


def test_negative_and_too_small_lengths_are_corruption(tmp_path):
    with open(seg(tmp_path, 0), "wb") as f:
        f.write(struct.pack(">i", -1) + b"zzzz")
    with open(seg(tmp_path, 1), "wb") as f:
        f.write(rec(b"abc"))               # shorter than min_msg_size=4
    with open(seg(tmp_path, 2), "wb") as f:
        f.write(rec(b"fine"))
    write_meta(tmp_path, 3, 0, 0, 2, len(rec(b"fine")))
    dq = make(tmp_path, min_size=4)
    assert drain(dq) == [b"fine"]
    assert os.path.exists(seg(tmp_path, 0) + ".bad")
    assert os.path.exists(seg(tmp_path, 1) + ".bad")
    assert dq.depth == 0
    dq.close()


def test_truncated_segment_renamed_and_later_segments_read(tmp_path, caplog):
    whole = rec(b"first") + rec(b"second-record")
    with open(seg(tmp_path, 0), "wb") as f:
        f.write(whole[:-4])                # body of the 2nd record cut short
    with open(seg(tmp_path, 1), "wb") as f:
        f.write(rec(b"x") + rec(b"y")[:2])  # length prefix cut short
    with open(seg(tmp_path, 2), "wb") as f:
        f.write(rec(b"last"))
    write_meta(tmp_path, 5, 0, 0, 2, len(rec(b"last")))

    dq = make(tmp_path)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        assert drain(dq) == [b"first", b"x", b"last"]
    assert os.path.exists(seg(tmp_path, 0) + ".bad")
    assert os.path.exists(seg(tmp_path, 1) + ".bad")
    assert sum(r.levelno == logging.ERROR for r in caplog.records) >= 2
    assert dq.depth == 0
    dq.close()
    assert read_meta(tmp_path) == "0\n2,8\n2,8\n"


def test_missing_segment_is_skipped(tmp_path):
    with open(seg(tmp_path, 1), "wb") as f:
        f.write(rec(b"survivor"))
    write_meta(tmp_path, 3, 0, 0, 1, len(rec(b"survivor")))   # segment 0 is gone
    dq = make(tmp_path)
    assert drain(dq) == [b"survivor"]
    assert dq.depth == 0
    dq.close()


def test_corrupt_write_segment_moves_writer_on(tmp_path):
    with open(seg(tmp_path, 0), "wb") as f:
        f.write(rec(b"ok") + struct.pack(">i", 99999))
    write_meta(tmp_path, 2, 0, 0, 0, len(rec(b"ok")) + 4)
    dq = make(tmp_path)
    assert dq.get() == b"ok"
    assert dq.get() is None
    assert os.path.exists(seg(tmp_path, 0) + ".bad")
    assert dq.depth == 0
    dq.put(b"new")
    assert os.path.exists(seg(tmp_path, 1))
    assert dq.get() == b"new"
    dq.close()
    assert read_meta(tmp_path) == "0\n1,7\n1,7\n"


# ---------------------------------------------------------------- empty / delete / limits


def test_empty_removes_segments_and_writes_meta(tmp_path):
    dq = make(tmp_path, max_bytes=50)
    dq.put_many(payloads(30))
    dq.get()
    assert len(files(tmp_path)) > 3
    dq.empty()
    assert dq.depth == 0
    assert dq.get() is None
    assert files(tmp_path) == [os.path.basename(meta(tmp_path))]
    depth, read, write = read_meta(tmp_path).splitlines()
    assert depth == "0" and read == write and read.endswith(",0")
    dq.put(b"fresh")
    assert dq.get() == b"fresh"
    dq.close()


def test_delete_removes_all_files(tmp_path):
    dq = make(tmp_path, max_bytes=50, sync_every=3)
    dq.put_many(payloads(30))
    dq.get_many(4)
    dq.sync()
    assert os.path.exists(meta(tmp_path))
    dq.delete()
    assert files(tmp_path) == []
    with pytest.raises(RuntimeError):
        dq.get()
    dq.delete()
    dq.close()


def test_size_limits_raise_value_error(tmp_path):
    dq = make(tmp_path, min_size=2, max_size=10)
    with pytest.raises(ValueError):
        dq.put(b"x" * 11)
    with pytest.raises(ValueError):
        dq.put(b"x")
    with pytest.raises(ValueError):
        dq.put_many([b"fine", b"y" * 11])     # nothing of the batch is written
    assert dq.depth == 0
    assert not os.path.exists(seg(tmp_path, 0))
    dq.put(b"x" * 10)
    assert dq.get() == b"x" * 10
    dq.close()


# ---------------------------------------------------------------- syncing


def test_sync_every_persists_metadata_in_background(tmp_path):
    dq = make(tmp_path, sync_every=5, sync_timeout=3600)
    dq.put_many([b"a", b"b", b"c", b"d"])
    assert not os.path.exists(meta(tmp_path))
    dq.put(b"e")
    wait_for(lambda: os.path.exists(meta(tmp_path)))
    assert read_meta(tmp_path) == "5\n0,0\n0,25\n"
    dq.close()
    assert dq._syncer is None


def test_sync_timeout_persists_metadata_after_activity(tmp_path):
    dq = make(tmp_path, sync_every=10_000, sync_timeout=0.02)
    dq.put(b"only-one")
    wait_for(lambda: os.path.exists(meta(tmp_path)))
    assert read_meta(tmp_path) == "1\n0,0\n0,12\n"
    assert dq.get() == b"only-one"
    wait_for(lambda: read_meta(tmp_path) == "0\n0,12\n0,12\n")
    syncer = dq._syncer
    dq.close()
    assert syncer.dead


def test_a_failed_fsync_fails_its_waiters_and_is_reported_until_a_sync_works(
        tmp_path, monkeypatch):
    reports, answers = [], []
    dq = DiskQueue(NAME, str(tmp_path), 1024, 1, 1024, 10_000, 3600, LOG,
                   on_error=reports.append)
    dq.put(b"a")
    assert reports == [None]
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    dq.when_synced(answers.append)
    wait_for(lambda: answers)
    assert isinstance(answers[0], OSError) and answers[0].errno == errno.EIO
    assert isinstance(reports[-1], OSError)
    assert not os.path.exists(meta(tmp_path))
    assert [name for name in files(tmp_path) if name.endswith(".tmp")] == []
    dq.put(b"b")                     # a write that works does not hide the failed sync
    assert isinstance(reports[-1], OSError)

    monkeypatch.setattr(os, "fsync", real_fsync)
    dq.when_synced(answers.append)
    wait_for(lambda: len(answers) == 2)
    assert answers[1] is None and reports[-1] is None
    dq.close()
    assert read_meta(tmp_path) == "2\n0,0\n0,10\n"
