"""nsqd's ``/stats``: the JSON document nsqadmin, nsq_stat and dashboards parse, and the
text rendering of it.

Key names and nesting follow NSQ exactly; topics and channels are sorted by name.
greensq's own features add keys only when they are turned on: ``max_attempts`` and
``dead_letter_count`` on a channel with a max-attempts limit (or that has dead-lettered
messages); ``backend_bytes``, ``dropped_count`` (and a topic's ``refused_count``) on
every topic and channel once a ``--max-bytes-per-*`` bound is set; ``replication`` on an
nsqd with replicas (``replicas``: each one's state and lag) or that keeps copies for
primaries (``copies``).
"""

import time

from greensq.services.nsqd.memory import memory_stats
from greensq.services.shared.govalues import format_duration
from greensq.services.shared.latency import NO_LATENCY, human_percentiles, topic_result
from greensq.services.shared.version import __version__, NSQ_VERSION


def client_stats(client, topic_filter=None):
    """One client's stats, the shape of NSQ's ClientV2Stats."""
    consumer = client.consumer
    stats = {
        "client_id": client.client_id,
        "hostname": client.hostname,
        "version": "V2",
        "remote_address": client.remote_address,
        "state": client.state,
        "ready_count": consumer.ready_count if consumer else 0,
        "in_flight_count": consumer.in_flight_count if consumer else 0,
        "message_count": consumer.message_count if consumer else 0,
        "finish_count": consumer.finish_count if consumer else 0,
        "requeue_count": consumer.requeue_count if consumer else 0,
        "connect_ts": client.connect_ts,
        "sample_rate": client.sample_rate,
        "deflate": client.deflate,
        "snappy": client.snappy,
        "user_agent": client.user_agent,
    }
    auth_state = getattr(client, "auth_state", None)
    if auth_state is not None:      # omitempty, as NSQ
        if auth_state.authorizations:
            stats["authed"] = True
        if auth_state.identity:
            stats["auth_identity"] = auth_state.identity
        if auth_state.identity_url:
            stats["auth_identity_url"] = auth_state.identity_url
    pub_counts = [{"topic": topic, "count": count}
                  for topic, count in sorted(client.pub_counts.items())
                  if topic_filter is None or topic == topic_filter]
    if pub_counts:
        stats["pub_counts"] = pub_counts
    stats.update(client.tls_stats())
    return stats


def bounded(opts):
    return bool(opts.max_bytes_per_topic or opts.max_bytes_per_channel)


def channel_stats(channel, include_clients):
    clients = ([client_stats(c.client) for c in channel.consumers]
               if include_clients else None)
    stats = {
        "channel_name": channel.name,
        "depth": channel.depth,
        "backend_depth": channel.backend_depth,
        "in_flight_count": len(channel.in_flight),
        "deferred_count": len(channel.deferred),
        "message_count": channel.message_count,
        "requeue_count": channel.requeue_count,
        "timeout_count": channel.timeout_count,
        "client_count": len(channel.consumers),
        "clients": clients,
        "paused": channel.paused,
        "e2e_processing_latency": (channel.latency.result() if channel.latency is not None
                                   else NO_LATENCY),
    }
    if channel.max_attempts or channel.dead_letter_count:
        stats["max_attempts"] = channel.max_attempts
        stats["dead_letter_count"] = channel.dead_letter_count
    if bounded(channel.nsqd.opts):
        stats["backend_bytes"] = channel.queue.backend_bytes
        stats["dropped_count"] = channel.queue.dropped
    return stats


def topic_stats(topic, channel_filter, include_clients):
    channels = [channel_stats(topic.channels[name], include_clients)
                for name in sorted(topic.channels)
                if channel_filter is None or name == channel_filter]
    stats = {
        "topic_name": topic.name,
        "channels": channels,
        "depth": topic.depth,
        "backend_depth": topic.backend_depth,
        "message_count": topic.message_count,
        "message_bytes": topic.message_bytes,
        "paused": topic.paused,
        "e2e_processing_latency": topic_result(
            [channel.latency for channel in topic.channels.values()],
            topic.nsqd.opts.e2e_processing_latency_percentile),
    }
    if bounded(topic.nsqd.opts):
        stats["backend_bytes"] = topic.queue.backend_bytes
        stats["dropped_count"] = topic.queue.dropped
        stats["refused_count"] = topic.refused_count
    return stats


