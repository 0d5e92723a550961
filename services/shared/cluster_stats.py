"""The cluster's documents in the shapes Go's nsqadmin 1.3 returns from ``/api/...``.

nsqd's ``/stats`` and nsqlookupd's ``/nodes`` and ``/lookup`` are read into Go
clusterinfo's structures (``Producer``, ``TopicStats``, ``ChannelStats``, ``ClientStats``),
field for field, and combined across nodes as Go does. Node documents may come from
greensq or Go daemons of any 1.x version: a list may be ``[]`` or ``null`` and a field may
be missing; both read as empty. Lists that Go leaves ``nil`` come out as ``null``.

One deliberate difference: Go sums a channel that lives on several nodes into the first
node's own entry (so that entry's numbers change and its ``nodes`` lists only the others);
here such a channel is a fresh ``"*"`` entry listing every node. A channel on one node is
that node's entry, as in Go.
"""

import re
import time

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def items(value):
    """A JSON list that may be ``null`` or missing, as a list."""
    return value if isinstance(value, list) else []


def _int(doc, key):
    value = doc.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _str(doc, key):
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _bool(doc, key):
    return doc.get(key) is True


def join_host_port(host, port):
    """``host:port``, bracketing an IPv6 host (Go's ``net.JoinHostPort``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def version_key(version):
    """A comparable semantic version; anything unparsable is 0.0.0, as in Go."""
    match = _VERSION.match(version or "")
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


# -- producers (nsqd nodes) ----------------------------------------------------------------

def producer(hostname, broadcast_address, tcp_port, http_port, version, topics,
             remote_address=""):
    """Go's ``Producer``; ``topics`` is ``[(name, tombstoned)]``."""
    topic_list = [{"topic": name, "tombstoned": bool(tombstoned)}
                  for name, tombstoned in sorted(topics)]
    return {
        "remote_addresses": None,
        "remote_address": remote_address,
        "hostname": hostname,
        "broadcast_address": broadcast_address,
        "tcp_port": tcp_port,
        "http_port": http_port,
        "version": version,
        "topics": topic_list or None,
        "out_of_date": False,
    }


def producer_from_lookupd(doc):
    """A producer from nsqlookupd's ``/nodes`` or ``/lookup`` answer."""
    names = [t for t in items(doc.get("topics")) if isinstance(t, str)]
    tombstones = items(doc.get("tombstones"))
    topics = [(name, i < len(tombstones) and tombstones[i] is True)
              for i, name in enumerate(names)]
    return producer(_str(doc, "hostname"), _str(doc, "broadcast_address"),
                    _int(doc, "tcp_port"), _int(doc, "http_port"), _str(doc, "version"),
                    topics, _str(doc, "remote_address"))


def producer_from_nsqd(address, info, stats):
    """A producer from nsqd's own ``/info`` and ``/stats``; what ``/info`` lacks (old
    nsqd) comes from the address nsqadmin was given."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    topics = [(_str(t, "topic_name"), False) for t in items(stats.get("topics"))
              if isinstance(t, dict)]
    return producer(_str(info, "hostname") or host,
                    _str(info, "broadcast_address") or host,
                    _int(info, "tcp_port"),
                    _int(info, "http_port") or int(port or 0),
                    _str(info, "version"), topics)


def http_address(prod):
    return join_host_port(prod["broadcast_address"], prod["http_port"])


def tcp_address(prod):
    return join_host_port(prod["broadcast_address"], prod["tcp_port"])


def merge_lookupd_producers(answers):
    """One producer per nsqd from several lookupds' ``/nodes``: ``answers`` is
    ``[(lookupd_address, [producer, ...])]``. ``remote_addresses`` says which lookupd sees
    it from where; ``out_of_date`` marks nsqd older than the newest one."""
    by_tcp = {}
    for lookupd, producers in answers:
        for prod in producers:
            seen = by_tcp.setdefault(tcp_address(prod), prod)
            seen["remote_addresses"] = (seen["remote_addresses"] or []) + [
                f"{lookupd}/{prod['remote_address'] or 'N/A'}"]
    merged = sorted(by_tcp.values(), key=lambda p: (p["hostname"], http_address(p)))
    newest = max((version_key(p["version"]) for p in merged), default=(0, 0, 0))
    for prod in merged:
        prod["out_of_date"] = version_key(prod["version"]) < newest
    return merged


# -- stats ----------------------------------------------------------------------------------

def e2e_latency(doc, topic="", channel="", host=""):
    """Go's ``E2eProcessingLatencyAggregate`` from an nsqd ``quantile.Result``."""
    if not isinstance(doc, dict):
        return None
    count = _int(doc, "count")
    percentiles = None
    if isinstance(doc.get("percentiles"), list):
        percentiles = []
        for entry in doc["percentiles"]:
            value = float(entry.get("value", 0))
            percentiles.append({"average": value, "count": float(count), "max": value,
                                "min": value, "quantile": float(entry.get("quantile", 0)),
                                "value": value})
    return {"count": count, "percentiles": percentiles, "topic": topic, "channel": channel,
            "host": host}


