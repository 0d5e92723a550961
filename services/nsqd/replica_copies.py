"""A replica's side of replication: the copies it keeps of its primaries' messages, and
taking one over when its primary has been silent for its failover timeout (README,
"Replication").

Each primary's copy lives in ``replica.<primary ID>/`` in the data directory:
``copy.json`` (who the primary is, its last session, the state), ``taken.ids`` after a
takeover (the IDs taken over, 16 bytes each, until the primary has come back), and one
directory per generation, ``g<N>/``: a generation is the copy built from one connection
on, its first part (``state/``) holding the state the primary sent when it connected,
its second (``live/``) what followed; a part's files are a disk queue of the replica's
own mode per copied queue (named as the replica names its own: ``topic`` or
``topic:channel``). A new generation replaces the others once it is complete; if the
primary dies first, a takeover delivers them all (each message once).
"""

import json
import logging
import os
import re
import shutil
import time

import gevent
from gevent.lock import Semaphore

from greensq.actors.actor import Receipt, Refused, StoreFailed
from greensq.services.nsqd.copy_queue import CopyQueue
from greensq.services.nsqd.queue_factory import disk_backed_queue
from greensq.services.nsqd.replication_wire import MAX_FRAME
from greensq.services.shared.files import replace_file
from greensq.services.shared.message import Message
from greensq.services.shared.names import backend_name, is_valid_name

log = logging.getLogger("greensq")

COPY_PREFIX = "replica."
RECORD_FILE = "copy.json"
TAKEN_FILE = "taken.ids"
STATE_PART, LIVE_PART = "state", "live"
WATCH_INTERVAL = 0.25
_GENERATION_DIR = re.compile(r"^g(\d+)$")
_QUEUE_FILE = re.compile(r"^(.+)\.diskqueue\.(?:\d{6}|meta|finished)\.dat$")
_PRIMARY_ID = re.compile(r"^[0-9a-f]{32}$")

# A copy's states, as the replica's /stats shows them.
SYNCING, FOLLOWING, SILENT, STOPPED = "syncing", "following", "silent", "stopped"
TAKING_OVER, TAKEN_OVER = "taking_over", "taken_over"


def valid_primary_id(value):
    return isinstance(value, str) and bool(_PRIMARY_ID.match(value))


class Generation:
    """The copy built from one connection on: a ``CopyQueue`` per copied queue."""

    def __init__(self, copy, number, complete=False):
        self.copy = copy
        self.number = number
        self.directory = os.path.join(copy.directory, f"g{number}")
        self.complete = complete
        self.queues = {}        # (topic, channel or None) -> CopyQueue
        self.dirty = set()      # queues written since the last acknowledgement

    def queue(self, topic, channel):
        key = (topic, channel)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = self._new_queue(topic, channel)
        self.dirty.add(queue)
        return queue

    def _new_queue(self, topic, channel):
        opts = self.copy.service.nsqd.opts
        name = backend_name(topic, channel)

        def make_part(snapshot, on_due):
            directory = os.path.join(self.directory, STATE_PART if snapshot else LIVE_PART)
            os.makedirs(directory, exist_ok=True)
            return disk_backed_queue(
                opts, f"copy {self.copy.primary_id[:8]} {name}", name, directory,
                self.copy.service.head_limit if opts.durable else 0,
                self.copy.service.nsqd.set_health, on_due, max_msg_size=MAX_FRAME)

        return CopyQueue(topic, channel, make_part, self.copy.service.head_limit,
                         opts.durable)

    def load(self):
        """Open the parts this generation left on disk (after a restart)."""
        for part_dir, snapshot in ((STATE_PART, True), (LIVE_PART, False)):
            directory = os.path.join(self.directory, part_dir)
            try:
                files = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in sorted({m.group(1) for m in map(_QUEUE_FILE.match, files) if m}):
                topic, _, channel = name.partition(":")
                if not is_valid_name(topic) or (channel and not is_valid_name(channel)):
                    continue
                queue = self.queues.get((topic, channel or None))
                if queue is None:
                    queue = self.queues[(topic, channel or None)] = self._new_queue(
                        topic, channel or None)
                queue.reopen_part(snapshot)
        for queue in self.queues.values():
            queue._refill()

    def __len__(self):
        return sum([len(queue) for queue in self.queues.values()])

    def touched_parts(self):
        parts = []
        for queue in self.dirty:
            parts += queue.touched_parts()
        self.dirty.clear()
        return parts

    def finish_snapshot(self):
        self.complete = True
        for queue in self.queues.values():
            queue.snapshot_complete()

    def close(self):
        persisted = True
        for queue in self.queues.values():
            persisted = queue.close() and persisted
        return persisted

    def delete(self):
        for queue in self.queues.values():
            queue.delete()
        self.queues = {}
        shutil.rmtree(self.directory, ignore_errors=True)


