"""nsqadmin's pages: server-rendered HTML from Jinja2 templates packaged with greensq.

Every value is escaped by the templates (autoescape), so a topic, channel, client id or
user agent that holds markup is shown as text. Pages carry their numbers in the HTML and
load one small script that draws the live graphs (inline SVG), counts the counter page up
and performs actions after a confirmation, through the JSON API.
"""

import os
import time
from typing import NamedTuple
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape

from greensq.services.nsqadmin.nsqadmin import POLL_INTERVAL, ApiError
from greensq.services.shared.cluster_stats import http_address, items
from greensq.services.shared.govalues import format_duration
from greensq.services.shared.version import NSQ_VERSION, __version__

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsqadmin_assets",
                         "templates")
SPARK_POINTS = 60


def commafy(number):
    return f"{number or 0:,}"


def human_duration(seconds):
    """Whole seconds as ``1h2m3s`` (no fractions: pages show ages, not timings)."""
    return format_duration(max(0, int(seconds)))


def nanoseconds(value):
    """Nanoseconds (Go's durations in the API) as ``1h2m3s`` or ``12.5ms``."""
    return format_duration(max(0, value or 0) / 1_000_000_000)


def lookupd_connection(remote_address):
    """``(nsqlookupd, the nsqd's address as it sees it)`` from one of a producer's
    ``remote_addresses`` (``lookupd/remote``)."""
    lookupd, _, remote = remote_address.partition("/")
    return lookupd, remote or "N/A"


def make_environment():
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(commafy=commafy, nanoseconds=nanoseconds, duration=human_duration,
                       lookupd_connection=lookupd_connection)
    return env


class Line(NamedTuple):
    """One line of a chart: a column (``kind``) of a graph series, and its legend."""

    series: str
    kind: str
    label: str


def topic_lines(topic, channel_names):
    """A topic's charts: messages in and each channel's finished; the topic's depth and
    each channel's, so a channel that falls behind stands out."""
    channels = [(f"channel/{topic}/{name}", name) for name in channel_names]
    rates = [Line(f"topic/{topic}", "rate", "in")] + [
        Line(series, "finish", f"{name} finished") for series, name in channels]
    depths = [Line(f"topic/{topic}", "depth", "topic")] + [
        Line(series, "depth", name) for series, name in channels]
    return rates, depths


def channel_lines(topic, channel):
    series = f"channel/{topic}/{channel}"
    rates = [Line(series, kind, label) for kind, label in (
        ("rate", "in"), ("finish", "finished"), ("requeue", "requeued"),
        ("timeout", "timed out"))]
    return rates, [Line(series, "depth", "depth")]


def node_lines(node):
    series = f"node/{node}"
    return [Line(series, "rate", "in")], [Line(series, "depth", "depth")]


def is_admin_request(admin, req):
    """True if the user named by ``--acl-http-header`` may act (see NSQAdmin.is_admin)."""
    return admin.is_admin(req.get_header(admin.opts.acl_http_header) or "")


class Pages:
    """Renders a template with what every page needs (base path, admin or not, ...)."""

    def __init__(self, admin, base, static):
        self.admin = admin
        self.base = base
        self.static = static
        self.env = make_environment()

    def render(self, req, resp, template, graphs=None, status=200, section="", **context):
        opts = self.admin.opts
        context.update(
            base=self.base,
            asset=lambda name: self.static.url(self.base, name),
            version=NSQ_VERSION,
            greensq_version=__version__,
            is_admin=is_admin_request(self.admin, req),
            has_lookupd=bool(opts.lookupd_http_address),
            graphite=self.admin.graphite if self.admin.graphite.enabled else None,
            graphs_url=f"{self.base}/api/graphs{graphs}" if graphs is not None else "",
            spark_points=SPARK_POINTS,
            spark_span=human_duration(SPARK_POINTS * POLL_INTERVAL),
            section=section,
        )
        context.setdefault("warnings", [])
        resp.status = status
        resp.content_type = "text/html; charset=utf-8"
        resp.data = self.env.get_template(template).render(**context).encode()

    def render_error(self, req, resp, exc, title, section):
        self.render(req, resp, "error.html", status=exc.status, title=title, error=exc.message,
                    section=section)


