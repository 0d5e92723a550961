"""nsqd's ``GET /metrics``: its health and counts, and every topic's and channel's series,
written straight from the actors' counters (services/shared/metrics.py says why).

Every series has a ``node`` label (broadcast address and HTTP port, as nsqadmin names
nodes), topic and channel series a ``topic`` and a ``channel`` label. With replication
(README, "Replication"), a primary's series of each replica carry a ``replica`` label
(its TCP address), a replica's series of each copy it keeps ``primary`` (the primary's
node name) and ``primary_id`` labels; a state is a state set, one sample per state, 1 for
the present one.
"""

from greensq.services.nsqd.replica_copies import (
    FOLLOWING, SILENT, STOPPED, SYNCING, TAKEN_OVER, TAKING_OVER)
from greensq.services.nsqd.replica_link import CONNECTING, DOWN, RECONCILING, UP
from greensq.services.nsqd.stats import bounded, replication_stats
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
_REPLICA_SERIES = [
    ("nsq_nsqd_replica_up", "gauge",
     "1 while the replica is up: publishes are answered once it holds them."),
    ("nsq_nsqd_replica_state", "gauge", "The link's state (connecting, reconciling, "
     "syncing, up, down): 1 for the present one."),
    ("nsq_nsqd_replica_pending_bytes", "gauge",
     "Bytes sent or queued for the replica and not yet acknowledged."),
    ("nsq_nsqd_replica_oldest_unacknowledged_seconds", "gauge",
     "Age of the oldest write the replica has not acknowledged."),
    ("nsq_nsqd_replica_lag_seconds", "gauge",
     "How long the replica's latest acknowledged write waited for its acknowledgement."),
]
_REPLICA_STATES = (CONNECTING, RECONCILING, SYNCING, UP, DOWN)
_COPY_SERIES = [
    ("nsq_nsqd_copy_state", "gauge", "The state of the copy kept for a primary (syncing, "
     "following, silent, stopped, taking_over, taken_over): 1 for the present one."),
    ("nsq_nsqd_copy_messages", "gauge", "Messages in the copy kept for the primary."),
    ("nsq_nsqd_copy_silent_seconds", "gauge",
     "Time since the primary was last heard (0 while it is connected)."),
    ("nsq_nsqd_copy_taken_over_messages", "gauge",
     "Messages of the copy this nsqd took over, until the primary has come back."),
]
_COPY_STATES = (SYNCING, FOLLOWING, SILENT, STOPPED, TAKING_OVER, TAKEN_OVER)
_LATENCY_HELP = ("End-to-end processing latency (publish to FIN) percentiles over "
                 "--e2e-processing-latency-window-time.")


def _latency_samples(family, labels, result):
    for item in result["percentiles"] or ():
        family.sample(f'{labels},quantile="{item["quantile"]}"', item["value"] / 1e9)


def _state_samples(family, labels, states, present):
    for state in states:
        family.sample(f'{labels},state="{state}"', int(state == present))


def _replication_samples(out, node_labels, replication):
    """The replicas' and the copies' series, from ``/stats``' ``replication``."""
    replica_families = open_families(out, _REPLICA_SERIES if replication["replicas"] else [])
    for replica in replication["replicas"]:
        labels = f'{node_labels},replica="{label_value(replica["address"])}"'
        up, state, pending, oldest, lag = replica_families
        up.sample(labels, int(replica["state"] == UP))
        _state_samples(state, labels, _REPLICA_STATES, replica["state"])
        pending.sample(labels, replica["pending_bytes"])
        oldest.sample(labels, replica["oldest_unacknowledged_ms"] / 1000)
        lag.sample(labels, replica["lag_ms"] / 1000)
    copy_families = open_families(out, _COPY_SERIES if replication["copies"] else [])
    for copy in replication["copies"]:
        labels = (f'{node_labels},primary="{label_value(copy["primary"])}",'
                  f'primary_id="{copy["primary_id"]}"')
        state, messages, silent, taken = copy_families
        _state_samples(state, labels, _COPY_STATES, copy["state"])
        messages.sample(labels, copy["messages"])
        silent.sample(labels, copy["silent_ms"] / 1000)
        taken.sample(labels, copy["taken_over_count"])


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
    replication = replication_stats(nsqd)
    if replication is not None:
        _replication_samples(out, node_labels, replication)
    return out.text()