class Copy:
    """One primary's copy on this replica (see the module docstring)."""

    def __init__(self, service, primary_id):
        self.service = service
        self.primary_id = primary_id
        self.directory = os.path.join(service.nsqd.data_path, COPY_PREFIX + primary_id)
        self.info = {}              # the primary's hello: address, ports, hostname
        self.session = None         # the primary's run that last connected
        self.goodbye = False        # that run shut down cleanly
        self.failover_timeout = 5.0
        self.generations = {}       # number -> Generation
        self.active = None          # the generation the connected primary writes
        self.taken_count = 0        # after a takeover, until the primary has come back
        self.taken_at = None
        self.taking_over = False
        self.lock = Semaphore()     # held by the connected primary, or by a takeover
        self.connection = None      # the socket of the connected primary
        self.last_heard = time.monotonic()

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self):
        if self.taking_over:
            return TAKING_OVER
        if self.taken_at is not None:
            return TAKEN_OVER
        if self.connection is None:
            return STOPPED if self.goodbye else SILENT
        return FOLLOWING if self.active is not None and self.active.complete else SYNCING

    @property
    def name(self):
        """The primary as nsqadmin names a node: broadcast address and HTTP port."""
        info = self.info
        address = info.get("broadcast_address") or "?"
        return f"{address}:{info.get('http_port', 0)}"

    def __len__(self):
        return sum([len(generation) for generation in self.generations.values()])

    def silent_for(self, now=None):
        return (now or time.monotonic()) - self.last_heard

    def due_for_takeover(self, now):
        return (not self.taking_over and self.taken_at is None and self.session is not None
                and self.silent_for(now) > self.failover_timeout)

    # -- generations ---------------------------------------------------------------------

    def begin_generation(self):
        number = max(self.generations, default=0) + 1
        self.active = self.generations[number] = Generation(self, number)
        self.save()
        return self.active

    def complete_generation(self):
        """The active generation holds the primary's whole state: the others go."""
        active = self.active
        active.finish_snapshot()
        for number in [n for n in self.generations if n != active.number]:
            self.generations.pop(number).delete()
        self.save()

    def drop_generations(self):
        for generation in self.generations.values():
            generation.delete()
        self.generations = {}
        self.active = None

    # -- the record on disk ---------------------------------------------------------------

    def save(self):
        """Write ``copy.json`` (logged if it cannot be: the copy itself is on disk)."""
        record = {
            "primary_id": self.primary_id, "info": self.info, "session": self.session,
            "goodbye": self.goodbye, "failover_timeout": self.failover_timeout,
            "generations": {str(n): g.complete for n, g in self.generations.items()},
            "taken_count": self.taken_count, "taken_at": self.taken_at,
        }
        os.makedirs(self.directory, exist_ok=True)
        try:
            replace_file(os.path.join(self.directory, RECORD_FILE), json.dumps(record).encode())
        except OSError as exc:
            log.error("REPLICA(%s): failed to write %s - %s", self.name, RECORD_FILE, exc)

    def load(self):
        """The copy as a previous run left it; False if there is no usable record."""
        try:
            with open(os.path.join(self.directory, RECORD_FILE), "rb") as fh:
                record = json.loads(fh.read())
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict):
            return False
        self.info = record.get("info") if isinstance(record.get("info"), dict) else {}
        self.session = record.get("session")
        self.goodbye = bool(record.get("goodbye"))
        timeout = record.get("failover_timeout")
        if isinstance(timeout, (int, float)) and timeout >= 1:
            self.failover_timeout = float(timeout)
        self.taken_count = int(record.get("taken_count") or 0)
        self.taken_at = record.get("taken_at")
        generations = record.get("generations") or {}
        for entry in os.listdir(self.directory):
            match = _GENERATION_DIR.match(entry)
            if match:
                number = int(match.group(1))
                generation = Generation(self, number, bool(generations.get(str(number))))
                generation.load()
                self.generations[number] = generation
        return True

    # -- takeover -------------------------------------------------------------------------

    def taken_path(self):
        return os.path.join(self.directory, TAKEN_FILE)

    def taken_ids(self):
        """The IDs taken over, 16 bytes each (b"" if none or unreadable)."""
        try:
            with open(self.taken_path(), "rb") as fh:
                return fh.read()
        except OSError:
            return b""

    def reconciled(self):
        """The primary came back and dropped what was taken over: forget it."""
        self.taken_at = None
        self.taken_count = 0
        try:
            os.remove(self.taken_path())
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("REPLICA(%s): failed to remove %s - %s", self.name, TAKEN_FILE, exc)
        self.save()

    def close(self):
        persisted = True
        for generation in self.generations.values():
            persisted = generation.close() and persisted
        self.save()
        return persisted


