"""nsqadmin's core: what the JSON API and the pages show and do, over the live cluster.

Reads ask the nodes at request time, as Go's nsqadmin does, and return Go's documents
(with its ``"message": "WARNING: ..."`` for nodes that did not answer) together with the
``Warnings`` themselves, so pages can say which node is down. Actions go to every nsqd
and nsqlookupd involved and are then announced to ``--notification-http-endpoint``. The
live graphs come from a ClusterPoller feeding a RateHistory in the background.

``ApiError`` carries Go's status and text for the cases its handlers refuse
(403 FORBIDDEN, 400 INVALID_TOPIC, 404 NODE_NOT_FOUND, 502 UPSTREAM_ERROR: ...).
"""

import ipaddress
import logging
import os
from functools import partial

from gevent.pool import Pool

from greensq.services.nsqadmin.cluster_poller import ClusterPoller
from greensq.services.nsqadmin.graphite import Graphite
from greensq.services.nsqadmin.notify import Notifier, admin_action
from greensq.services.nsqadmin.options import NSQADMIN_FLAGSET
from greensq.services.nsqadmin.rate_history import RateHistory
from greensq.services.shared import cluster_stats as shapes
from greensq.services.shared.cluster_http import ClusterHTTP, build_ssl_context
from greensq.services.shared.clusterinfo import FANOUT, ClusterInfo, ClusterUnavailable, Failures
from greensq.services.shared.logs import LEVELS
from greensq.services.shared.names import is_valid_name

log = logging.getLogger("greensq")

# The live graphs: a sample every POLL_INTERVAL seconds, HISTORY_SECONDS of them kept.
POLL_INTERVAL = float(os.environ.get("GREENSQ_NSQADMIN_POLL_INTERVAL") or 2.0)
HISTORY_SECONDS = float(os.environ.get("GREENSQ_NSQADMIN_HISTORY") or 600.0)

