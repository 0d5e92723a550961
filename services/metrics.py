"""Prometheus ``GET /metrics`` for nsqd, nsqlookupd and nsqadmin.

The process-wide metrics (``process_*``, ``python_info``, ``python_gc_*``) are
prometheus-client's collectors, written by its ``generate_latest``. The topic and channel
series, tens of thousands of lines on a busy nsqd, are written here, straight from the
actors' counters into the same text format: prometheus-client builds an object per
sample and escapes every label of every line, which makes a scrape of 10,000 channels
take seconds of CPU (bench/metrics_scrape.py), while here label sets are built once per
topic and channel and each line is one string format. The hub gets a turn every
``YIELD_EVERY`` channels and between families, so publishers and consumers keep being
served during a scrape.
The output is checked with prometheus-client's own parser in the tests.

Names follow Prometheus' conventions (``nsq_channel_depth``,
``nsq_channel_messages_total``, ``nsq_topic_e2e_processing_latency_seconds``); every nsqd
series has a ``node`` label (broadcast address and HTTP port, as nsqadmin names nodes),
topic and channel series a ``topic`` and a ``channel`` label.
"""

import functools

import gevent

from greensq.services.latency import topic_result
from greensq.services.stats import bounded

YIELD_EVERY = 200


class _ProcessMetrics:
    """prometheus-client's process, platform and GC collectors (registered with a
    registry of their own, as the GC collector insists on one)."""

    def __init__(self, prometheus_client):
        registry = prometheus_client.CollectorRegistry()
        self.collectors = (prometheus_client.ProcessCollector(registry=registry),
                           prometheus_client.PlatformCollector(registry=registry),
                           prometheus_client.GCCollector(registry=registry))

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


@functools.cache
def _prometheus():
    """prometheus-client and the process collectors, imported at the first scrape: the
    library and what it imports (http.client, email, snappy...) cost a daemon that is
    never scraped about 1 MiB and 16 ms of startup."""
    import prometheus_client

    return prometheus_client, _ProcessMetrics(prometheus_client)


def content_type():
    """The text exposition format's Content-Type, as prometheus-client names it."""
    return _prometheus()[0].CONTENT_TYPE_LATEST


def let_others_run():
    """Give the hub a full turn, sockets and timers included: a greenlet that sleeps 0
    may run again before the loop polls, a positive delay waits for its next turn."""
    gevent.sleep(1e-6)


