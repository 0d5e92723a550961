"""nsqlookupd's HTTP API as Falcon resources, with NSQ 1.3's paths, codes and bodies.

``create_app(lookupd)`` builds the WSGI app over the daemon's core. Discovery endpoints are
GET, administrative ones POST; responses are bare JSON with ``{"message": ...}`` errors.
"""

from greensq.http.nsq_http import (
    NsqHTTPError, create_api, query_params, required_param, respond_json, respond_ping,
    topic_channel_params, topic_param)
from greensq.services.nsqlookupd.metrics import lookupd_metrics
from greensq.services.shared.metrics import content_type
from greensq.services.shared.version import NSQ_VERSION


def _empty(resp):
    resp.status = 200
    resp.data = b""


class Resource:
    def __init__(self, lookupd):
        self.lookupd = lookupd


class Ping(Resource):
    def on_get(self, req, resp):
        respond_ping(resp)


class Info(Resource):
    def on_get(self, req, resp):
        respond_json(resp, {"version": NSQ_VERSION})


class Debug(Resource):
    def on_get(self, req, resp):
        respond_json(resp, self.lookupd.debug())


class Lookup(Resource):
    def on_get(self, req, resp):
        topic = required_param(query_params(req), "topic")
        result = self.lookupd.lookup(topic)
        if result is None:
            raise NsqHTTPError(404, "TOPIC_NOT_FOUND")
        respond_json(resp, result)


class Topics(Resource):
    def on_get(self, req, resp):
        respond_json(resp, {"topics": self.lookupd.topics()})


class Channels(Resource):
    def on_get(self, req, resp):
        topic = required_param(query_params(req), "topic")
        respond_json(resp, {"channels": self.lookupd.channels(topic)})


class Nodes(Resource):
    def on_get(self, req, resp):
        respond_json(resp, self.lookupd.nodes())


class TopicAction(Resource):
    """POST /topic/create|delete|tombstone?topic=..."""

    def on_post(self, req, resp, action):
        params = query_params(req)
        if action == "create":
            self.lookupd.create_topic(topic_param(params))
        elif action == "delete":
            self.lookupd.delete_topic(required_param(params, "topic"))
        elif action == "tombstone":
            topic = required_param(params, "topic")
            node = required_param(params, "node")
            self.lookupd.tombstone(topic, node)
        else:
            raise NsqHTTPError(404, "NOT_FOUND")
        _empty(resp)


class ChannelAction(Resource):
    """POST /channel/create|delete?topic=...&channel=..."""

    def on_post(self, req, resp, action):
        if action not in ("create", "delete"):
            raise NsqHTTPError(404, "NOT_FOUND")
        topic, channel = topic_channel_params(query_params(req))
        if action == "create":
            self.lookupd.create_channel(topic, channel)
        elif not self.lookupd.delete_channel(topic, channel):
            raise NsqHTTPError(404, "CHANNEL_NOT_FOUND")
        _empty(resp)


class Metrics(Resource):
    """GET /metrics: Prometheus' text format (services/nsqlookupd/metrics.py)."""

    def on_get(self, req, resp):
        resp.content_type = content_type()
        resp.data = lookupd_metrics(self.lookupd)


def create_app(lookupd):
    """The nsqlookupd WSGI app over a running core."""
    app = create_api()
    app.add_route("/ping", Ping(lookupd))
    app.add_route("/info", Info(lookupd))
    app.add_route("/debug", Debug(lookupd))
    app.add_route("/lookup", Lookup(lookupd))
    app.add_route("/topics", Topics(lookupd))
    app.add_route("/channels", Channels(lookupd))
    app.add_route("/nodes", Nodes(lookupd))
    app.add_route("/metrics", Metrics(lookupd))
    app.add_route("/topic/{action}", TopicAction(lookupd))
    app.add_route("/channel/{action}", ChannelAction(lookupd))
    return app
