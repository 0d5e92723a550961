"""services/nsqd/durable_queue.py and services/nsqd/finish_log.py on their own: the window of
records read and not done with, the persisted read position, the finish log and what a
reopened queue delivers. (test_durable.py runs the daemon.)"""

import logging
import os

import gevent
import pytest

from greensq.services.nsqd import finish_log
from greensq.services.nsqd.diskqueue import DiskQueue
from greensq.services.nsqd.durable_queue import DurableQueue
from greensq.services.nsqd.finish_log import FinishLog
from greensq.services.shared.message import HEADER_SIZE, IdGenerator, Message

LOG = logging.getLogger("test.durable_queue")


def open_queue(path, mem_limit=100, deferred=None):
    queue_of_record = DiskQueue("q", str(path), 1 << 20, HEADER_SIZE, 1024 + HEADER_SIZE,
                                2500, 60.0, LOG, retain=True)
    on_due = (lambda msg, delay: deferred.append((msg.body, delay))) if deferred is not None else None
    finished = FinishLog(str(path / "q.finished"))
    return DurableQueue("q", mem_limit, queue_of_record, finished, on_due)


def publish(queue, bodies):
    queue.put_many(Message.new_batch(IdGenerator(1), bodies))
    done = []
    queue.when_stored(done.append)
    while not done:
        gevent.sleep(0.001)
    assert done == [None]


def meta(path):
    with open(path / "q.diskqueue.meta.dat") as fh:
        return fh.read()


def test_the_read_position_moves_only_past_finished_records(tmp_path):
    queue = open_queue(tmp_path)
    publish(queue, [b"a", b"b", b"c", b"d"])
    a, b, c, d = queue.take(4)
    for msg in (b, c, d):
        queue.finish([msg])
    queue.flush()
    # a holds the read position; b..d are one finished run behind it.
    assert queue.window.head.start == a.entry.start
    assert queue.window.head.next.count == 3 and queue.window.head.next.next is None
    queue.finish([a])
    queue.flush()
    assert queue.window.head is None
    queue.close()
    assert meta(tmp_path).startswith("0\n")       # depth 0: nothing left to deliver


def test_a_reopened_queue_delivers_what_was_not_finished(tmp_path):
    queue = open_queue(tmp_path, mem_limit=2)
    publish(queue, [b"%d" % i for i in range(10)])
    taken = queue.take(10)
    for msg in taken:
        if msg.body not in (b"3", b"7"):
            queue.finish([msg])
    queue.flush()
    queue.queue_of_record._stop_syncer()            # a crash: nothing more is written
    reopened = open_queue(tmp_path)
    assert [msg.body for msg in reopened.take(20)] == [b"3", b"7"]


def test_requeued_and_deferred_messages_keep_attempts_and_due_time(tmp_path):
    queue = open_queue(tmp_path)
    publish(queue, [b"again", b"later"])
    again, later = queue.take(2)
    again.attempts = later.attempts = 3
    queue.requeue(again)
    queue.defer(later, 60.0)
    queue.flush()
    queue.queue_of_record._stop_syncer()
    deferred = []
    reopened = open_queue(tmp_path, deferred=deferred)
    delivered = reopened.take(10)
    assert [(m.body, m.attempts) for m in delivered] == [(b"again", 3)]
    assert [body for body, _ in deferred] == [b"later"]
    assert 55 < deferred[0][1] <= 60


def test_the_finish_log_is_rewritten_compactly(tmp_path, monkeypatch):
    monkeypatch.setattr(finish_log, "COMPACT_AT", 2000)
    queue = open_queue(tmp_path, mem_limit=10)
    publish(queue, [b"%d" % i for i in range(400)])
    taken = []
    while len(taken) < 400:
        taken += queue.take(50)
    for msg in taken[1:]:                   # out of order behind the first, still in flight
        queue.finish([msg])
        queue.flush()
    size = os.path.getsize(tmp_path / "q.finished")
    assert size <= 2000 + finish_log.ENTRY.size
    queue.queue_of_record._stop_syncer()
    assert [m.body for m in open_queue(tmp_path).take(500)] == [b"0"]


def test_a_finish_log_cut_short_is_read_up_to_the_last_whole_entry(tmp_path):
    path = str(tmp_path / "f")
    log = FinishLog(path)
    log.record_finished(10, 20)
    log.record_due(30, 123)
    log.flush()
    with open(path, "ab") as fh:
        fh.write(b"F\x00\x00")           # a write cut by a crash
    reread = FinishLog(path)
    assert reread.is_finished(10) and reread.is_finished(19) and not reread.is_finished(20)
    assert reread.due == {30: 123}


@pytest.fixture(autouse=True)
def _no_leftover_greenlets():
    yield
    gevent.sleep(0)
