"""The nsqd core: the registry of topic actors, message IDs, metadata and shutdown.

One ``NSQD`` lives in the worker process and is shared by the TCP clients and the HTTP
resources, all greenlets of one hub. Creating or looking up a topic or channel is a plain
call that never switches; everything else goes through the actors' mailboxes, except
that a publish to an idle topic is handled at once in the publisher's greenlet (see
``Actor.call``).
"""

import logging
import os
import time
import urllib.parse
from functools import partial

import gevent
import gevent.ssl
import ujson
from gevent.event import AsyncResult

from greensq.actors.actor import Receipt, Refused
from greensq.actors.lookup_peer import LookupPeer
from greensq.actors.protocol_v2 import serve_v2
from greensq.actors.topic import Topic
from greensq.services.nsqd.memory import GC_PAUSES
from greensq.services.nsqd.memory_first_queue import MemoryFirstQueue
from greensq.services.nsqd.publish_gathering import PublishGathering
from greensq.services.nsqd.queue_factory import disk_backed_queue
from greensq.services.nsqd.replica_copies import ReplicaCopies
from greensq.services.nsqd.replica_server import serve_replica
from greensq.services.nsqd.replication import Replication
from greensq.services.nsqd.replication_wire import MAGIC_R1
from greensq.services.nsqd.statsd import StatsdPusher
from greensq.services.nsqd.watchdog import Watchdog
from greensq.services.shared import json_input
from greensq.services.shared.batches import SlicedBodies
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.deferred import deferred_import
from greensq.services.shared.files import replace_file
from greensq.services.shared.message import IdGenerator, Message
from greensq.services.shared.names import backend_name, is_ephemeral, is_valid_name
from greensq.services.shared.tls import server_context
from greensq.services.shared.version import NSQ_VERSION
from greensq.services.shared.wire import MAGIC_V2

# Loaded when a new topic first asks nsqlookupd for its channels.
http_client = deferred_import("http.client")
urllib_request = deferred_import("urllib.request")

log = logging.getLogger("greensq")

METADATA_FILE = "nsqd.dat"


class CannotStart(Exception):
    """nsqd cannot start on its data path; the message says why, in NSQ's words."""


def load_nsqd(opts):
    """nsqd's core as the daemon starts it: the TLS context its flags ask for (None without
    --tls-cert), the topics and channels recorded in ``nsqd.dat``, and ``nsqd.dat`` written
    back, since nsqd, as NSQ's, refuses a data path it cannot write (``CannotStart``).
    Call ``start()`` once it serves, ``close()`` to shut it down."""
    log.info("ID: %d", opts.node_id)
    nsqd = NSQD(opts)
    nsqd.tls_context = server_context(opts, gevent.ssl.SSLContext)   # cooperative sockets
    try:
        nsqd.load_metadata()
    except (OSError, ValueError) as exc:
        raise CannotStart(f"failed to load metadata - {exc}") from None
    try:
        nsqd.write_metadata()
    except OSError as exc:
        raise CannotStart(f"failed to persist metadata - {exc}") from None
    nsqd.copies.load()
    if nsqd.replication is not None:
        try:
            nsqd.replication.load_identity()
        except OSError as exc:
            raise CannotStart(f"failed to persist replication identity - {exc}") from None
        nsqd.replication.reconcile_before_serving()
    return nsqd