class Page:
    """A page: ``show`` renders it; an ApiError renders the error page instead."""

    section = "Topics"

    def __init__(self, pages):
        self.pages = pages
        self.admin = pages.admin

    def on_get(self, req, resp, **params):
        try:
            self.show(req, resp, **params)
        except ApiError as exc:
            self.pages.render_error(req, resp, exc, self.title(**params), self.section)

    def render(self, req, resp, template, **context):
        self.pages.render(req, resp, template, section=self.section, **context)

    def title(self, **params):
        return self.section


def _path(*segments):
    """URL path segments, each quoted whole (``#`` of ephemeral names included)."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


class TopicsPage(Page):
    def show(self, req, resp):
        topics, warnings = self.admin.topics_overview()
        self.render(req, resp, "topics.html", graphs=f"/topics?points={SPARK_POINTS}",
                    title=self.section, topics=topics, warnings=warnings.errors())


class TopicPage(Page):
    def title(self, topic):
        return topic

    def show(self, req, resp, topic):
        doc, warnings = self.admin.topic(topic)
        channels = sorted(items(doc["channels"]), key=lambda c: c["channel_name"])
        rate_lines, depth_lines = topic_lines(topic, [c["channel_name"] for c in channels])
        self.render(req, resp, "topic.html", graphs=_path("topics", topic), title=topic,
                    topic=doc, channels=channels, rate_lines=rate_lines,
                    depth_lines=depth_lines, warnings=warnings.errors())


class ChannelPage(Page):
    def title(self, topic, channel):
        return f"{topic} / {channel}"

    def show(self, req, resp, topic, channel):
        doc, warnings = self.admin.channel(topic, channel)
        rate_lines, depth_lines = channel_lines(topic, channel)
        self.render(req, resp, "channel.html", graphs=_path("topics", topic, channel),
                    title=self.title(topic, channel), topic_name=topic, channel_name=channel,
                    channel=doc, rate_lines=rate_lines, depth_lines=depth_lines,
                    warnings=warnings.errors())


class NodesPage(Page):
    section = "Nodes"

    def show(self, req, resp):
        doc, warnings = self.admin.nodes()
        self.render(req, resp, "nodes.html", graphs=f"/nodes?points={SPARK_POINTS}",
                    title=self.section, nodes=doc["nodes"] or [], http_address=http_address,
                    lookupd_count=len(self.admin.opts.lookupd_http_address),
                    warnings=warnings.errors())


class NodePage(Page):
    section = "Nodes"

    def title(self, node):
        return node

    def show(self, req, resp, node):
        doc, warnings, producer, meta = self.admin.node(node)
        start_time = meta.get("start_time")
        uptime = time.time() - start_time if isinstance(start_time, (int, float)) else None
        rate_lines, depth_lines = node_lines(node)
        self.render(req, resp, "node.html", graphs=_path("nodes", node), title=node, node=doc,
                    producer=producer, uptime=uptime, now=time.time(), rate_lines=rate_lines,
                    depth_lines=depth_lines, warnings=warnings.errors())


class CounterPage(Page):
    section = "Counter"

    def show(self, req, resp):
        try:
            doc, warnings = self.admin.counter()
        except ApiError as exc:
            total, errors = 0, [exc.message]
        else:
            total = sum(entry["message_count"] for entry in doc["stats"].values())
            errors = warnings.errors()
        self.render(req, resp, "counter.html", title=self.section, total=total, warnings=errors)


class LookupPage(Page):
    section = "Lookup"

    def show(self, req, resp):
        topics, warnings = [], []
        if self.admin.opts.lookupd_http_address:
            doc, found = self.admin.topics()
            warnings = found.errors()
            lookups = self.admin.lookups(doc["topics"] or [])
            topics = [(name, lookups[name]) for name in doc["topics"] or []]
        self.render(req, resp, "lookup.html", title=self.section, topics=topics,
                    lookupds=self.admin.opts.lookupd_http_address, warnings=warnings)


def add_pages(app, admin, base, static):
    pages = Pages(admin, base, static)
    topics = TopicsPage(pages)
    app.add_route(base or "/", topics)
    app.add_route(base + "/topics", topics)
    app.add_route(base + "/topics/{topic}", TopicPage(pages))
    app.add_route(base + "/topics/{topic}/{channel}", ChannelPage(pages))
    app.add_route(base + "/nodes", NodesPage(pages))
    app.add_route(base + "/nodes/{node}", NodePage(pages))
    app.add_route(base + "/counter", CounterPage(pages))
    app.add_route(base + "/lookup", LookupPage(pages))
