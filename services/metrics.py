"""Prometheus ``GET /metrics`` for nsqd, nsqlookupd and nsqadmin (prometheus-client).

Scraping must stay cheap with tens of thousands of channels, and must not stall the hub:

* On the hub, a snapshot copies each topic's and channel's numbers into plain tuples,
  yielding to the other greenlets every ``SNAPSHOT_BATCH`` channels.
* In the hub's thread pool, prometheus-client builds the metric families from the
  snapshot (with its process and GC collectors) and writes the text exposition format.
  That thread shares the interpreter lock with the hub, which gets it back at least
  every few milliseconds, so publishes and deliveries go on during a scrape.

Names follow Prometheus' conventions (``nsq_channel_depth``,
``nsq_channel_messages_total``, ``nsq_topic_e2e_processing_latency_seconds``); every nsqd
series has a ``node`` label (broadcast address and HTTP port, as nsqadmin names nodes),
topic and channel series a ``topic`` and a ``channel`` label.
"""

import gevent
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector,
    generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from greensq.services.latency import topic_result
from greensq.services.stats import bounded

SNAPSHOT_BATCH = 500
CONTENT_TYPE = CONTENT_TYPE_LATEST

# process_*, python_info and python_gc_*: registered with a registry of their own (the
# GC collector insists on one), and called directly, off the hub, at each scrape.
_PROCESS_REGISTRY = CollectorRegistry()
_PROCESS_COLLECTORS = (ProcessCollector(registry=_PROCESS_REGISTRY),
                       PlatformCollector(registry=_PROCESS_REGISTRY),
                       GCCollector(registry=_PROCESS_REGISTRY))


class _Families:
    """What ``generate_latest`` reads: families built from a snapshot, then the
    process-wide collectors'."""

    def __init__(self, build, snapshot):
        self.build = build
        self.snapshot = snapshot

    def collect(self):
        yield from self.build(self.snapshot)
        for collector in _PROCESS_COLLECTORS:
            yield from collector.collect()


def render(build, snapshot):
    """The exposition text (bytes) for ``build(snapshot)``, written off the hub."""
    return gevent.get_hub().threadpool.apply(generate_latest, (_Families(build, snapshot),))


def _families(specs, labels):
    """``{key: family}`` for ``(key, kind, name, documentation)`` specs."""
    return {key: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, doc, labels=labels)
            for key, kind, name, doc in specs}


# -- nsqd -------------------------------------------------------------------------------

_TOPIC_SPECS = [
    ("depth", "gauge", "nsq_topic_depth", "Messages queued in the topic (memory and disk)."),
    ("backend_depth", "gauge", "nsq_topic_backend_depth", "Messages in the topic's disk queue."),
    ("message_count", "counter", "nsq_topic_messages", "Messages published to the topic."),
    ("message_bytes", "counter", "nsq_topic_message_bytes", "Bytes published to the topic."),
    ("paused", "gauge", "nsq_topic_paused", "1 while the topic is paused."),
]
_TOPIC_BOUND_SPECS = [
    ("backend_bytes", "gauge", "nsq_topic_backend_bytes", "Bytes in the topic's disk queue."),
    ("dropped", "counter", "nsq_topic_dropped_messages",
     "Messages the topic's queue dropped (drop-oldest policy, or ephemeral overflow)."),
    ("refused", "counter", "nsq_topic_refused_messages",
     "Messages refused because a disk queue they would go to was full."),
]
_CHANNEL_SPECS = [
    ("depth", "gauge", "nsq_channel_depth", "Messages queued in the channel (memory and disk)."),
    ("backend_depth", "gauge", "nsq_channel_backend_depth",
     "Messages in the channel's disk queue."),
    ("in_flight", "gauge", "nsq_channel_in_flight", "Messages delivered and not yet finished."),
    ("deferred", "gauge", "nsq_channel_deferred", "Messages deferred (REQ with delay, DPUB)."),
    ("message_count", "counter", "nsq_channel_messages", "Messages the channel received."),
    ("requeue_count", "counter", "nsq_channel_requeued_messages", "Messages requeued."),
    ("timeout_count", "counter", "nsq_channel_timed_out_messages",
     "Messages that timed out in flight."),
    ("clients", "gauge", "nsq_channel_clients", "Clients subscribed to the channel."),
    ("paused", "gauge", "nsq_channel_paused", "1 while the channel is paused."),
]
_CHANNEL_BOUND_SPECS = [
    ("backend_bytes", "gauge", "nsq_channel_backend_bytes", "Bytes in the channel's disk queue."),
    ("dropped", "counter", "nsq_channel_dropped_messages",
     "Messages the channel's queue dropped (drop-oldest policy, or ephemeral overflow)."),
]
_DEAD_LETTER_SPECS = [
    ("max_attempts", "gauge", "nsq_channel_max_attempts",
     "Deliveries before a message is dead-lettered (0: never)."),
    ("dead_letters", "counter", "nsq_channel_dead_lettered_messages",
     "Messages sent to the dead-letter topic."),
]
_NODE_SPECS = [
    ("healthy", "gauge", "nsq_nsqd_healthy", "1 while nsqd's disk queues can be written."),
    ("topics", "gauge", "nsq_nsqd_topics", "Topics."),
    ("channels", "gauge", "nsq_nsqd_channels", "Channels."),
    ("clients", "gauge", "nsq_nsqd_clients", "TCP client connections."),
]