def nsqd_stats(nsqd, topic_filter=None, channel_filter=None,
               include_clients=True, include_mem=True):
    """The ``/stats?format=json`` document.

    Go's encoder writes an empty list it never made as ``null``, and dashboards pass that
    on, so the nulls are Go's: ``topics`` for a topic filter that matches nothing,
    ``clients`` without include_clients, ``producers`` when there are none. An empty
    filter means no filter, as in Go."""
    topic_filter, channel_filter = topic_filter or None, channel_filter or None
    if topic_filter is not None and topic_filter not in nsqd.topics:
        topics = None
    else:
        topics = [topic_stats(nsqd.topics[name], channel_filter, include_clients)
                  for name in sorted(nsqd.topics)
                  if (topic_filter is None or name == topic_filter)
                  and (channel_filter is None or channel_filter in nsqd.topics[name].channels)]
    stats = {
        "version": NSQ_VERSION,
        "health": nsqd.health,
        "start_time": nsqd.start_time,
        "topics": topics,
    }
    if nsqd.opts.durable:       # greensq's durable mode; absent (Go's document) otherwise
        stats["durable"] = True
    replication = replication_stats(nsqd)
    if replication is not None:
        stats["replication"] = replication
    if include_mem:
        stats["memory"] = memory_stats()
    producers = None
    if include_clients:
        producers = [client_stats(client, topic_filter) for client in nsqd.clients
                     if client.pub_counts and (
                         topic_filter is None or topic_filter in client.pub_counts)] or None
    stats["producers"] = producers
    return stats


def replication_stats(nsqd):
    """greensq's replication (README, "Replication"), or None when not in use: this
    nsqd's replicas, and the copies it keeps for its primaries."""
    copies = nsqd.copies.stats() if nsqd.copies.copies else []
    if nsqd.replication is None and not copies:
        return None
    stats = nsqd.replication.stats() if nsqd.replication is not None else {"replicas": []}
    stats["copies"] = copies
    return stats


def _client_line(client, now):
    connected = format_duration(int(now - client["connect_ts"]))
    ident = f"{client['hostname']}:{client['remote_address'].rsplit(':', 1)[-1]}"
    if client.get("user_agent"):
        ident += " " + client["user_agent"]
    if client["state"] == 0 and client.get("pub_counts"):
        topics = ",".join(f"{p['topic']}={p['count']}" for p in client["pub_counts"])
        total = sum(p["count"] for p in client["pub_counts"])
        return (f"[V2 {ident:<21}] msgs: {total:<8} topics: {topics} "
                f"connected: {connected}")
    return (f"[V2 {ident:<21}] state: {client['state']} inflt: {client['in_flight_count']:<4} "
            f"rdy: {client['ready_count']:<4} fin: {client['finish_count']:<8} "
            f"re-q: {client['requeue_count']:<8} msgs: {client['message_count']:<8} "
            f"connected: {connected}")


def format_text(stats):
    """The plain-text ``/stats`` page."""
    now = time.time()
    uptime = format_duration(int(now - stats["start_time"]))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stats["start_time"]))
    lines = [f"nsqd v{NSQ_VERSION} (built w/greensq-{__version__})",
             f"start_time {started}", f"uptime {uptime}", "", f"Health: {stats['health']}"]
    if stats.get("durable"):
        lines.append("Mode: durable (an OK follows an fsync; messages stay on disk until FIN)")
    if "memory" in stats:
        lines += ["", "Memory:"]
        lines += [f"   {key:<25}\t{value}" for key, value in stats["memory"].items()]
    if not stats["topics"]:
        lines += ["", "Topics: None"]
    else:
        lines += ["", "Topics:"]
    for topic in stats["topics"] or ():
        prefix = "*P " if topic["paused"] else "   "
        lines.append(
            f"{prefix}[{topic['topic_name']:<15}] depth: {topic['depth']:<5} "
            f"be-depth: {topic['backend_depth']:<5} msgs: {topic['message_count']:<8} "
            f"e2e%: {human_percentiles(topic['e2e_processing_latency'])}")
        for channel in topic["channels"]:
            prefix = "   *P " if channel["paused"] else "      "
            lines.append(
                f"{prefix}[{channel['channel_name']:<25}] depth: {channel['depth']:<5} "
                f"be-depth: {channel['backend_depth']:<5} "
                f"inflt: {channel['in_flight_count']:<4} def: {channel['deferred_count']:<4} "
                f"re-q: {channel['requeue_count']:<5} timeout: {channel['timeout_count']:<5} "
                f"msgs: {channel['message_count']:<8} "
                f"e2e%: {human_percentiles(channel['e2e_processing_latency'])}")
            lines += ["        " + _client_line(c, now) for c in channel["clients"] or ()]
    lines += _replication_lines(stats.get("replication"))
    producers = stats.get("producers") or []
    lines += ["", "Producers:" if producers else "Producers: None"]
    lines += ["   " + _client_line(p, now) for p in producers]
    return "\n".join(lines) + "\n"


def _replication_lines(replication):
    if not replication:
        return []
    lines = []
    if replication["replicas"]:
        lines += ["", "Replicas:"]
        lines += [f"   [{r['address']:<21}] {r['state']:<11} lag: {r['lag_ms']}ms "
                  f"pending: {r['pending_bytes']}B"
                  + (f" ({r['last_error']})" if r["state"] == "down" and r["last_error"] else "")
                  for r in replication["replicas"]]
    if replication["copies"]:
        lines += ["", "Copies (as a replica):"]
        lines += [f"   [{c['primary']:<21}] {c['state']:<11} msgs: {c['messages']:<8} "
                  f"taken over: {c['taken_over_count']}" for c in replication["copies"]]
    return lines
