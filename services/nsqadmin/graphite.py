"""Graphite-backed graphs, for a cluster whose nsqd push statsd metrics to graphite
(``--graphite-url``): the metric names nsqd's statsd keys become, the render URLs of the
sparklines and large graphs Go's nsqadmin draws, and the rate behind ``/api/graphite``.

The key layout follows NSQ: ``<prefix>.topic.<topic>.channel.<channel>.<metric>`` with
``%s`` in ``--statsd-prefix`` replaced by the node (``_`` for ``.`` and ``:``), wrapped in
``--statsd-counter-format`` or ``--statsd-gauge-format`` by the metric's kind.
"""

import re
from urllib.parse import urlencode

from greensq.services.shared import json_input
from greensq.services.shared.cluster_http import UpstreamError

GAUGES = {"depth", "in_flight_count", "deferred_count", "clients", "heap_objects",
          "e2e_processing_latency"}
COUNTERS = {"requeue_count", "timeout_count", "message_count", "gc_runs"}

_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_.]")


class GraphiteError(Exception):
    pass


def sanitize_key(name):
    """A topic or channel name as statsdaemon writes it into a graphite key."""
    return _UNSAFE.sub("", name.replace(" ", "_").replace("/", "-"))


class Graphite:
    def __init__(self, opts):
        self.opts = opts

    @property
    def enabled(self):
        return bool(self.opts.graphite_url)

    def _formatted(self, metric, key):
        if metric in COUNTERS:
            return self.opts.statsd_counter_format.replace("%s", key)
        if metric in GAUGES or metric.endswith("_bytes") or metric.startswith("gc_pause_"):
            return self.opts.statsd_gauge_format.replace("%s", key)
        return key

    def prefix(self, node):
        prefix = self.opts.statsd_prefix.replace("%s", re.sub(r"[.:]", "_", node))
        return prefix if prefix.endswith(".") else prefix + "."

    def target(self, kind, node, topic="", channel="", metric="message_count"):
        """The graphite target of a topic's, a channel's or a node's metric; ``node``
        ``*`` for all nodes (summed)."""
        prefix = self.prefix(node)
        if kind == "topic":
            key = f"{prefix}topic.{sanitize_key(topic)}.{metric}"
        elif kind == "channel":
            key = f"{prefix}topic.{sanitize_key(topic)}.channel.{sanitize_key(channel)}.{metric}"
        elif kind == "counter":
            key = f"{prefix}topic.*.channel.*.{metric}"
        else:
            return self._formatted(metric, f"{prefix}mem.{metric}")
        return f"sumSeries({self._formatted(metric, key)})"

    def _render_url(self, target, large, metric, color):
        interval = f"{int(self.opts.statsd_interval)}sec"
        if large and metric in COUNTERS:
            target = f"scale({target},{1 / self.opts.statsd_interval})"
        query = {"colorList": color, "bgcolor": "ff000000", "yMin": "0",
                 "lineMode": "connected", "drawNullAsZero": "false",
                 "from": "-2h", "until": "-1min",
                 "target": f'summarize({target},"{interval}","avg")'}
        if large:
            query.update(height="450", width="800", fgcolor="999999")
        else:
            query.update(height="20", width="120", hideGrid="true", hideLegend="true",
                         hideAxes="true", fgcolor="black", margin="0")
        base = self.opts.base_path.rstrip("/") if self.opts.proxy_graphite \
            else self.opts.graphite_url.rstrip("/")
        return f"{base}/render?{urlencode(query)}"

    def graphs(self, kind, node, topic="", channel=""):
        """Render URLs for a page: the rate sparkline, the large rate and depth graphs,
        and the target ``/api/graphite`` turns into a rate."""
        rate = self.target(kind, node, topic, channel, "message_count")
        depth = self.target(kind, node, topic, channel, "depth")
        return {
            "sparkline": self._render_url(rate, False, "message_count", "blue"),
            "rate": self._render_url(rate, True, "message_count", "blue"),
            "depth": self._render_url(depth, True, "depth", "red"),
            "rate_target": rate,
        }

    def rate(self, client, target):
        """Messages per second of ``target`` over the last full statsd interval, as
        ``/api/graphite`` reports it (``"N/A"`` when graphite has no value)."""
        interval = int(self.opts.statsd_interval)
        query = urlencode({"from": f"-{interval * 2}sec", "until": f"-{interval}sec",
                           "format": "json", "target": target})
        url = f"{self.opts.graphite_url.rstrip('/')}/render?{query}"
        try:
            status, body, _ = client.request("GET", url)
            if status != 200:
                raise GraphiteError(f"graphite answered {status}")
            value = json_input.loads(body)[0]["datapoints"][0][0]
        except (UpstreamError, ValueError, LookupError, TypeError) as exc:
            raise GraphiteError(str(exc)) from None
        if value is None or value < 0:
            return "N/A"
        return f"{value / interval:.2f}"