def nsqd_snapshot(nsqd):
    """nsqd's numbers as plain data (on the hub, yielding every SNAPSHOT_BATCH channels)."""
    opts = nsqd.opts
    node = f"{opts.broadcast_address}:{opts.broadcast_http_port or nsqd.http_port}"
    percentiles = opts.e2e_processing_latency_percentile
    topics, seen = [], 0
    for topic in list(nsqd.topics.values()):
        channels = []
        for channel in list(topic.channels.values()):
            queue = channel.queue
            channels.append((channel.name, {
                "depth": channel.depth, "backend_depth": channel.backend_depth,
                "in_flight": len(channel.in_flight), "deferred": len(channel.deferred),
                "message_count": channel.message_count,
                "requeue_count": channel.requeue_count,
                "timeout_count": channel.timeout_count, "clients": len(channel.consumers),
                "paused": int(channel.paused), "backend_bytes": queue.backend_bytes,
                "dropped": queue.dropped, "max_attempts": channel.max_attempts,
                "dead_letters": channel.dead_letter_count,
            }, channel.latency.result() if channel.latency is not None else None))
            seen += 1
            if seen % SNAPSHOT_BATCH == 0:
                gevent.sleep(0)
        latency = (topic_result([c.latency for c in topic.channels.values()], percentiles)
                   if percentiles else None)
        topics.append((topic.name, {
            "depth": topic.depth, "backend_depth": topic.backend_depth,
            "message_count": topic.message_count, "message_bytes": topic.message_bytes,
            "paused": int(topic.paused), "backend_bytes": topic.queue.backend_bytes,
            "dropped": topic.queue.dropped, "refused": topic.refused_count,
        }, latency, channels))
    return {"node": node, "healthy": int(nsqd.health_error is None), "topics": topics,
            "clients": len(nsqd.sessions), "bounded": bounded(opts)}


def _latency_family(name, labels):
    return GaugeMetricFamily(
        name, "End-to-end processing latency (publish to FIN) percentiles over "
        "--e2e-processing-latency-window-time.", labels=labels + ["quantile"])


def _add_latency(family, labels, latency):
    for item in latency["percentiles"] or ():
        family.add_metric(labels + [str(item["quantile"])], item["value"] / 1e9)


