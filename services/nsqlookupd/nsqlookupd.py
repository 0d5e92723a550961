"""nsqlookupd's core: the registration DB of producers (nsqd nodes), topics and channels.

A registration is ``(category, key, subkey)``: ``("client", "", "")`` for every identified
nsqd, ``("topic", name, "")`` and ``("channel", topic, name)``. Each maps to the producers
(keyed by peer id, the connection's remote address) that announced it. Registrations outlive
their producers; only the HTTP delete endpoints remove them, as NSQ does.

Everything runs on one gevent hub, so the DB is a plain dict with no locks.
"""

import logging
import socket
import time

from greensq.actors.lookup_session import LookupSession
from greensq.services.shared.version import NSQ_VERSION
from greensq.services.shared.wire import MAGIC_V1


# What Go's zero time.Time gives for UnixNano(): /debug's tombstoned_at of a producer
# that was never tombstoned.
GO_ZERO_TIME_NS = -6795364578871345152

log = logging.getLogger("greensq")

CLIENT = ("client", "", "")
ANY = "*"


class PeerInfo:
    """What an nsqd said about itself in IDENTIFY, plus when we last heard from it."""

    __slots__ = ("id", "remote_address", "hostname", "broadcast_address", "tcp_port",
                 "http_port", "version", "last_update")

    def __init__(self, peer_id, remote_address, hostname, broadcast_address, tcp_port,
                 http_port, version):
        self.id = peer_id
        self.remote_address = remote_address
        self.hostname = hostname
        self.broadcast_address = broadcast_address
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.version = version
        self.last_update = time.time()

    def touch(self):
        self.last_update = time.time()

    def as_json(self):
        return {
            "remote_address": self.remote_address,
            "hostname": self.hostname,
            "broadcast_address": self.broadcast_address,
            "tcp_port": self.tcp_port,
            "http_port": self.http_port,
            "version": self.version,
        }


class Producer:
    """One peer's membership of one registration (tombstones are per registration)."""

    __slots__ = ("peer", "tombstoned_at")

    def __init__(self, peer):
        self.peer = peer
        self.tombstoned_at = None

    def tombstone(self):
        self.tombstoned_at = time.time()

    def is_tombstoned(self, lifetime):
        return self.tombstoned_at is not None and time.time() - self.tombstoned_at < lifetime


def _matches(reg, category, key, subkey):
    return (reg[0] == category and (key == ANY or reg[1] == key)
            and (subkey == ANY or reg[2] == subkey))


class RegistrationDB:
    def __init__(self):
        self.registrations = {}   # (category, key, subkey) -> {peer id: Producer}

    def add_registration(self, reg):
        self.registrations.setdefault(reg, {})

    def add_producer(self, reg, peer):
        """True if the peer was not registered there yet (an existing entry is kept)."""
        producers = self.registrations.setdefault(reg, {})
        if peer.id in producers:
            return False
        producers[peer.id] = Producer(peer)
        return True

    def remove_producer(self, reg, peer_id):
        """``(removed, producers left)``; the registration itself stays."""
        producers = self.registrations.get(reg)
        if producers is None:
            return False, 0
        removed = producers.pop(peer_id, None) is not None
        return removed, len(producers)

    def remove_registration(self, reg):
        self.registrations.pop(reg, None)

    def find_registrations(self, category, key, subkey):
        if key != ANY and subkey != ANY:
            reg = (category, key, subkey)
            return [reg] if reg in self.registrations else []
        return [reg for reg in self.registrations if _matches(reg, category, key, subkey)]

    def find_producers(self, category, key, subkey):
        """Producers of every matching registration, one per peer."""
        seen, result = set(), []
        for reg in self.find_registrations(category, key, subkey):
            for producer in self.registrations[reg].values():
                if producer.peer.id not in seen:
                    seen.add(producer.peer.id)
                    result.append(producer)
        return result

    def lookup_registrations(self, peer_id):
        return [reg for reg, producers in self.registrations.items() if peer_id in producers]


