"""nsqd's ``GET /metrics``: its health and counts, and every topic's and channel's series,
written straight from the actors' counters (services/shared/metrics.py says why).

Every series has a ``node`` label (broadcast address and HTTP port, as nsqadmin names
nodes), topic and channel series a ``topic`` and a ``channel`` label.
"""

from greensq.services.nsqd.stats import bounded
from greensq.services.shared.latency import topic_result
from greensq.services.shared.metrics import (
    YIELD_EVERY, Exposition, label_value, let_others_run, open_families)

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
    healthy, topic_count, channel_count, clients = open_families(out, [
        ("nsq_nsqd_healthy", "gauge", "1 while nsqd's disk queues can be written."),
        ("nsq_nsqd_topics", "gauge", "Topics."), ("nsq_nsqd_channels", "gauge", "Channels."),
        ("nsq_nsqd_clients", "gauge", "TCP client connections.")])
    bound_families = open_families(out, _NODE_BOUND_SERIES if with_bounds else [])
    topic_families = open_families(out, _TOPIC_SERIES + (_TOPIC_BOUND_SERIES if with_bounds else []))
    topic_latency = out.family("nsq_topic_e2e_processing_latency_seconds", "gauge",
                               _LATENCY_HELP)
    channel_families = open_families(
        out, _CHANNEL_SERIES + (_CHANNEL_BOUND_SERIES if with_bounds else []))
    dead_letter_families = open_families(out, _DEAD_LETTER_SERIES)
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