def label_value(text):
    """A label value as the text format quotes it."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """The text format, family by family: ``family`` opens one and returns the list its
    sample lines go to, ``sample`` writes one; ``text`` renders the families in the
    order they were opened, then the process metrics."""

    def __init__(self):
        self._families = []

    def family(self, name, kind, documentation):
        """A family's sample list; a counter's samples are named ``<name>_total``."""
        sample_name = f"{name}_total" if kind == "counter" else name
        lines = [f"# HELP {sample_name} {documentation}\n",
                 f"# TYPE {sample_name} {kind}\n"]
        self._families.append(lines)
        return _Family(sample_name, lines)

    def text(self):
        """The whole exposition (bytes), yielding to the hub between families."""
        parts = []
        for lines in self._families:
            parts.append("".join(lines).encode())
            let_others_run()
        prometheus_client, process_metrics = _prometheus()
        parts.append(prometheus_client.generate_latest(process_metrics))
        return b"".join(parts)


class _Family:
    __slots__ = ("name", "head", "lines")

    def __init__(self, sample_name, lines):
        self.name = sample_name
        self.head = sample_name + "{"
        self.lines = lines

    def sample(self, labels, value):
        """One line; ``labels`` is a rendered label set (``a="x",b="y"``) or empty."""
        if labels:
            self.lines.append(f"{self.head}{labels}}} {value}\n")
        else:
            self.lines.append(f"{self.name} {value}\n")


# -- nsqd -------------------------------------------------------------------------------

_NODE_BOUND_SERIES = [
    ("nsq_nsqd_max_bytes_per_topic", "gauge",
     "Bytes a topic's disk queue may hold (--max-bytes-per-topic; 0: unbounded)."),
    ("nsq_nsqd_max_bytes_per_channel", "gauge",
     "Bytes a channel's disk queue may hold (--max-bytes-per-channel; 0: unbounded)."),
]
_TOPIC_SERIES = [
    ("nsq_topic_depth", "gauge", "Messages queued in the topic (memory and disk)."),
    ("nsq_topic_backend_depth", "gauge", "Messages in the topic's disk queue."),
    ("nsq_topic_messages", "counter", "Messages published to the topic."),
    ("nsq_topic_message_bytes", "counter", "Bytes published to the topic."),
    ("nsq_topic_paused", "gauge", "1 while the topic is paused."),
]
_TOPIC_BOUND_SERIES = [
    ("nsq_topic_backend_bytes", "gauge", "Bytes in the topic's disk queue."),
    ("nsq_topic_dropped_messages", "counter",
     "Messages the topic's queue dropped (drop-oldest policy, or ephemeral overflow)."),
    ("nsq_topic_refused_messages", "counter",
     "Messages refused because a disk queue they would go to was full."),
]
_CHANNEL_SERIES = [
    ("nsq_channel_depth", "gauge", "Messages queued in the channel (memory and disk)."),
    ("nsq_channel_backend_depth", "gauge", "Messages in the channel's disk queue."),
    ("nsq_channel_in_flight", "gauge", "Messages delivered and not yet finished."),
    ("nsq_channel_deferred", "gauge", "Messages deferred (REQ with delay, DPUB)."),
    ("nsq_channel_messages", "counter", "Messages the channel received."),
    ("nsq_channel_requeued_messages", "counter", "Messages requeued."),
    ("nsq_channel_timed_out_messages", "counter", "Messages that timed out in flight."),
    ("nsq_channel_clients", "gauge", "Clients subscribed to the channel."),
    ("nsq_channel_paused", "gauge", "1 while the channel is paused."),
]
_CHANNEL_BOUND_SERIES = [
    ("nsq_channel_backend_bytes", "gauge", "Bytes in the channel's disk queue."),
    ("nsq_channel_dropped_messages", "counter",
     "Messages the channel's queue dropped (drop-oldest policy, or ephemeral overflow)."),
]
_DEAD_LETTER_SERIES = [
    ("nsq_channel_max_attempts", "gauge",
     "Deliveries before a message is dead-lettered (0: never)."),
    ("nsq_channel_dead_lettered_messages", "counter", "Messages sent to the dead-letter topic."),
]
_LATENCY_HELP = ("End-to-end processing latency (publish to FIN) percentiles over "
                 "--e2e-processing-latency-window-time.")


def _open(out, series):
    return [out.family(name, kind, doc) for name, kind, doc in series]


def _latency_samples(family, labels, result):
    for item in result["percentiles"] or ():
        family.sample(f'{labels},quantile="{item["quantile"]}"', item["value"] / 1e9)


def nsqd_metrics(nsqd):
    """nsqd's /metrics (bytes)."""
    opts = nsqd.opts
    node = label_value(f"{opts.broadcast_address}:{opts.broadcast_http_port or nsqd.http_port}")
    node_labels = f'node="{node}"'
    with_bounds, latency_on = bounded(opts), bool(opts.e2e_processing_latency_percentile)
    out = Exposition()
    healthy, topic_count, channel_count, clients = _open(out, [
        ("nsq_nsqd_healthy", "gauge", "1 while nsqd's disk queues can be written."),
        ("nsq_nsqd_topics", "gauge", "Topics."), ("nsq_nsqd_channels", "gauge", "Channels."),
        ("nsq_nsqd_clients", "gauge", "TCP client connections.")])
    bound_families = _open(out, _NODE_BOUND_SERIES if with_bounds else [])
    topic_families = _open(out, _TOPIC_SERIES + (_TOPIC_BOUND_SERIES if with_bounds else []))
    topic_latency = out.family("nsq_topic_e2e_processing_latency_seconds", "gauge",
                               _LATENCY_HELP)
    channel_families = _open(
        out, _CHANNEL_SERIES + (_CHANNEL_BOUND_SERIES if with_bounds else []))
    dead_letter_families = _open(out, _DEAD_LETTER_SERIES)
    channel_latency = out.family("nsq_channel_e2e_processing_latency_seconds", "gauge",
                                 _LATENCY_HELP)
    seen = 0
    topics = list(nsqd.topics.values())
    for topic in topics:
        labels = f'{node_labels},topic="{label_value(topic.name)}"'
        values = [topic.depth, topic.backend_depth, topic.message_count, topic.message_bytes,
                  int(topic.paused)]
        if with_bounds:
            values += [topic.queue.backend_bytes, topic.queue.dropped, topic.refused_count]
        for family, value in zip(topic_families, values):
            family.sample(labels, value)
        if latency_on:
            _latency_samples(topic_latency, labels, topic_result(
                [c.latency for c in topic.channels.values()],
                opts.e2e_processing_latency_percentile))
        for channel in list(topic.channels.values()):
            channel_labels = f'{labels},channel="{label_value(channel.name)}"'
            values = [channel.depth, channel.backend_depth, len(channel.in_flight),
                      len(channel.deferred), channel.message_count, channel.requeue_count,
                      channel.timeout_count, len(channel.consumers), int(channel.paused)]
            if with_bounds:
                values += [channel.queue.backend_bytes, channel.queue.dropped]
            for family, value in zip(channel_families, values):
                family.sample(channel_labels, value)
            if channel.max_attempts or channel.dead_letter_count:
                dead_letter_families[0].sample(channel_labels, channel.max_attempts)
                dead_letter_families[1].sample(channel_labels, channel.dead_letter_count)
            if channel.latency is not None:
                _latency_samples(channel_latency, channel_labels, channel.latency.result())
            seen += 1
            if seen % YIELD_EVERY == 0:
                let_others_run()
    healthy.sample(node_labels, int(nsqd.health_error is None))
    topic_count.sample(node_labels, len(topics))
    channel_count.sample(node_labels, seen)
    clients.sample(node_labels, len(nsqd.clients))
    for family, value in zip(bound_families,
                             (opts.max_bytes_per_topic, opts.max_bytes_per_channel)):
        family.sample(node_labels, value)
    return out.text()