def _add_e2e(total, part):
    """Merge one node's latency percentiles into an aggregate: the widest min and max,
    counts summed, averages weighted by count. (Go's merge keeps only the last node's
    value as ``min``; the keys are Go's.)"""
    if part is None:
        return
    total["count"] += part["count"]
    for value in part["percentiles"] or []:
        merged = total["percentiles"] = total["percentiles"] or []
        entry = next((p for p in merged if p["quantile"] == value["quantile"]), None)
        if entry is None:
            entry = {"quantile": value["quantile"], "max": value["max"], "min": value["min"],
                     "count": 0.0, "average": 0.0}
            merged.append(entry)
        entry["max"] = max(entry["max"], value["max"])
        entry["min"] = min(entry["min"], value["min"])
        entry["count"] += value["count"]
        if entry["count"]:
            entry["average"] += ((value["average"] - entry["average"])
                                 * value["count"] / entry["count"])


def client_stats(doc, node, now=None):
    """Go's ``ClientStats`` from one nsqd client entry; ``connected`` in nanoseconds."""
    now = int(time.time() if now is None else now)
    connect_ts = _int(doc, "connect_ts")
    return {
        "node": node,
        "remote_address": _str(doc, "remote_address"),
        "version": _str(doc, "version"),
        "client_id": _str(doc, "client_id"),
        "hostname": _str(doc, "hostname"),
        "user_agent": _str(doc, "user_agent"),
        "connect_ts": connect_ts,
        "connected": (now - connect_ts) * 1_000_000_000,
        "in_flight_count": _int(doc, "in_flight_count"),
        "ready_count": _int(doc, "ready_count"),
        "finish_count": _int(doc, "finish_count"),
        "requeue_count": _int(doc, "requeue_count"),
        "message_count": _int(doc, "message_count"),
        "sample_rate": _int(doc, "sample_rate"),
        "deflate": _bool(doc, "deflate"),
        "snappy": _bool(doc, "snappy"),
        "authed": _bool(doc, "authed"),
        "auth_identity": _str(doc, "auth_identity"),
        "auth_identity_url": _str(doc, "auth_identity_url"),
        "tls": _bool(doc, "tls"),
        "tls_cipher_suite": _str(doc, "tls_cipher_suite"),
        "tls_version": _str(doc, "tls_version"),
        "tls_negotiated_protocol": _str(doc, "tls_negotiated_protocol"),
        "tls_negotiated_protocol_is_mutual": _bool(doc, "tls_negotiated_protocol_is_mutual"),
    }


def channel_stats(doc, node, hostname, topic_name, now=None):
    """Go's ``ChannelStats`` for one channel on one node."""
    depth, backend = _int(doc, "depth"), _int(doc, "backend_depth")
    clients = doc.get("clients")
    return {
        "node": node,
        "hostname": hostname,
        "topic_name": topic_name,
        "channel_name": _str(doc, "channel_name"),
        "depth": depth,
        "memory_depth": depth - backend,
        "backend_depth": backend,
        "in_flight_count": _int(doc, "in_flight_count"),
        "deferred_count": _int(doc, "deferred_count"),
        "requeue_count": _int(doc, "requeue_count"),
        "timeout_count": _int(doc, "timeout_count"),
        "message_count": _int(doc, "message_count"),
        "client_count": _int(doc, "client_count"),
        "nodes": None,
        "clients": ([client_stats(c, node, now) for c in clients if isinstance(c, dict)]
                    if isinstance(clients, list) else None),
        "paused": _bool(doc, "paused"),
        "e2e_processing_latency": e2e_latency(doc.get("e2e_processing_latency")),
    }


