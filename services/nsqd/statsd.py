"""nsqd's push to statsd (``--statsd-address``), with Go nsqd's names, types and packets.

Every ``--statsd-interval`` nsqd sends, for each topic and channel, its counters as the
increase since the previous push (``|c``) and its depths as gauges (``|g``), plus the
configured e2e latency percentiles and (``--statsd-mem-stats``) the memory figures::

    <prefix>topic.<topic>.message_count:200|c
    <prefix>topic.<topic>.channel.<channel>.depth:17|g
    <prefix>mem.gc_runs:3|c

``<prefix>`` is ``--statsd-prefix`` with ``%s`` replaced by the broadcast address and
HTTP port, ``.`` and ``:`` turned into ``_`` (``nsq.myhost_4151.``), and a final ``.``
added if missing. Metrics, one per line, are packed into UDP packets of at most
``--statsd-udp-packet-size`` bytes (a longer metric goes alone), and the packets are
spread over the interval less one second, as Go nsqd does, so a statsd server is not hit
by one burst from every nsqd at once.
"""

import logging
import socket
import time

import gevent
from gevent.event import Event

from greensq.services.nsqd.memory import gc_total_runs, memory_stats
from greensq.services.nsqd.stats import nsqd_stats
from greensq.services.shared.names import is_ephemeral

log = logging.getLogger("greensq")

DEFAULT_PACKET_SIZE = 4096   # Go's bufio size when --statsd-udp-packet-size is not positive

_TOPIC_COUNTERS = ("message_count", "message_bytes")
_TOPIC_GAUGES = ("depth", "backend_depth")
_CHANNEL_METRICS = (("message_count", "c"), ("depth", "g"), ("backend_depth", "g"),
                    ("in_flight_count", "g"), ("deferred_count", "g"),
                    ("requeue_count", "c"), ("timeout_count", "c"), ("client_count", "g"))
_MEM_GAUGES = ("heap_objects", "heap_idle_bytes", "heap_in_use_bytes", "heap_released_bytes",
               "gc_pause_usec_100", "gc_pause_usec_99", "gc_pause_usec_95", "next_gc_bytes")


def host_key(host, port):
    """Go's ``statsd.HostKey(net.JoinHostPort(host, port))``."""
    joined = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return joined.replace(".", "_").replace(":", "_")


def full_prefix(template, host, port):
    """``--statsd-prefix`` as nsqd uses it (empty stays empty)."""
    if not template:
        return ""
    prefix = template.replace("%s", host_key(host, port))
    return prefix if prefix.endswith(".") else prefix + "."


def _percentile_metrics(name, latency):
    return [(f"{name}.e2e_processing_latency_{item['quantile'] * 100.0:.0f}",
             int(item["value"]), "g") for item in latency["percentiles"] or ()]


def metric_lines(stats, last, exclude_ephemeral=False):
    """``(name, value, type)`` for every topic and channel of a ``/stats`` document, the
    counters as increases over ``last`` (the previous push's document, or None)."""
    previous = {t["topic_name"]: t for t in (last or {}).get("topics") or ()}
    metrics = []
    for topic in stats["topics"] or ():
        name = topic["topic_name"]
        if exclude_ephemeral and is_ephemeral(name):
            continue
        before = previous.get(name, {})
        base = f"topic.{name}"
        metrics += [(f"{base}.{key}", topic[key] - before.get(key, 0), "c")
                    for key in _TOPIC_COUNTERS]
        metrics += [(f"{base}.{key}", topic[key], "g") for key in _TOPIC_GAUGES]
        metrics += _percentile_metrics(base, topic["e2e_processing_latency"])
        channels_before = {c["channel_name"]: c for c in before.get("channels") or ()}
        for channel in topic["channels"]:
            channel_name = channel["channel_name"]
            if exclude_ephemeral and is_ephemeral(channel_name):
                continue
            was = channels_before.get(channel_name, {})
            channel_base = f"{base}.channel.{channel_name}"
            for key, kind in _CHANNEL_METRICS:
                value = channel[key] - was.get(key, 0) if kind == "c" else channel[key]
                metric = "clients" if key == "client_count" else key
                metrics.append((f"{channel_base}.{metric}", value, kind))
            metrics += _percentile_metrics(channel_base, channel["e2e_processing_latency"])
    return metrics