class ReplicaCopies:
    """Every copy this nsqd keeps for its primaries, and the watch for silent ones."""

    def __init__(self, nsqd):
        self.nsqd = nsqd
        self.copies = {}
        self.head_limit = max(nsqd.opts.mem_queue_size, 2500)
        self.watcher = None
        self.closing = False

    def load(self):
        """The copies a previous run kept (each primary's silence counts from now)."""
        try:
            entries = os.listdir(self.nsqd.data_path)
        except OSError:
            return
        for entry in sorted(entries):
            primary_id = entry[len(COPY_PREFIX):]
            if entry.startswith(COPY_PREFIX) and valid_primary_id(primary_id):
                copy = Copy(self, primary_id)
                if copy.load():
                    self.copies[primary_id] = copy
                    log.info("REPLICA(%s): copy loaded (%d messages, %s)", copy.name,
                             len(copy), copy.state)

    def copy_for(self, primary_id):
        copy = self.copies.get(primary_id)
        if copy is None:
            copy = self.copies[primary_id] = Copy(self, primary_id)
        return copy

    def start(self):
        self.watcher = gevent.spawn(self._watch)

    def _watch(self):
        while not self.closing:
            now = time.monotonic()
            for copy in list(self.copies.values()):
                if copy.due_for_takeover(now):
                    copy.taking_over = True
                    gevent.spawn(self.take_over, copy)
            gevent.sleep(WATCH_INTERVAL)

    def take_over(self, copy):
        """Deliver a silent primary's copy from this nsqd (see Takeover)."""
        connection = copy.connection
        if connection is not None:
            log.info("REPLICA(%s): no word for %.1fs, closing its connection", copy.name,
                     copy.silent_for())
            shut(connection)
        with copy.lock:
            Takeover(self.nsqd, copy).run()

    def stats(self):
        """Each copy as ``/stats`` shows it (``replication.copies``)."""
        now = time.monotonic()
        return [{
            "primary": copy.name,
            "primary_id": copy.primary_id,
            "state": copy.state,
            "messages": len(copy),
            "silent_ms": 0 if copy.connection is not None else int(copy.silent_for(now) * 1000),
            "failover_timeout_ms": int(copy.failover_timeout * 1000),
            "taken_over_count": copy.taken_count,
            "taken_over_at": int(copy.taken_at or 0),
        } for copy in sorted(self.copies.values(), key=lambda copy: copy.name)]

    def close(self):
        """Shutdown: stop watching, close the primaries' connections, and write what the
        copies hold only in memory to disk. False if something could not be written."""
        self.closing = True
        if self.watcher is not None:
            self.watcher.kill()
        for copy in self.copies.values():
            if copy.connection is not None:
                shut(copy.connection)
        persisted = True
        for copy in self.copies.values():
            with copy.lock:
                persisted = copy.close() and persisted
        return persisted


