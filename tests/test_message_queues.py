"""services/nsqd/message_queue.py's interface: both of nsqd's queues implement all of it
and nothing more, and run the same table of calls through it to the same outcome,
across a close and a reopen. (test_durable_queue.py covers what is the durable queue's
own: its window, finish log and crash recovery.)"""

import logging

import pytest

from greensq.services.nsqd.diskqueue import DiskQueue
from greensq.services.nsqd.durable_queue import DurableQueue
from greensq.services.nsqd.finish_log import FinishLog
from greensq.services.nsqd.memory_first_queue import MemoryFirstQueue
from greensq.services.nsqd.message_queue import MessageQueue
from greensq.services.shared.message import HEADER_SIZE, IdGenerator, Message
from support import gevent_wait_until

LOG = logging.getLogger("test.message_queues")
IMPLEMENTATIONS = [MemoryFirstQueue, DurableQueue]


def public_names(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_an_implementation_is_the_whole_interface_and_only_it(cls):
    assert issubclass(cls, MessageQueue)
    assert not cls.__abstractmethods__
    assert public_names(cls) == public_names(MessageQueue)


def open_queue(cls, path):
    """A queue of ``cls`` on the files in ``path``, memory for two messages."""
    durable = cls is DurableQueue
    disk = DiskQueue("q", str(path), 1 << 20, HEADER_SIZE, 1024 + HEADER_SIZE, 2500, 60.0,
                     LOG, retain=durable)
    if durable:
        return DurableQueue("q", 2, disk, FinishLog(str(path / "q.finished")))
    return MemoryFirstQueue("q", 2, disk)


def stored(queue):
    outcome = []
    queue.when_stored(outcome.append)
    return gevent_wait_until(lambda: outcome, message="when_stored")[0]


# (call, argument, what follows: the queue's length, or the bodies a call returns).
# Bodies name messages; a taken message is passed back as the object ``take`` gave.
TABLE = [
    ("put_many", [b"a", b"b", b"c", b"d"], 4),    # two in memory, two on disk
    ("stored", None, None),
    ("take", 2, [b"a", b"b"]),
    ("requeue", b"a", 3),                          # to memory, which has room
    ("defer", b"b", 3),                            # held by the channel meanwhile
    ("take", 10, [b"a", b"c", b"d"]),
    ("finish", [b"c"], 0),
    ("undefer", b"b", 1),
    ("take", 10, [b"b"]),
    ("finish", [b"b"], 0),
    ("put_many", [b"e", b"f", b"g"], 3),
    ("peek", 2, [b"e", b"f"]),
    ("take", 1, [b"e"]),
    ("stored", None, None),
    # In flight at shutdown, as a channel passes them: d, a, e. Finished: b, c.
    ("close", [b"d", b"a", b"e"], True),
    ("reopen", None, [b"a", b"d", b"e", b"f", b"g"]),   # what is not finished, in any order
    ("empty", None, 0),
    ("close", [], True),
    ("reopen", None, []),
]


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_both_queues_run_the_same_table(cls, tmp_path):
    queue = open_queue(cls, tmp_path)
    ids = IdGenerator(1)
    held = {}                       # body -> the message taken
    for step, (call, arg, expected) in enumerate(TABLE):
        where = f"step {step}: {call}({arg!r})"
        if call == "put_many":
            queue.put_many(Message.new_batch(ids, arg))
        elif call == "stored":
            assert stored(queue) is None, where
            continue
        elif call in ("take", "peek"):
            msgs = queue.take(arg) if call == "take" else queue.peek(arg, 1 << 20)
            held.update((msg.body, msg) for msg in msgs if call == "take")
            assert [msg.body for msg in msgs] == expected, where
            continue
        elif call in ("requeue", "undefer"):
            getattr(queue, call)(held[arg])
        elif call == "defer":
            queue.defer(held[arg], 60.0)
        elif call == "finish":
            queue.finish([held.pop(body) for body in arg])
            queue.flush()
        elif call == "empty":
            queue.empty()
        elif call == "close":
            assert queue.close([held.pop(body) for body in arg]) is expected, where
            continue
        elif call == "reopen":
            queue = open_queue(cls, tmp_path)
            assert sorted(msg.body for msg in queue.take(100)) == expected, where
            continue
        assert len(queue) == expected, where