# -- nsqlookupd --------------------------------------------------------------------------

def lookupd_metrics(lookupd):
    """nsqlookupd's /metrics (bytes): its registrations."""
    registrations = list(lookupd.db.registrations.items())
    out = Exposition()
    nodes, topics, channels = _open(out, [
        ("nsq_lookupd_nodes", "gauge", "nsqd nodes connected."),
        ("nsq_lookupd_topics", "gauge", "Topics registered."),
        ("nsq_lookupd_channels", "gauge", "Channels registered.")])
    producers = out.family("nsq_lookupd_topic_producers", "gauge",
                           "nsqd nodes registered for the topic.")
    counts = {"client": 0, "topic": 0, "channel": 0}
    for (category, key, _), registered in registrations:
        counts[category] = counts.get(category, 0) + 1
        if category == "topic":
            producers.sample(f'topic="{label_value(key)}"', len(registered))
    nodes.sample("", len(lookupd.db.registrations.get(("client", "", ""), {})))
    topics.sample("", counts["topic"])
    channels.sample("", counts["channel"])
    return out.text()


# -- nsqadmin ----------------------------------------------------------------------------

def admin_metrics(admin):
    """nsqadmin's /metrics (bytes): every node's topics and channels as it last polled
    them, so one scrape of nsqadmin covers the cluster."""
    poller = admin.poller
    out = Exposition()
    down = out.family("nsq_admin_nodes_down", "gauge", "Nodes that did not answer the last poll.")
    down.sample("", len(poller.down))
    topic_depth, topic_messages, channel_depth, channel_messages = _open(out, [
        ("nsq_topic_depth", "gauge", "Messages queued in the topic."),
        ("nsq_topic_messages", "counter", "Messages published to the topic."),
        ("nsq_channel_depth", "gauge", "Messages queued in the channel."),
        ("nsq_channel_messages", "counter", "Messages the channel received.")])
    for (node, topic, channel), sample in sorted(
            poller.latest.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")):
        labels = f'node="{label_value(node)}",topic="{label_value(topic)}"'
        if channel is None:
            topic_depth.sample(labels, sample.depth)
            topic_messages.sample(labels, sample.message_count)
        else:
            labels += f',channel="{label_value(channel)}"'
            channel_depth.sample(labels, sample.depth)
            channel_messages.sample(labels, sample.message_count)
    return out.text()