def nsqd_families(snapshot):
    """The nsqd families of a snapshot (runs in the thread pool)."""
    node, bounded_queues = snapshot["node"], snapshot["bounded"]
    topic_specs = _TOPIC_SPECS + (_TOPIC_BOUND_SPECS if bounded_queues else [])
    channel_specs = _CHANNEL_SPECS + (_CHANNEL_BOUND_SPECS if bounded_queues else [])
    topic_labels, channel_labels = ["node", "topic"], ["node", "topic", "channel"]
    topics = _families(topic_specs, topic_labels)
    channels = _families(channel_specs, channel_labels)
    dead_letters = _families(_DEAD_LETTER_SPECS, channel_labels)
    topic_latency = _latency_family("nsq_topic_e2e_processing_latency_seconds", topic_labels)
    channel_latency = _latency_family("nsq_channel_e2e_processing_latency_seconds",
                                      channel_labels)
    channel_total = 0
    for topic_name, topic, latency, topic_channels in snapshot["topics"]:
        labels = [node, topic_name]
        for key, family in topics.items():
            family.add_metric(labels, topic[key])
        if latency is not None:
            _add_latency(topic_latency, labels, latency)
        for channel_name, channel, channel_latency_result in topic_channels:
            labels = [node, topic_name, channel_name]
            for key, family in channels.items():
                family.add_metric(labels, channel[key])
            if channel["max_attempts"] or channel["dead_letters"]:
                for key, family in dead_letters.items():
                    family.add_metric(labels, channel[key])
            if channel_latency_result is not None:
                _add_latency(channel_latency, labels, channel_latency_result)
        channel_total += len(topic_channels)
    nodes = _families(_NODE_SPECS, ["node"])
    for key, value in (("healthy", snapshot["healthy"]), ("topics", len(snapshot["topics"])),
                       ("channels", channel_total), ("clients", snapshot["clients"])):
        nodes[key].add_metric([node], value)
    yield from nodes.values()
    yield from topics.values()
    yield topic_latency
    yield from channels.values()
    yield from dead_letters.values()
    yield channel_latency


def nsqd_metrics(nsqd):
    return render(nsqd_families, nsqd_snapshot(nsqd))


# -- nsqlookupd --------------------------------------------------------------------------

def lookupd_snapshot(lookupd):
    counts = {"client": 0, "topic": 0, "channel": 0}
    topic_producers = []
    for (category, key, _), producers in list(lookupd.db.registrations.items()):
        counts[category] = counts.get(category, 0) + 1
        if category == "topic":
            topic_producers.append((key, len(producers)))
    nodes = len(lookupd.db.registrations.get(("client", "", ""), {}))
    return {"nodes": nodes, "topics": counts["topic"], "channels": counts["channel"],
            "topic_producers": topic_producers}


def lookupd_families(snapshot):
    for name, key, doc in (("nsq_lookupd_nodes", "nodes", "nsqd nodes connected."),
                           ("nsq_lookupd_topics", "topics", "Topics registered."),
                           ("nsq_lookupd_channels", "channels", "Channels registered.")):
        yield GaugeMetricFamily(name, doc, value=snapshot[key])
    producers = GaugeMetricFamily("nsq_lookupd_topic_producers",
                                  "nsqd nodes registered for the topic.", labels=["topic"])
    for topic, count in snapshot["topic_producers"]:
        producers.add_metric([topic], count)
    yield producers


def lookupd_metrics(lookupd):
    return render(lookupd_families, lookupd_snapshot(lookupd))


# -- nsqadmin ----------------------------------------------------------------------------

def admin_snapshot(admin):
    poller = admin.poller
    return {"samples": dict(poller.latest), "down": list(poller.down)}


def admin_families(snapshot):
    """The cluster as nsqadmin last sampled it (every node's topics and channels), so one
    scrape of nsqadmin covers the cluster."""
    topic_labels, channel_labels = ["node", "topic"], ["node", "topic", "channel"]
    topic_depth = GaugeMetricFamily("nsq_topic_depth", "Messages queued in the topic.",
                                    labels=topic_labels)
    topic_messages = CounterMetricFamily("nsq_topic_messages", "Messages published to the "
                                         "topic.", labels=topic_labels)
    channel_depth = GaugeMetricFamily("nsq_channel_depth", "Messages queued in the channel.",
                                      labels=channel_labels)
    channel_messages = CounterMetricFamily("nsq_channel_messages", "Messages the channel "
                                           "received.", labels=channel_labels)
    for (node, topic, channel), (count, depth) in sorted(
            snapshot["samples"].items(), key=lambda item: (item[0][0], item[0][1],
                                                           item[0][2] or "")):
        if channel is None:
            topic_depth.add_metric([node, topic], depth)
            topic_messages.add_metric([node, topic], count)
        else:
            channel_depth.add_metric([node, topic, channel], depth)
            channel_messages.add_metric([node, topic, channel], count)
    down = GaugeMetricFamily("nsq_admin_nodes_down", "Nodes that did not answer the last "
                             "poll.", value=len(snapshot["down"]))
    yield from (down, topic_depth, topic_messages, channel_depth, channel_messages)


def admin_metrics(admin):
    return render(admin_families, admin_snapshot(admin))