class NSQD:
    """The broker's in-memory world."""

    def __init__(self, opts):
        self.opts = opts
        self.data_path = os.path.abspath(opts.data_path or os.getcwd())
        self.topics = {}
        self.clients = set()
        self.ids = IdGenerator(opts.node_id)
        self.gathering = PublishGathering(self)
        self.start_time = int(time.time())
        self.tcp_port = 0          # the bound ports, once listening
        self.http_port = 0
        self.exiting = False
        self.health_error = None   # the last disk-queue write error, until a write works
        self._loading = False
        self._metadata_writer = None
        self._metadata_dirty = False
        self.watchdog = Watchdog(self.clients)
        self.statsd = None         # the StatsdPusher, with --statsd-address
        self.lookup_peers = {}     # lookupd TCP address -> LookupPeer (while started)
        self.lookup_started = False
        # Replication: this nsqd's replicas (with --replica-tcp-address), and the copies
        # it keeps as a replica of others.
        self.replication = Replication(self) if opts.replica_tcp_address else None
        self.copies = ReplicaCopies(self)

    # -- lookupd ---------------------------------------------------------------------------

    def set_lookupd_addresses(self, addresses):
        """Replace the nsqlookupd TCP addresses (PUT /config/nsqlookupd_tcp_addresses)."""
        self.opts.lookupd_tcp_address = list(addresses)
        if self.lookup_started:
            self._sync_lookup_peers()

    def start(self):
        """Background work once the listeners serve: the lookupd peers and the watchdog
        that sends every client's heartbeats and enforces its read deadline."""
        self.watchdog.start()
        self.start_lookup()
        self.copies.start()
        if self.replication is not None:
            self.replication.start()
        GC_PAUSES.install()
        if self.opts.statsd_address:
            self.statsd = StatsdPusher(self).start()

    def start_lookup(self):
        """Connect to every --lookupd-tcp-address (called once the ports are known)."""
        self.lookup_started = True
        self._sync_lookup_peers()

    def stop_lookup(self):
        log.info("LOOKUP: closing")
        self.lookup_started = False
        for peer in self.lookup_peers.values():
            peer.stop()
        self.lookup_peers = {}

    def _sync_lookup_peers(self):
        wanted = list(dict.fromkeys(self.opts.lookupd_tcp_address))
        for address in list(self.lookup_peers):
            if address not in wanted:
                self.lookup_peers.pop(address).stop()
        for address in wanted:
            if address not in self.lookup_peers:
                log.info("LOOKUP(%s): adding peer", address)
                self.lookup_peers[address] = LookupPeer(self, address).start()

    def notify_lookupd(self, line):
        """Forward a REGISTER / UNREGISTER line to every nsqlookupd."""
        if self._loading:
            return
        for peer in self.lookup_peers.values():
            peer.command(line)

    def lookup_registrations(self):
        """The REGISTER lines that announce every topic and channel (after a connect)."""
        lines = []
        for topic in list(self.topics.values()):
            if topic.channels:
                lines.extend(f"REGISTER {topic.name} {name}" for name in list(topic.channels))
            else:
                lines.append(f"REGISTER {topic.name}")
        return lines

    def _create_channels_from_lookupd(self, topic):
        """Create the channels the nsqlookupds already know for a new topic."""
        names = []
        for peer in list(self.lookup_peers.values()):
            address = peer.http_address
            if address is None:
                continue
            url = f"http://{address}/channels?topic={urllib.parse.quote(topic.name)}"
            try:
                with urllib_request.urlopen(
                        url, timeout=self.opts.http_client_request_timeout) as resp:
                    channels = json_input.loads(resp.read()).get("channels") or []
            except (OSError, ValueError, AttributeError, http_client.HTTPException) as exc:
                log.error("failed to query nsqlookupd %s for channels of topic %s - %s",
                          address, topic.name, exc)
                continue
            names.extend(c for c in channels if isinstance(c, str))
        if topic.deleted or self.topics.get(topic.name) is not topic:
            return
        for name in dict.fromkeys(names):
            if is_valid_name(name) and not is_ephemeral(name):
                topic.get_channel(name)

    # -- the TCP protocol -------------------------------------------------------------------

    def tcp_protocols(self):
        """What nsqd's TCP port speaks (protocol magic -> serve): NSQ's V2 protocol, and
        the replication protocol its primaries connect with."""
        return {MAGIC_V2: partial(serve_v2, self), MAGIC_R1: partial(serve_replica, self)}

    def internal_protocols(self):
        """What the internal socket of nsqd's HTTP workers speaks: V2, as an internal
        connection (see ``serve_v2``)."""
        return {MAGIC_V2: partial(serve_v2, self, internal=True)}

    # -- topics ---------------------------------------------------------------------------

    def get_topic(self, name):
        """The named topic, created (and started) if it does not exist yet."""
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = Topic(name, self).start()
            log.info("TOPIC(%s): created", name)
            self.metadata_changed()
            if not self._loading:
                self.notify_lookupd(f"REGISTER {name}")
                if self.lookup_peers:
                    gevent.spawn(self._create_channels_from_lookupd, topic)
        return topic

    def publish(self, topic_name, bodies, defer_ms=0):
        """New messages for ``bodies`` into the named topic (created if need be). Returns
        once they are in every queue they belong to (in memory, written to disk, or in
        durable mode fsynced), as an OK promises; raises ``Refused`` once nsqd is exiting
        (or the topic was deleted meanwhile) and ``StoreFailed`` when a disk queue
        cannot be written."""
        receipt = self.start_publish(topic_name, bodies, defer_ms)
        if receipt is not None:
            receipt.wait()

    def start_publish(self, topic_name, bodies, defer_ms=0):
        """``publish`` without the wait: the ``Receipt`` to wait on (None for no bodies).
        ``bodies`` is a list, or a big batch's ``SlicedBodies`` (services/shared/batches.py),
        which the topic stamps and stores a slice at a time."""
        if self.exiting:
            raise Refused()
        topic = self.topics.get(topic_name) or self.get_topic(topic_name)
        if not bodies:
            return None
        receipt = Receipt()
        if isinstance(bodies, SlicedBodies):
            topic.publish_slices(receipt, bodies)
        else:
            topic.publish(receipt, Message.new_batch(self.ids, bodies, defer_ms))
        return receipt

    def set_health(self, error):
        """A disk queue's latest write or sync: its error, or None once writing works
        again (every disk queue reports here); the latest report is NSQ's health."""
        self.health_error = error

    @property
    def health(self):
        """``OK``, or NSQ's ``NOK - <error>`` after a failed disk-queue write."""
        return "OK" if self.health_error is None else f"NOK - {self.health_error}"

    def get_existing_topic(self, name):
        return self.topics.get(name)

    def delete_topic(self, name):
        """Delete a topic, its channels and their disk queues; False if there is none."""
        topic = self.topics.pop(name, None)
        if topic is None:
            return False
        topic.deleted = True
        log.info("TOPIC(%s): deleting", name)
        self.metadata_changed()
        self.notify_lookupd(f"UNREGISTER {name}")
        topic.ask(topic.on_delete)
        return True

    def channel_created(self, topic, channel):
        log.info("TOPIC(%s): new channel(%s)", topic.name, channel.name)
        self.metadata_changed()
        self.notify_lookupd(f"REGISTER {topic.name} {channel.name}")

    def channel_deleted(self, topic, channel):
        log.info("TOPIC(%s): deleting channel %s", topic.name, channel.name)
        log.info("CHANNEL(%s): deleting", channel.name)
        self.metadata_changed()
        if not topic.deleted:   # a deleted topic's UNREGISTER covers its channels
            self.notify_lookupd(f"UNREGISTER {topic.name} {channel.name}")

    def make_queue(self, label, topic, channel=None, on_due=None, max_bytes=0):
        """A topic's or channel's ``MessageQueue`` (services/nsqd/message_queue.py): memory
        only when ephemeral, memory then disk (bounded by ``max_bytes`` under
        --max-bytes-policy), or (``--durable``) a disk queue of record with memory in front;
        ``on_due`` takes a durable queue's deferred records as it reads them. With
        replicas, what changes a durable topic's or channel's queue reaches them too."""
        opts = self.opts
        if is_ephemeral(channel if channel is not None else topic):
            return MemoryFirstQueue(label, opts.mem_queue_size, None, max_bytes,
                                    opts.max_bytes_policy == "drop-oldest")
        queue = disk_backed_queue(opts, label, backend_name(topic, channel), self.data_path,
                                  opts.mem_queue_size, self.set_health, on_due, max_bytes)
        if self.replication is not None:
            queue = self.replication.replicated(queue, topic, channel)
        return queue

    # -- metadata (nsqd.dat) ----------------------------------------------------------------

    def metadata(self):
        """The ``nsqd.dat`` document: durable topics and channels with their pause state."""
        topics = []
        for topic in self.topics.values():
            if topic.ephemeral:
                continue
            channels = [ch.metadata() for ch in topic.channels.values() if not ch.ephemeral]
            topics.append({"channels": channels, "name": topic.name, "paused": topic.paused})
        return {"topics": topics, "version": NSQ_VERSION}

    def metadata_changed(self):
        """Schedule a metadata write. Changes made while a write is under way cause one
        more write after it, so the file always ends up describing the latest state."""
        if self._loading:
            return
        self._metadata_dirty = True
        if self._metadata_writer is None:
            self._metadata_writer = gevent.spawn(self._write_metadata_while_dirty)

    def persist_metadata(self):
        """Write ``nsqd.dat`` now and wait until it is on disk (or the write failed and
        was logged)."""
        self.metadata_changed()
        writer = self._metadata_writer
        if writer is not None:
            writer.join()

    def _write_metadata_while_dirty(self):
        try:
            while self._metadata_dirty:
                self._metadata_dirty = False
                self.try_write_metadata()
        finally:
            self._metadata_writer = None

    def write_metadata(self):
        """Write ``nsqd.dat`` atomically (temp file, fsync, rename); raises the
        ``OSError`` if it cannot be (nsqd refuses to start on that, as NSQ's does)."""
        path = os.path.join(self.data_path, METADATA_FILE)
        log.info("NSQ: persisting topic/channel metadata to %s", path)
        replace_file(path, ujson.dumps(self.metadata()).encode())

    def try_write_metadata(self):
        """``write_metadata``, with a failure logged as NSQ logs it; True if written."""
        try:
            self.write_metadata()
        except OSError as exc:
            log.error("failed to persist metadata - %s", exc)
            return False
        return True

    def load_metadata(self):
        """Recreate the topics and channels (and pause state) recorded in ``nsqd.dat``."""
        path = os.path.join(self.data_path, METADATA_FILE)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return
        try:
            data = ujson.loads(raw)
        except ValueError as exc:
            raise ValueError(f"failed to parse metadata in {path} - {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"failed to parse metadata in {path} - not a JSON object")
        def restore(entries, kind, get):
            """Create each valid entry with ``get`` and its pause state: [(actor, entry)]."""
            restored = []
            for entry in entries or []:
                name = entry.get("name", "")
                if not is_valid_name(name) or is_ephemeral(name):
                    log.warning("skipping creation of invalid %s %s", kind, name)
                    continue
                actor = get(name)
                actor.paused = bool(entry.get("paused"))
                restored.append((actor, entry))
            return restored

        self._loading = True
        try:
            for topic, entry in restore(data.get("topics"), "topic", self.get_topic):
                for channel, channel_entry in restore(
                        entry.get("channels"), "channel", topic.get_channel):
                    channel.restore_max_attempts(channel_entry.get("max_attempts"))
        finally:
            self._loading = False

    # -- shutdown ---------------------------------------------------------------------------

    def close(self):
        """Stop every client and actor, flush every queue to disk, write metadata.
        False if something could not be written (each failure is logged)."""
        self.exiting = True
        self.watchdog.stop()
        if self.statsd is not None:
            self.statsd.stop()
        for client in list(self.clients):
            client.close()
        persisted = self.copies.close()
        persisted = self.try_write_metadata() and persisted
        log.info("NSQ: closing topics")
        results = []
        for topic in list(self.topics.values()):
            done = AsyncResult()
            topic.send(topic.on_close, done)
            results.append(done)
        for done in results:
            persisted = done.get() and persisted
        if self.replication is not None:
            self.replication.close(persisted)
        log.info("NSQ: bye")
        return persisted


use_compiled(globals())