class Takeover:
    """Every message of a copy into this nsqd's own topic or channel of the same name
    (created, and so registered with nsqlookupd, if need be), with its attempts and the
    time it still had to wait if it was deferred; their IDs into ``taken.ids``."""

    def __init__(self, nsqd, copy):
        self.nsqd = nsqd
        self.copy = copy
        self.count = 0
        self.seen = None

    def run(self):
        copy = self.copy
        copy.taking_over = True
        try:
            count = len(copy)
            log.info("REPLICA(%s): silent for %.1fs, taking over its copy (%d messages)",
                     copy.name, copy.silent_for(), count)
            if len(copy.generations) > 1:
                self.seen = set()     # generations overlap: each message once per queue
            with open(copy.taken_path(), "ab") as ids:
                for number in sorted(copy.generations):
                    generation = copy.generations[number]
                    # The primary's channels first: its topics' backlogs go to them too.
                    for topic, channel in generation.queues:
                        if channel is not None:
                            self.nsqd.get_topic(topic).get_channel(channel)
                    for (topic, channel), queue in list(generation.queues.items()):
                        for batch in queue.drain():
                            self._deliver(topic, channel, batch, ids)
                        for msg, channels in queue.transit_targets():
                            for name in channels:
                                self._deliver(topic, name, [_clone(msg)], ids)
                    generation.delete()
            copy.generations = {}
            copy.active = None
            copy.taken_count += self.count
            copy.taken_at = time.time()
            copy.save()
            log.info("REPLICA(%s): took over %d messages", copy.name, self.count)
        except (Refused, OSError) as exc:
            log.error("REPLICA(%s): takeover stopped - %s (what is left is taken over at "
                      "the next start)", copy.name, exc)
        finally:
            copy.taking_over = False

    def _deliver(self, topic_name, channel_name, msgs, ids):
        if self.seen is not None:
            seen, queue = self.seen, (topic_name, channel_name)
            msgs = [msg for msg in msgs if (queue, msg.id) not in seen]
            seen.update([(queue, msg.id) for msg in msgs])
        if not msgs:
            return
        taken_ids = b"".join([msg.id for msg in msgs])
        # Under new IDs of this nsqd's: the primary's may equal some of its own (nsqds of
        # one --node-id), and one ID twice in a channel would mix up their deliveries.
        now = time.time_ns()
        msgs = [Message(new_id, msg.body, msg.timestamp, msg.attempts, _delay_left(msg, now))
                for msg, new_id in zip(msgs, self.nsqd.ids.next_ids(len(msgs)))]
        while True:
            if self.nsqd.exiting:
                raise Refused()
            try:
                self._store(topic_name, channel_name, msgs)
                break
            except StoreFailed as exc:
                log.error("REPLICA(%s): cannot store %d messages in %s - %s; retrying",
                          self.copy.name, len(msgs), backend_name(topic_name, channel_name),
                          exc)
                gevent.sleep(1.0)
        ids.write(taken_ids)
        self.count += len(msgs)

    def _store(self, topic_name, channel_name, msgs):
        topic = self.nsqd.get_topic(topic_name)
        if channel_name is None:
            batches = _by_delay(msgs)
            for batch in batches:
                receipt = Receipt()
                topic.call(topic.on_pub, receipt, batch)
                receipt.wait()
            return
        channel = topic.get_channel(channel_name)
        for batch in _by_delay(msgs):
            receipt = Receipt()
            channel.call(channel.on_put, receipt, batch)
            receipt.wait()


def _delay_left(msg, now):
    """A copied message's delay: what a deferred one had left, else its DPUB delay."""
    due = msg.deadline
    if not due:
        return msg.defer_ms
    return max(1, -(-(due - now) // 1_000_000)) if due > now else 0


def _by_delay(msgs):
    """``msgs`` as batches that are deferred or not as a whole (a batch's first message
    decides for it, as a published batch does)."""
    deferred = [msg for msg in msgs if msg.defer_ms]
    if not deferred:
        return [msgs]
    ready = [msg for msg in msgs if not msg.defer_ms]
    return [batch for batch in (ready, deferred) if batch]


def _clone(msg):
    """Another channel's own copy of a message being taken over."""
    clone = msg.copy()
    clone.deadline = None
    return clone


def shut(sock):
    """End a connection now, whichever greenlet is reading it."""
    try:
        sock.shutdown(2)
    except OSError:
        pass
