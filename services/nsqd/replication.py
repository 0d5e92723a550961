"""A primary's side of replication (``--replica-tcp-address``): its identity, a link to
each replica, its queues' changes sent to them, its state sent when a link connects, and
what a replica took over dropped from its queues (README, "Replication").

The identity is a random ID kept in ``replication.dat`` in the data directory: a replica
keeps one copy per primary ID, so a primary is the same primary across restarts and
address changes, and a new data directory is a new primary. Each run has its own session
ID; a replica that sees a new session after a run that did not say goodbye knows the
primary crashed.

The state of a topic or channel is read in its owner's turn, so it is exact: what its
queue holds in memory (for a channel, also in flight and deferred), and its disk
queue's unread records, streamed from the files afterwards (services/nsqd/disk_stream.py).
Every change after that turn reaches the replica through the queue
(services/nsqd/replicated_queue.py).
"""

import heapq
import logging
import os
import time
import uuid

import gevent
import ujson

from greensq.actors.actor import Refused
from greensq.services.nsqd import replication_wire as wire
from greensq.services.nsqd.disk_stream import DiskStream
from greensq.services.nsqd.replica_link import SYNCING, UP, ReplicaLink
from greensq.services.nsqd.replicated_queue import ReplicatedQueue
from greensq.services.shared import json_input
from greensq.services.shared.files import replace_file

log = logging.getLogger("greensq")

IDENTITY_FILE = "replication.dat"
RECONCILE_TIMEOUT = 10.0
GOODBYE_TIMEOUT = 2.0
PURGE_BATCH = 1024
DEFERRED_PER_FRAME = 1000


class Replication:
    """Everything a primary does for its replicas (see the module docstring)."""

    def __init__(self, nsqd):
        self.nsqd = nsqd
        opts = nsqd.opts
        self.primary_id = None
        self.session = uuid.uuid4().hex
        self.failover_timeout = opts.replica_failover_timeout
        self.acknowledge_timeout = max(0.5, self.failover_timeout / 2)
        self.links = [ReplicaLink(self, address)
                      for address in dict.fromkeys(opts.replica_tcp_address)]

    def load_identity(self):
        """This data directory's primary ID, made on first use (``OSError`` if it cannot
        be written: nsqd then refuses to start, as for its metadata)."""
        path = os.path.join(self.nsqd.data_path, IDENTITY_FILE)
        try:
            with open(path, "rb") as fh:
                primary_id = json_input.loads(fh.read()).get("primary_id")
        except (OSError, ValueError, AttributeError):
            primary_id = None
        if not (isinstance(primary_id, str) and len(primary_id) == 32):
            primary_id = uuid.uuid4().hex
            replace_file(path, ujson.dumps({"primary_id": primary_id}).encode())
        self.primary_id = primary_id

    def hello(self):
        nsqd, opts = self.nsqd, self.nsqd.opts
        return {"primary_id": self.primary_id, "session": self.session,
                "broadcast_address": opts.broadcast_address, "hostname": opts.hostname,
                "tcp_port": opts.broadcast_tcp_port or nsqd.tcp_port,
                "http_port": opts.broadcast_http_port or nsqd.http_port,
                "failover_timeout": self.failover_timeout}

    def start(self):
        for link in self.links:
            link.start()

    def close(self, persisted):
        """Shutdown, once every queue is flushed: goodbye to the replicas if all of it
        was written (they then drop their copies when this nsqd comes back)."""
        if persisted:
            for link in self.links:
                link.say_goodbye(GOODBYE_TIMEOUT)
        for link in self.links:
            link.stop()

    # -- the queues ---------------------------------------------------------------------------

    def replicated(self, queue, topic, channel):
        return ReplicatedQueue(queue, self, topic, channel)

    def targets_for_new_queue(self):
        """A queue made now has no state the links have not seen: it sends them all."""
        return {link: link.epoch for link in self.links if link.state in (SYNCING, UP)}

    def channel_names(self, topic_name):
        """The channels of a topic that have copies (its ephemeral ones have not)."""
        topic = self.nsqd.topics.get(topic_name)
        if topic is None:
            return []
        return [name for name, channel in topic.channels.items() if not channel.ephemeral]

    def holders(self):
        """Every replicated topic and its replicated channels, as they are now."""
        return [(topic, [channel for channel in topic.channels.values()
                         if isinstance(channel.queue, ReplicatedQueue)])
                for topic in list(self.nsqd.topics.values())
                if isinstance(topic.queue, ReplicatedQueue)]

    # -- the state ------------------------------------------------------------------------

    def send_state(self, link, topic, channels):
        """The state of a topic and its channels, each read in its own turn; from then on
        their changes go to ``link`` too."""
        epoch = link.epoch
        for holder, read in [(topic, _topic_state)] + [(c, _channel_state) for c in channels]:
            try:
                holder.ask(read, link, epoch, holder)
            except Refused:
                continue     # deleted meanwhile (its deletion reaches the replica)

    # -- what a replica took over -----------------------------------------------------------

    def reconcile_before_serving(self):
        """At start, before serving: if the data directory holds messages, ask each
        replica what it took over and drop that (a replica that cannot be asked is
        logged and not waited for)."""
        if not any(len(topic.queue) or any(len(c.queue) for c in channels)
                   for topic, channels in self.holders()):
            return
        for link in self.links:
            link.reconcile(RECONCILE_TIMEOUT)

    def drop_taken(self, link, taken):
        """Drop the messages ``link``'s replica took over from every queue, each in its
        owner's turn (those in flight finish as they would)."""
        if not len(taken):
            return
        dropped = 0
        for topic, channels in self.holders():
            for holder in [topic, *channels]:
                result = []
                try:
                    holder.ask(_purge, holder, taken, result)
                except Refused:
                    continue
                dropped += sum(result)
        log.info("REPLICA(%s): it took over %d messages; %d of them dropped here",
                 link.address, len(taken), dropped)

    def stats(self):
        return {"primary_id": self.primary_id,
                "replicas": [link.stats() for link in self.links]}