def memory_lines(memory, last_gc_runs):
    metrics = [(f"mem.{key}", memory[key], "g") for key in _MEM_GAUGES]
    metrics.append(("mem.gc_runs", memory["gc_total_runs"] - last_gc_runs, "c"))
    return metrics


def pack(lines, packet_size):
    """Go's BoundaryBufferedWriter: lines appended to a packet until the next one would
    not fit; a line longer than a packet is sent alone."""
    size = packet_size if packet_size > 0 else DEFAULT_PACKET_SIZE
    packets, current = [], b""
    for line in lines:
        if current and len(current) + len(line) > size:
            packets.append(current)
            current = b""
        current += line
    if current:
        packets.append(current)
    return packets


def packets_of(stats, last_stats, memory, last_gc_runs, prefix, opts):
    """One push's UDP packets (pure: runs in the thread pool)."""
    metrics = metric_lines(stats, last_stats, opts.statsd_exclude_ephemeral)
    if memory is not None:
        metrics += memory_lines(memory, last_gc_runs)
    lines = [f"{prefix}{name}:{value}|{kind}\n".encode() for name, value, kind in metrics]
    return pack(lines, opts.statsd_udp_packet_size)


class StatsdPusher:
    """The greenlet that pushes nsqd's stats to statsd every ``--statsd-interval``."""

    def __init__(self, nsqd):
        self.nsqd = nsqd
        self.opts = nsqd.opts
        self._stopping = Event()
        self._greenlet = None
        self._last_stats = None
        self._last_gc_runs = 0

    def start(self):
        self._last_gc_runs = gc_total_runs()
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self):
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=2.0)
            self._greenlet.kill(block=False)
        log.info("STATSD: closing")

    def prefix(self):
        opts, nsqd = self.opts, self.nsqd
        return full_prefix(opts.statsd_prefix, opts.broadcast_address,
                           opts.broadcast_http_port or nsqd.http_port)

    def _run(self):
        interval = self.opts.statsd_interval
        due = time.monotonic() + interval
        while not self._stopping.wait(max(0.0, due - time.monotonic())):
            try:
                self.push()
            except Exception:
                log.exception("STATSD: push failed")
            due = max(due + interval, time.monotonic())   # a late push skips ticks

    def collect(self):
        """This push's packets (and remember what the next push counts from). The numbers
        are read on the hub; the lines are written and packed in the thread pool."""
        opts = self.opts
        stats = nsqd_stats(self.nsqd, include_clients=False, include_mem=False)
        memory = memory_stats() if opts.statsd_mem_stats else None
        packets = gevent.get_hub().threadpool.apply(packets_of, (
            stats, self._last_stats, memory, self._last_gc_runs, self.prefix(), opts))
        self._last_stats = stats
        if memory is not None:
            self._last_gc_runs = memory["gc_total_runs"]
        return packets

    def push(self):
        address = self.opts.statsd_address
        host, _, port = address.rpartition(":")
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.connect((host.strip("[]"), int(port)))
        except (OSError, ValueError):
            log.error("failed to create UDP socket to statsd(%s)", address)
            return
        log.info("STATSD: pushing stats to %s", address)
        with sock:
            self._spread(sock, self.collect(), max(0.0, self.opts.statsd_interval - 1.0))

    def _spread(self, sock, packets, over):
        """Send the packets evenly over ``over`` seconds (at once when it is 0)."""
        pause = over / len(packets) if packets else 0.0
        for packet in packets:
            try:
                sock.send(packet)
            except OSError:
                pass     # statsd down: like Go, nothing to do but try next time
            if pause and self._stopping.wait(pause):
                pause = 0.0   # shutting down: send the rest at once