class NSQLookupd:
    """The daemon's state: options, the DB, and the ports it really listens on."""

    def __init__(self, opts):
        self.opts = opts
        self.db = RegistrationDB()
        self.hostname = socket.gethostname()
        self.tcp_port = 0
        self.http_port = 0

    # -- filters ------------------------------------------------------------------------

    def active(self, producers, tombstone_lifetime):
        """Producers heard from within the inactivity timeout and not tombstoned."""
        now = time.time()
        timeout = self.opts.inactive_producer_timeout
        return [p for p in producers
                if now - p.peer.last_update <= timeout
                and not p.is_tombstoned(tombstone_lifetime)]

    # -- the TCP protocol -------------------------------------------------------------------

    def tcp_protocols(self):
        """What nsqlookupd's TCP port speaks: NSQ's V1 lookup protocol (magic -> serve)."""
        def serve_v1(sock, address):
            LookupSession(self, sock, address).run()

        return {MAGIC_V1: serve_v1}

    # -- V1 protocol operations ---------------------------------------------------------

    def identify(self, remote_address, fields):
        """An nsqd's IDENTIFY (``fields``: hostname, broadcast_address, tcp_port,
        http_port, version): its ``PeerInfo``, registered, and nsqlookupd's answer."""
        peer = PeerInfo(remote_address, remote_address, fields["hostname"],
                        fields["broadcast_address"], fields["tcp_port"], fields["http_port"],
                        fields["version"])
        if self.db.add_producer(CLIENT, peer):
            log.info("DB: client(%s) REGISTER category:client key: subkey:", peer.id)
        return peer, {
            "broadcast_address": self.opts.broadcast_address,
            "hostname": self.hostname,
            "http_port": self.http_port,
            "tcp_port": self.tcp_port,
            "version": NSQ_VERSION,
        }

    def register(self, peer, topic, channel):
        if channel:
            if self.db.add_producer(("channel", topic, channel), peer):
                log.info("DB: client(%s) REGISTER category:channel key:%s subkey:%s",
                         peer.id, topic, channel)
        if self.db.add_producer(("topic", topic, ""), peer):
            log.info("DB: client(%s) REGISTER category:topic key:%s subkey:", peer.id, topic)

    def unregister(self, peer, topic, channel):
        if channel:
            reg = ("channel", topic, channel)
            removed, left = self.db.remove_producer(reg, peer.id)
            if removed:
                log.info("DB: client(%s) UNREGISTER category:channel key:%s subkey:%s",
                         peer.id, topic, channel)
            if left == 0 and channel.endswith("#ephemeral"):
                self.db.remove_registration(reg)
            return
        for reg in self.db.find_registrations("channel", topic, ANY):
            if self.db.remove_producer(reg, peer.id)[0]:
                log.warning("client(%s) unexpected UNREGISTER category:channel key:%s subkey:%s",
                            peer.id, topic, reg[2])
        if self.db.remove_producer(("topic", topic, ""), peer.id)[0]:
            log.info("DB: client(%s) UNREGISTER category:topic key:%s subkey:", peer.id, topic)

    def disconnect(self, peer):
        """A V1 connection closed: its peer leaves every registration."""
        for reg in self.db.lookup_registrations(peer.id):
            if self.db.remove_producer(reg, peer.id)[0]:
                log.info("DB: client(%s) UNREGISTER category:%s key:%s subkey:%s",
                         peer.id, *reg)

    # -- HTTP queries ---------------------------------------------------------------------

    def topics(self):
        return [reg[1] for reg in self.db.find_registrations("topic", ANY, "")]

    def channels(self, topic):
        return [reg[2] for reg in self.db.find_registrations("channel", topic, ANY)]

    def lookup(self, topic):
        """``{"channels", "producers"}`` for a topic, or None if the topic is unknown."""
        if not self.db.find_registrations("topic", topic, ""):
            return None
        producers = self.active(self.db.find_producers("topic", topic, ""),
                                self.opts.tombstone_lifetime)
        return {"channels": self.channels(topic),
                "producers": [p.peer.as_json() for p in producers]}

    def nodes(self):
        lifetime = self.opts.tombstone_lifetime
        nodes = []
        for client in self.active(self.db.find_producers(*CLIENT), 0):
            peer = client.peer
            topics = [reg[1] for reg in self.db.lookup_registrations(peer.id)
                      if _matches(reg, "topic", ANY, "")]
            tombstones = []
            for topic in topics:
                producer = self.db.registrations.get(("topic", topic, ""), {}).get(peer.id)
                tombstones.append(bool(producer and producer.peer is peer
                                       and producer.is_tombstoned(lifetime)))
            node = peer.as_json()
            node["tombstones"] = tombstones
            node["topics"] = topics
            nodes.append(node)
        return {"producers": nodes}

    def create_topic(self, topic):
        log.info("DB: adding topic(%s)", topic)
        self.db.add_registration(("topic", topic, ""))

    def delete_topic(self, topic):
        for reg in self.db.find_registrations("channel", topic, ANY):
            log.info("DB: removing channel(%s) from topic(%s)", reg[2], topic)
            self.db.remove_registration(reg)
        for reg in self.db.find_registrations("topic", topic, ""):
            log.info("DB: removing topic(%s)", topic)
            self.db.remove_registration(reg)

    def create_channel(self, topic, channel):
        log.info("DB: adding channel(%s) in topic(%s)", channel, topic)
        self.db.add_registration(("channel", topic, channel))
        log.info("DB: adding topic(%s)", topic)
        self.db.add_registration(("topic", topic, ""))

    def delete_channel(self, topic, channel):
        """False if the channel is not registered."""
        regs = self.db.find_registrations("channel", topic, channel)
        if not regs:
            return False
        log.info("DB: removing channel(%s) from topic(%s)", channel, topic)
        for reg in regs:
            self.db.remove_registration(reg)
        return True

    def tombstone(self, topic, node):
        log.info("DB: setting tombstone for producer@%s of topic(%s)", node, topic)
        for producer in self.db.find_producers("topic", topic, ""):
            peer = producer.peer
            if f"{peer.broadcast_address}:{peer.http_port}" == node:
                producer.tombstone()

    def debug(self):
        """``/debug``: every registration and its producers, in Go's shape."""
        data = {}
        for reg, producers in self.db.registrations.items():
            key = ":".join(reg)
            for producer in producers.values():
                peer = producer.peer
                data.setdefault(key, []).append({
                    "id": peer.id,
                    "hostname": peer.hostname,
                    "broadcast_address": peer.broadcast_address,
                    "tcp_port": peer.tcp_port,
                    "http_port": peer.http_port,
                    "version": peer.version,
                    "last_update": int(peer.last_update * 1e9),
                    "tombstoned": producer.tombstoned_at is not None,
                    "tombstoned_at": (GO_ZERO_TIME_NS if producer.tombstoned_at is None
                                      else int(producer.tombstoned_at * 1e9)),
                })
        return dict(sorted(data.items()))   # Go writes a map's keys sorted