def topic_stats(doc, node, hostname, now=None):
    """Go's ``TopicStats`` for one topic on one node (its channels included)."""
    depth, backend = _int(doc, "depth"), _int(doc, "backend_depth")
    name = _str(doc, "topic_name")
    channels = doc.get("channels")
    return {
        "node": node,
        "hostname": hostname,
        "topic_name": name,
        "depth": depth,
        "memory_depth": depth - backend,
        "backend_depth": backend,
        "message_count": _int(doc, "message_count"),
        "nodes": None,
        "channels": ([channel_stats(c, node, hostname, name, now)
                      for c in channels if isinstance(c, dict)]
                     if isinstance(channels, list) else None),
        "paused": _bool(doc, "paused"),
        "e2e_processing_latency": e2e_latency(doc.get("e2e_processing_latency")),
    }


_CHANNEL_SUMS = ("depth", "memory_depth", "backend_depth", "in_flight_count",
                 "deferred_count", "requeue_count", "timeout_count", "message_count",
                 "client_count")


def _by_host(entry):
    return entry["hostname"], entry["node"]


def aggregate_channel(topic_name, channel_name, per_node):
    """A channel across nodes, the shape of ``GET /api/topics/:topic/:channel``."""
    total = {
        "node": "*" if per_node else "", "hostname": "", "topic_name": topic_name,
        "channel_name": channel_name, **{key: 0 for key in _CHANNEL_SUMS},
        "nodes": None, "clients": None, "paused": False,
        "e2e_processing_latency": None,
    }
    for entry in sorted(per_node, key=_by_host):
        for key in _CHANNEL_SUMS:
            total[key] += entry[key]
        total["paused"] = total["paused"] or entry["paused"]
        total["nodes"] = (total["nodes"] or []) + [entry]
        if total["e2e_processing_latency"] is None:
            total["e2e_processing_latency"] = e2e_latency({}, topic_name, channel_name, "*")
        _add_e2e(total["e2e_processing_latency"], entry["e2e_processing_latency"])
        if entry["clients"]:
            total["clients"] = (total["clients"] or []) + entry["clients"]
    if total["clients"]:
        total["clients"].sort(key=lambda c: (c["hostname"], c["node"], c["remote_address"]))
    return total


def aggregate_topic(topic_name, per_node):
    """A topic across nodes, the shape of ``GET /api/topics/:topic``: sums, each node's
    entry under ``nodes``, and each channel once (see the module note)."""
    per_node = sorted(per_node, key=_by_host)
    total = {
        "node": "*" if per_node else "", "hostname": "", "topic_name": topic_name,
        "depth": 0, "memory_depth": 0, "backend_depth": 0, "message_count": 0,
        "nodes": [] if per_node else None, "channels": None, "paused": False,
        "e2e_processing_latency": None,
    }
    channels = {}
    for entry in per_node:
        for key in ("depth", "memory_depth", "backend_depth", "message_count"):
            total[key] += entry[key]
        total["paused"] = total["paused"] or entry["paused"]
        total["nodes"].append(entry)
        if total["e2e_processing_latency"] is None:
            total["e2e_processing_latency"] = e2e_latency({}, topic_name, "", "*")
        _add_e2e(total["e2e_processing_latency"], entry["e2e_processing_latency"])
        for channel in items(entry["channels"]):
            channels.setdefault(channel["channel_name"], []).append(channel)
    if channels:
        total["channels"] = [
            found[0] if len(found) == 1 else aggregate_channel(topic_name, name, found)
            for name, found in channels.items()]
    return total


def counter_stats(topic_stats_list):
    """``GET /api/counter``'s ``stats``: messages per channel per node."""
    stats = {}
    for topic in topic_stats_list:
        for channel in items(topic["channels"]):
            key = f"{topic['topic_name']}:{channel['channel_name']}:{channel['node']}"
            entry = stats.setdefault(key, {
                "node": channel["node"], "topic_name": topic["topic_name"],
                "channel_name": channel["channel_name"], "message_count": 0})
            entry["message_count"] += channel["message_count"]
    return stats
