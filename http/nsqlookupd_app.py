"""nsqlookupd's HTTP API as Falcon resources, with NSQ 1.3's paths, codes and bodies.

``create_app(lookupd)`` builds the WSGI app over the daemon's core. Discovery endpoints are
GET, administrative ones POST; responses are bare JSON with ``{"message": ...}`` errors.
"""

from greensq.http.nsq_http import (
    NsqHTTPError, create_api, query_params, respond_json, respond_ping)
from greensq.services.nsqlookupd.metrics import lookupd_metrics
from greensq.services.shared.metrics import content_type
from greensq.services.shared.names import is_valid_name
from greensq.services.shared.version import NSQ_VERSION


def _required(params, name, missing):
    if name not in params:
        raise NsqHTTPError(400, missing)
    return params[name]


def _topic_channel(params):
    topic = _required(params, "topic", "MISSING_ARG_TOPIC")
    if not is_valid_name(topic):
        raise NsqHTTPError(400, "INVALID_ARG_TOPIC")
    channel = _required(params, "channel", "MISSING_ARG_CHANNEL")
    if not is_valid_name(channel):
        raise NsqHTTPError(400, "INVALID_ARG_CHANNEL")
    return topic, channel


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
        topic = _required(query_params(req), "topic", "MISSING_ARG_TOPIC")
        result = self.lookupd.lookup(topic)
        if result is None:
            raise NsqHTTPError(404, "TOPIC_NOT_FOUND")
        respond_json(resp, result)


class Topics(Resource):
    def on_get(self, req, resp):
        respond_json(resp, {"topics": self.lookupd.topics()})


class Channels(Resource):
    def on_get(self, req, resp):
        topic = _required(query_params(req), "topic", "MISSING_ARG_TOPIC")
        respond_json(resp, {"channels": self.lookupd.channels(topic)})


class Nodes(Resource):
    def on_get(self, req, resp):
        respond_json(resp, self.lookupd.nodes())


class TopicAction(Resource):
    """POST /topic/create|delete|tombstone?topic=..."""

    def on_post(self, req, resp, action):
        params = query_params(req)
        if action == "create":
            topic = _required(params, "topic", "MISSING_ARG_TOPIC")
            if not is_valid_name(topic):
                raise NsqHTTPError(400, "INVALID_ARG_TOPIC")
            self.lookupd.create_topic(topic)
        elif action == "delete":
            self.lookupd.delete_topic(_required(params, "topic", "MISSING_ARG_TOPIC"))
        elif action == "tombstone":
            topic = _required(params, "topic", "MISSING_ARG_TOPIC")
            node = _required(params, "node", "MISSING_ARG_NODE")
            self.lookupd.tombstone(topic, node)
        else:
            raise NsqHTTPError(404, "NOT_FOUND")
        _empty(resp)


class ChannelAction(Resource):
    """POST /channel/create|delete?topic=...&channel=..."""

    def on_post(self, req, resp, action):
        if action not in ("create", "delete"):
            raise NsqHTTPError(404, "NOT_FOUND")
        topic, channel = _topic_channel(query_params(req))
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