def _topic_state(link, epoch, topic):
    """In the topic's turn: its queue's state to ``link``, which gets its changes now."""
    queue = topic.queue
    if link.epoch != epoch:
        return
    queue.targets[link] = epoch
    held = list(queue.inner.memory)
    if held:
        link.enqueue(_state_puts(queue.prefix, held))
    stream = DiskStream.of(queue.inner, queue.prefix)
    if stream is not None:
        link.add_stream(stream)


def _channel_state(link, epoch, channel):
    """In the channel's turn: in flight, queued and deferred messages to ``link``."""
    queue = channel.queue
    if link.epoch != epoch:
        return
    queue.targets[link] = epoch
    held = list(channel.in_flight.values()) + list(queue.inner.memory)
    frames = _state_puts(queue.prefix, held) if held else queue.announcement()
    if channel.deferred:
        now, wall = time.monotonic(), time.time_ns()
        entries = [(msg, wall + int((due - now) * 1e9)) for due, _, msg in channel.deferred]
        for start in range(0, len(entries), DEFERRED_PER_FRAME):
            frames.append(wire.deferred_frame(
                queue.prefix, entries[start:start + DEFERRED_PER_FRAME],
                wire.SNAPSHOT_PART | wire.WHOLE_RECORDS))
    if frames:
        link.enqueue(frames)
    stream = DiskStream.of(queue.inner, queue.prefix)
    if stream is not None:
        link.add_stream(stream)


def _state_puts(prefix, msgs):
    """PUT frames of the state: runs of messages with the same DPUB delay (a topic may
    hold deferred publishes beside others)."""
    frames, start = [], 0
    for index in range(1, len(msgs) + 1):
        if index == len(msgs) or msgs[index].defer_ms != msgs[start].defer_ms:
            frames += wire.put_frames(prefix, msgs[start:index], wire.SNAPSHOT_PART)
            start = index
    return frames


def _purge(holder, taken, result):
    """In the holder's turn: drop the messages in ``taken`` from its queue (and a
    channel's deferred ones), keeping the others in their order."""
    queue = holder.queue
    inner = queue.inner
    dropped = []
    remaining = len(inner)
    while remaining > 0:
        batch = inner.take(min(PURGE_BATCH, remaining))
        if not batch:
            break
        remaining -= len(batch)
        kept = [msg for msg in batch if msg.id not in taken]
        if len(kept) == len(batch) and not inner.durable:
            inner.put_many(kept, accepted=True)
            continue
        inner.finish(batch)
        if kept:
            inner.put_many(kept, accepted=True)
        dropped += [msg for msg in batch if msg.id in taken]
        gevent.sleep(0)
    deferred = getattr(holder, "deferred", None)
    if deferred:
        gone = [entry for entry in deferred if entry[2].id in taken]
        if gone:
            deferred[:] = [entry for entry in deferred if entry[2].id not in taken]
            heapq.heapify(deferred)
            inner.finish([entry[2] for entry in gone])
            dropped += [entry[2] for entry in gone]
    queue.dropped_for_replica(dropped)
    result.append(len(dropped))
