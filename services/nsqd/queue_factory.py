"""The disk-backed queue of nsqd's mode for a topic, a channel, or a replica's copy of one:
the default mode's memory-then-disk queue, or (``--durable``) the disk queue of record
with its finish log (services/nsqd/message_queue.py describes both)."""

import logging
import os

from greensq.services.nsqd.diskqueue import DiskQueue
from greensq.services.nsqd.durable_queue import DurableQueue
from greensq.services.nsqd.finish_log import FinishLog
from greensq.services.nsqd.memory_first_queue import MemoryFirstQueue
from greensq.services.shared.message import HEADER_SIZE

log = logging.getLogger("greensq")


def disk_backed_queue(opts, label, name, directory, mem_limit, on_error, on_due=None,
                      max_bytes=0, max_msg_size=None):
    """The queue whose files are ``<name>.diskqueue.*`` in ``directory``, holding up to
    ``mem_limit`` messages in memory; ``on_error`` hears how its disk writes go, ``on_due``
    takes a durable queue's deferred records as it reads them, ``max_bytes`` bounds the
    default mode's disk queue (under --max-bytes-policy) and ``max_msg_size`` the records
    it reads back (--max-msg-size unless said)."""
    largest = (opts.max_msg_size if max_msg_size is None else max_msg_size) + HEADER_SIZE
    disk = DiskQueue(name, directory, opts.max_bytes_per_file, HEADER_SIZE, largest,
                     opts.sync_every, opts.sync_timeout, log, retain=opts.durable,
                     on_error=on_error)
    if not opts.durable:
        drop_oldest = opts.max_bytes_policy == "drop-oldest"
        return MemoryFirstQueue(label, mem_limit, disk, max_bytes, drop_oldest)
    finish_log = FinishLog(os.path.join(directory, f"{name}.diskqueue.finished.dat"))
    return DurableQueue(label, mem_limit, disk, finish_log, on_due)