ACTIONS = ("pause", "unpause", "empty")
LOG_LEVEL_NUMBERS = {"debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5}
_NOT_OPTIONS = ("config", "version", "verbose")


class ApiError(Exception):
    """A request the API refuses: HTTP status and Go's message text."""

    def __init__(self, status, message):
        super().__init__(status, message)
        self.status = status
        self.message = message


class Warnings(list):
    """The Failures of each query behind one answer."""

    def add(self, failures):
        if failures:
            log.warning("%s", failures)
            self.append(failures)

    def message(self):
        """Go's ``message``: ``WARNING: `` and each query's errors, ``; ``-joined."""
        return "WARNING: " + "; ".join(str(f) for f in self) if self else ""

    def errors(self):
        return [err for failures in self for err in failures]


def _upstream(what, call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except ClusterUnavailable as exc:
        log.error("failed to %s - %s", what, exc)
        raise ApiError(502, f"UPSTREAM_ERROR: {exc}") from None


class NSQAdmin:
    def __init__(self, opts, client=None):
        self.opts = opts
        self.client = client or ClusterHTTP(
            opts.http_client_connect_timeout, opts.http_client_request_timeout,
            partial(build_ssl_context, opts))
        if opts.http_client_tls_cert or opts.http_client_tls_root_ca_file:
            self.client.ssl_context()   # a file that cannot be loaded stops the start
        self.cluster = ClusterInfo(self.client)
        self.graphite = Graphite(opts)
        self.history = RateHistory(max(2, int(HISTORY_SECONDS / POLL_INTERVAL)))
        self.poller = ClusterPoller(self.cluster, self.history, self.sources, POLL_INTERVAL)
        self.notifier = Notifier(self.client, lambda: self.opts.notification_http_endpoint)

    def start(self):
        self.poller.start()
        self.notifier.start()

    def stop(self):
        self.poller.stop()
        self.notifier.stop()

    def sources(self):
        return self.opts.lookupd_http_address, self.opts.nsqd_http_address

    def is_admin(self, user):
        """True without ``--admin-user``; else only for a listed user."""
        return not self.opts.admin_user or user in self.opts.admin_user

    # -- reads ------------------------------------------------------------------------

    def topics(self, inactive=False):
        """``GET /api/topics`` (``?inactive=true``: lookupd topics no nsqd has, with
        their channels)."""
        lookupds, nsqds = self.sources()
        warnings = Warnings()
        topics, failures = _upstream("get topics", self.cluster.topics, lookupds, nsqds)
        warnings.add(failures)
        if not inactive:
            return {"topics": topics, "message": warnings.message()}, warnings
        found = {}
        if lookupds:
            for topic, lookup in self.lookups(topics or []).items():
                if lookup is None or not lookup[0]:
                    found[topic] = lookup[1] if lookup and lookup[1] else None
        return {"topics": found, "message": warnings.message()}, warnings

    def lookups(self, topics):
        """``{topic: (producers, channels) or None}`` from the lookupds, concurrently."""
        lookupds = self.opts.lookupd_http_address

        def lookup(topic):
            try:
                producers, channels, _ = self.cluster.lookupd_topic_lookup(topic, lookupds)
            except ClusterUnavailable:
                return topic, None
            return topic, (producers, channels)

        return dict(Pool(FANOUT).imap(lookup, topics))

    def topics_overview(self):
        """The topics page: every topic with its totals across nodes."""
        doc, warnings = self.topics()
        lookupds, nsqds = self.sources()
        totals = {name: shapes.aggregate_topic(name, []) for name in doc["topics"] or []}
        try:
            producers, failures = self.cluster.producers(lookupds, nsqds)
            warnings.add(failures)
            if producers:
                stats = self.cluster.stats(producers, include_clients=False)
                warnings.add(stats.failures)
                per_topic = {}
                for entry in stats.topics:
                    per_topic.setdefault(entry["topic_name"], []).append(entry)
                for name, entries in per_topic.items():
                    totals[name] = shapes.aggregate_topic(name, entries)
        except ClusterUnavailable as exc:
            warnings.add(Failures([exc]))
        return [totals[name] for name in sorted(totals)], warnings

    def _topic_stats(self, topic, channel=""):
        """Stats of the topic (or channel) from every nsqd that has it, and the Warnings."""
        lookupds, nsqds = self.sources()
        warnings = Warnings()
        producers, failures = _upstream("get topic producers", self.cluster.topic_producers,
                                        topic, lookupds, nsqds)
        warnings.add(failures)
        stats = _upstream(f"get {'channel' if channel else 'topic'} metadata",
                          self.cluster.stats, producers, topic, channel,
                          include_clients=bool(channel))
        warnings.add(stats.failures)
        return stats, warnings

    def topic(self, topic):
        """``GET /api/topics/:topic``."""
        stats, warnings = self._topic_stats(topic)
        doc = shapes.aggregate_topic(topic, stats.topics)
        doc["message"] = warnings.message()
        return doc, warnings

    def channel(self, topic, channel):
        """``GET /api/topics/:topic/:channel`` (only ``message`` for an unknown channel)."""
        stats, warnings = self._topic_stats(topic, channel)
        doc = dict(stats.channels.get(channel) or {})
        doc["message"] = warnings.message()
        return doc, warnings

    def nodes(self):
        """``GET /api/nodes``; a node with replicas or copies has greensq's
        ``replication`` beside Go's fields, as the poller last saw it."""
        lookupds, nsqds = self.sources()
        warnings = Warnings()
        producers, failures = _upstream("get nodes", self.cluster.producers, lookupds, nsqds)
        warnings.add(failures)
        for producer in producers or []:
            replication = self.poller.replication.get(shapes.http_address(producer))
            if replication is not None:
                producer["replication"] = replication
        return {"nodes": producers or None, "message": warnings.message()}, warnings

    def node(self, node):
        """``GET /api/nodes/:node`` (with greensq's ``replication`` for a node that has
        replicas or copies), and for the page the node's producer entry and ``/stats``
        header (version, start_time)."""
        lookupds, nsqds = self.sources()
        warnings = Warnings()
        producers, failures = _upstream("get producers", self.cluster.producers,
                                        lookupds, nsqds)
        warnings.add(failures)
        producer = next((p for p in producers if shapes.http_address(p) == node), None)
        if producer is None:
            raise ApiError(404, "NODE_NOT_FOUND")
        stats = _upstream("get nsqd stats", self.cluster.stats, [producer])
        doc = {
            "node": node,
            "topics": stats.topics or None,
            "total_messages": sum(t["message_count"] for t in stats.topics),
            "total_clients": sum(len(c["clients"] or []) for t in stats.topics
                                 for c in t["channels"] or []),
            "message": warnings.message(),
        }
        meta = stats.meta.get(node, {})
        if meta.get("replication") is not None:
            doc["replication"] = meta["replication"]
        return doc, warnings, producer, meta

    def counter(self):
        """``GET /api/counter``."""
        lookupds, nsqds = self.sources()
        warnings = Warnings()
        producers, failures = _upstream("get counter producer list", self.cluster.producers,
                                        lookupds, nsqds)
        warnings.add(failures)
        stats = _upstream("get nsqd stats", self.cluster.stats, producers,
                          include_clients=False)
        warnings.add(stats.failures)
        return {"stats": shapes.counter_stats(stats.topics),
                "message": warnings.message()}, warnings

    # -- actions (``actor``: what the notification says about the request) --------------

    def _notify(self, action, topic, channel="", node="", actor=None):
        self.notifier.notify(admin_action(action, topic, channel, node, **(actor or {})))

    @staticmethod
    def _answer(failures):
        """An action's answer: Go's ``{"message": ...}`` naming the nodes that failed."""
        warnings = Warnings()
        warnings.add(failures)
        return {"message": warnings.message()}, warnings

    def create(self, topic, channel="", actor=None):
        """``POST /api/topics``."""
        if not is_valid_name(topic):
            raise ApiError(400, "INVALID_TOPIC")
        if channel and not is_valid_name(channel):
            raise ApiError(400, "INVALID_CHANNEL")
        lookupds, nsqds = self.sources()
        failures = _upstream("create topic/channel", self.cluster.create_topic_channel,
                             topic, channel, lookupds, nsqds)
        self._notify("create_topic", topic, actor=actor)
        if channel:
            self._notify("create_channel", topic, channel, actor=actor)
        return self._answer(failures)

    def act(self, action, topic, channel="", actor=None):
        """``POST /api/topics/:topic[/:channel]`` with ``{"action": ...}``."""
        if action not in ACTIONS:
            raise ApiError(400, "INVALID_ACTION")
        kind = "channel" if channel else "topic"
        lookupds, nsqds = self.sources()
        failures = _upstream(f"{action} topic/channel", self.cluster.node_action,
                             f"{kind}/{action}", topic, channel, lookupds, nsqds)
        self._notify(f"{action}_{kind}", topic, channel, actor=actor)
        return self._answer(failures)

    def delete(self, topic, channel="", actor=None):
        """``DELETE /api/topics/:topic[/:channel]``."""
        lookupds, nsqds = self.sources()
        kind = "channel" if channel else "topic"
        failures = _upstream(f"delete {kind}", self.cluster.delete, topic, channel,
                             lookupds, nsqds)
        self._notify(f"delete_{kind}", topic, channel, actor=actor)
        return self._answer(failures)

    def tombstone(self, topic, node, actor=None):
        """``DELETE /api/nodes/:node`` with ``{"topic": ...}``."""
        if not is_valid_name(topic):
            raise ApiError(400, "INVALID_TOPIC")
        failures = _upstream("tombstone node for topic", self.cluster.tombstone_topic_producer,
                             topic, node, self.opts.lookupd_http_address)
        self._notify("tombstone_topic_producer", topic, node=node, actor=actor)
        return self._answer(failures)

    # -- live graphs ------------------------------------------------------------------

    def graphs(self, node=None, topic=None, channel=None, points=None):
        """The series a page draws, from the rolling history:

        * no argument (the topics page): ``topic/T`` for every topic;
        * ``topic``: ``topic/T``, ``node-topic/N/T`` per node, ``channel/T/C`` per channel;
        * ``topic`` and ``channel``: ``channel/T/C`` and ``node-channel/N/T/C`` per node;
        * ``node="*"`` (the nodes page): ``node/N`` for every node;
        * ``node``: ``node/N``, and ``node-topic/N/T``, ``node-channel/N/T/C`` for all
          its topics and channels.

        A node's rate is the sum of its topics' rates; its depth counts topics and
        channels. Channel series also have ``finish``, ``requeue`` and ``timeout`` rates
        (see ``rate_history``). The steps start at the oldest sample of any series
        returned, so a topic younger than nsqadmin's history fills its graphs.
        """
        history = self.history
        groups = {}

        def add(name, key):
            groups.setdefault(name, []).append(key)

        for key in history.series:
            key_node, key_topic, key_channel = key
            if node == "*":
                add(f"node/{key_node}", key)
            elif node is not None:
                if key_node == node:
                    add(f"node/{key_node}", key)
                    add(f"node-{'channel' if key_channel else 'topic'}/"
                        + "/".join(part for part in key if part), key)
            elif topic is None:
                if key_channel is None:
                    add(f"topic/{key_topic}", key)
            elif key_topic == topic and channel is None:
                if key_channel is None:
                    add(f"topic/{topic}", key)
                    add(f"node-topic/{key_node}/{topic}", key)
                else:
                    add(f"channel/{topic}/{key_channel}", key)
            elif key_topic == topic and key_channel == channel:
                add(f"channel/{topic}/{channel}", key)
                add(f"node-channel/{key_node}/{topic}/{channel}", key)
        start = history.first_step({key for keys in groups.values() for key in keys})
        if points is not None:
            start = max(start, len(history.times) - points)
        series = {}
        for name, keys in groups.items():
            rate_keys = [k for k in keys if k[2] is None] if name.startswith("node/") else keys
            series[name] = history.combined(rate_keys, keys, start)
        return {
            "interval": self.poller.interval,
            "times": [round(t, 1) for t in history.step_times(start)],
            "down": self.poller.down,
            "series": series,
        }

    # -- /config ------------------------------------------------------------------------

    def config_allowed(self, remote_ip):
        cidr = self.opts.allow_config_from_cidr
        if not cidr:
            return True
        try:
            return ipaddress.ip_address(remote_ip) in ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ApiError(400, "INVALID_REMOTE_ADDR") from None

    def config_value(self, opt):
        """An option by its config-file name, in Go's JSON (durations in ns, the log level
        as Go's number)."""
        for flag in NSQADMIN_FLAGSET.flags.values():
            if flag.key != opt or flag.name in _NOT_OPTIONS:
                continue
            value = getattr(self.opts, flag.dest)
            if flag.kind == "duration":
                return int(value * 1_000_000_000)
            if flag.dest == "log_level":
                return LOG_LEVEL_NUMBERS.get(value, value)
            return value
        raise ApiError(400, "INVALID_OPTION")

    def set_config(self, opt, value):
        """PUT /config/:opt for the two runtime-settable options; ``value`` is the body."""
        if opt == "nsqlookupd_http_addresses":
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ApiError(400, "INVALID_VALUE")
            self.opts.lookupd_http_address = list(value)
        elif opt == "log_level":
            level = value.strip().lower() if isinstance(value, str) else None
            if level not in LEVELS:
                raise ApiError(400, "INVALID_VALUE")
            self.opts.log_level = level
            log.setLevel(LEVELS[level])
        else:
            raise ApiError(400, "INVALID_OPTION")
        return self.config_value(opt)
