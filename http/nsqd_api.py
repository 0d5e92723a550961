"""nsqd's HTTP API as Falcon resources, with NSQ's paths, parameters, codes and bodies.

``create_app(nsqd)`` builds the WSGI app over a running core. The handlers run as
greenlets in the same hub as the TCP clients; they publish through the topic actors and
read stats straight from the actors' counters.
"""

import base64
import logging
import re

import gevent

from greensq.actors.actor import HandlerFailed, Refused, StoreFailed
from greensq.actors.topic import QueueFull
from greensq.http.nsq_http import (
    NsqHTTPError, bool_param, config_body, create_api, query_params, read_body, required_param,
    respond_json, respond_ping, respond_text, topic_channel_params, topic_param)
from greensq.services.nsqd.metrics import nsqd_metrics
from greensq.services.nsqd.options import NSQD_FLAGSET
from greensq.services.nsqd.stats import format_text, nsqd_stats
from greensq.services.shared import json_input
from greensq.services.shared.batches import LineTooBig, split_lines, split_mpub_body
from greensq.services.shared.logs import LEVELS
from greensq.services.shared.message import MAX_ATTEMPTS_LIMIT
from greensq.services.shared.metrics import content_type
from greensq.services.shared.version import NSQ_VERSION
from greensq.services.shared.wire import FatalClientError

log = logging.getLogger("greensq")

NS = 1_000_000_000
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_LOG_LEVEL_NUMBERS = {"debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5}


class Resource:
    def __init__(self, nsqd):
        self.nsqd = nsqd
        self.opts = nsqd.opts

    def topic_to_publish(self, params):
        """The ``topic`` parameter of a publish, checked (a topic that exists has a valid
        name: publishing to it skips the check)."""
        name = params.get("topic")
        if name is not None and name in self.nsqd.topics:
            return name
        return topic_param(params, "INVALID_TOPIC")

    def publish(self, topic_name, bodies, defer_ms=0):
        """Publish; answered once stored. A full bounded queue is 503 ``QUEUE_FULL``,
        any other failure NSQ's 503 ``EXITING``."""
        try:
            self.nsqd.publish(topic_name, bodies, defer_ms)
        except QueueFull:
            raise NsqHTTPError(503, "QUEUE_FULL") from None
        except (Refused, StoreFailed):
            raise NsqHTTPError(503, "EXITING") from None
        except HandlerFailed:
            raise NsqHTTPError(500, "INTERNAL_ERROR") from None

    def existing_channel(self, params):
        """The channel named by ``topic`` and ``channel``, or NSQ's 404s."""
        topic_name, channel_name = topic_channel_params(params)
        topic = self.nsqd.get_existing_topic(topic_name)
        if topic is None:
            raise NsqHTTPError(404, "TOPIC_NOT_FOUND")
        channel = topic.channels.get(channel_name)
        if channel is None:
            raise NsqHTTPError(404, "CHANNEL_NOT_FOUND")
        return channel


class Ping(Resource):
    def on_get(self, req, resp):
        """``OK``; NSQ's 500 with the health text after a failed disk-queue write."""
        if self.nsqd.health_error is not None:
            raise NsqHTTPError(500, self.nsqd.health)
        respond_ping(resp)


class Info(Resource):
    def on_get(self, req, resp):
        opts, nsqd = self.opts, self.nsqd
        respond_json(resp, {
            "version": NSQ_VERSION,
            "broadcast_address": opts.broadcast_address,
            "hostname": opts.hostname,
            "http_port": nsqd.http_port,
            "tcp_port": nsqd.tcp_port,
            "start_time": nsqd.start_time,
            "max_heartbeat_interval": int(opts.max_heartbeat_interval * NS),
            "max_output_buffer_size": opts.max_output_buffer_size,
            "max_output_buffer_timeout": int(opts.max_output_buffer_timeout * NS),
            "max_deflate_level": opts.max_deflate_level,
        })


class Pub(Resource):
    def on_post(self, req, resp):
        limit = self.opts.max_msg_size
        if (req.content_length or 0) > limit:
            raise NsqHTTPError(413, "MSG_TOO_BIG")
        body = read_body(req, limit)
        if len(body) > limit:
            raise NsqHTTPError(413, "MSG_TOO_BIG")
        if not body:
            raise NsqHTTPError(400, "MSG_EMPTY")
        params = query_params(req)
        topic_name = self.topic_to_publish(params)
        if not self.nsqd.exiting:        # NSQ creates the topic before the other checks
            self.nsqd.get_topic(topic_name)
        defer_ms = 0
        if "defer" in params:
            if not _DECIMAL.fullmatch(params["defer"]):    # Go's ParseInt: no "_", no spaces
                raise NsqHTTPError(400, "INVALID_DEFER")
            defer_ms = int(params["defer"])
            if not 0 <= defer_ms <= self.opts.max_req_timeout * 1000:
                raise NsqHTTPError(400, "INVALID_DEFER")
        self.publish(topic_name, [body], defer_ms)
        respond_text(resp, "OK")


class Mpub(Resource):
    def on_post(self, req, resp):
        limit = self.opts.max_body_size
        if (req.content_length or 0) > limit:
            raise NsqHTTPError(413, "BODY_TOO_BIG")
        body = read_body(req, limit)     # first: a form content type must not eat it
        params = query_params(req)
        topic_name = self.topic_to_publish(params)
        if not self.nsqd.exiting:        # NSQ creates the topic before the other checks
            self.nsqd.get_topic(topic_name)
        if len(body) > limit:
            raise NsqHTTPError(413, "BODY_TOO_BIG")
        # A big batch is checked (and later stored) in slices, the hub visiting the other
        # greenlets in between (services/shared/batches.py).
        binary = params.get("binary")
        if binary is not None and binary not in ("false", "0"):
            try:
                bodies = split_mpub_body(body, self.opts, pause=gevent.sleep)
            except FatalClientError as err:
                raise NsqHTTPError(413, err.code[2:]) from None
        else:
            try:
                bodies = split_lines(body, self.opts.max_msg_size, pause=gevent.sleep)
            except LineTooBig:
                raise NsqHTTPError(413, "MSG_TOO_BIG") from None
        self.publish(topic_name, bodies)
        respond_text(resp, "OK")


class Stats(Resource):
    def on_get(self, req, resp):
        params = query_params(req)
        stats = nsqd_stats(
            self.nsqd, params.get("topic"), params.get("channel"),
            bool_param(params, "include_clients", True), bool_param(params, "include_mem", True))
        if params.get("format") == "json":
            respond_json(resp, stats)
        else:
            respond_text(resp, format_text(stats))


class Metrics(Resource):
    """GET /metrics: Prometheus' text format (services/nsqd/metrics.py)."""

    def on_get(self, req, resp):
        resp.content_type = content_type()
        resp.data = nsqd_metrics(self.nsqd)


class ChannelPeek(Resource):
    """GET /channel/peek?topic=&channel=&n=: up to n queued messages (memory, then disk),
    left where they are; at most --max-body-size bytes of bodies (and at least one)."""

    MAX_N = 1000

    def on_get(self, req, resp):
        params = query_params(req)
        channel = self.existing_channel(params)
        raw = params.get("n", "1")
        if not _DECIMAL.fullmatch(raw) or not 1 <= int(raw) <= self.MAX_N:
            raise NsqHTTPError(400, "INVALID_ARG_N")
        msgs = []
        try:
            channel.ask(channel.on_peek, int(raw), self.opts.max_body_size, msgs)
        except Refused:
            raise NsqHTTPError(404, "CHANNEL_NOT_FOUND") from None
        respond_json(resp, {"messages": [
            {"id": msg.id.decode("latin-1"), "timestamp": msg.timestamp,
             "attempts": msg.attempts, "body": base64.b64encode(msg.body).decode()}
            for msg in msgs]})


class ChannelMaxAttempts(Resource):
    """POST /channel/max_attempts?topic=&channel=&max_attempts=N: the channel's own
    dead-letter limit (0: never), kept in nsqd.dat; an empty value goes back to
    --max-attempts."""

    def on_post(self, req, resp):
        params = query_params(req)
        channel = self.existing_channel(params)
        raw = required_param(params, "max_attempts")
        if raw and (not _DIGITS.fullmatch(raw) or int(raw) > MAX_ATTEMPTS_LIMIT):
            raise NsqHTTPError(400, "INVALID_ARG_MAX_ATTEMPTS")
        try:
            channel.ask(channel.on_set_max_attempts, int(raw) if raw else None)
        except Refused:
            raise NsqHTTPError(404, "CHANNEL_NOT_FOUND") from None
        self.nsqd.persist_metadata()
        resp.status = 200
        resp.data = b""


class TopicAction(Resource):
    """POST /topic/create|delete|empty|pause|unpause?topic=..."""

    def on_post(self, req, resp, action):
        params = query_params(req)
        if action == "create":
            self.nsqd.get_topic(topic_param(params, "INVALID_TOPIC"))
        elif action == "delete":
            if not self.nsqd.delete_topic(required_param(params, "topic")):
                raise NsqHTTPError(404, "TOPIC_NOT_FOUND")
        elif action in ("empty", "pause", "unpause"):
            if action == "empty":       # NSQ validates the name for empty only
                topic_name = topic_param(params, "INVALID_TOPIC")
            else:
                topic_name = required_param(params, "topic")
            topic = self.nsqd.get_existing_topic(topic_name)
            if topic is None:
                raise NsqHTTPError(404, "TOPIC_NOT_FOUND")
            self._act(topic, action)
        else:
            raise NsqHTTPError(404, "NOT_FOUND")
        self._answer(resp, action)

    @staticmethod
    def _act(actor, action):
        """Empty, pause or unpause a topic or channel, and wait until it is done (an
        empty whose disk queue cannot be written is NSQ's 500)."""
        handler = {"empty": actor.on_empty, "pause": actor.on_pause,
                   "unpause": actor.on_unpause}[action]
        try:
            actor.ask(handler)
        except Refused:
            raise NsqHTTPError(404, "CHANNEL_NOT_FOUND" if hasattr(actor, "topic")
                               else "TOPIC_NOT_FOUND") from None
        except StoreFailed:
            raise NsqHTTPError(500, "INTERNAL_ERROR") from None

    def _answer(self, resp, action):
        """200 once the action is done: what it changed in the topics and channels (and
        their pause state) is in nsqd.dat too, so a crash right after cannot undo it."""
        if action != "empty":
            self.nsqd.persist_metadata()
        resp.status = 200
        resp.data = b""


class ChannelAction(TopicAction):
    """POST /channel/create|delete|empty|pause|unpause?topic=...&channel=..."""

    def on_post(self, req, resp, action):
        if action not in ("create", "delete", "empty", "pause", "unpause"):
            raise NsqHTTPError(404, "NOT_FOUND")
        params = query_params(req)
        topic_name, channel_name = topic_channel_params(params)
        topic = self.nsqd.get_existing_topic(topic_name)
        if topic is None:
            raise NsqHTTPError(404, "TOPIC_NOT_FOUND")
        if action == "create":
            topic.get_channel(channel_name)
        elif action == "delete":
            if not topic.delete_channel(channel_name):
                raise NsqHTTPError(404, "CHANNEL_NOT_FOUND")
        else:
            channel = topic.channels.get(channel_name)
            if channel is None:
                raise NsqHTTPError(404, "CHANNEL_NOT_FOUND")
            self._act(channel, action)
        self._answer(resp, action)


class Config(Resource):
    """GET/PUT /config/:opt (settable: nsqlookupd_tcp_addresses, log_level)."""

    def _flag(self, opt):
        for flag in NSQD_FLAGSET.flags.values():
            if flag.key == opt and not flag.deprecated:
                return flag
        raise NsqHTTPError(400, "INVALID_OPTION")

    def _value(self, flag):
        value = getattr(self.opts, flag.dest)
        if flag.kind == "duration":
            return int(value * NS)
        if flag.dest == "log_level":     # Go's lg.LogLevel is an int: debug=1 .. fatal=5
            return _LOG_LEVEL_NUMBERS.get(value, value)
        return value

    def on_get(self, req, resp, opt):
        respond_json(resp, self._value(self._flag(opt)))

    def on_put(self, req, resp, opt):
        body = config_body(req, self.opts.max_msg_size)
        if opt == "nsqlookupd_tcp_addresses":
            try:
                addresses = json_input.loads(body)
            except ValueError:
                addresses = None
            if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
                raise NsqHTTPError(400, "INVALID_VALUE")
            self.nsqd.set_lookupd_addresses(addresses)
        elif opt == "log_level":
            level = body.decode("utf-8", "replace").strip().lower()
            if level not in LEVELS:
                raise NsqHTTPError(400, "INVALID_VALUE")
            self.opts.log_level = level
            logging.getLogger("greensq").setLevel(LEVELS[level])
        else:
            raise NsqHTTPError(400, "INVALID_OPTION")
        respond_json(resp, self._value(self._flag(opt)))


def create_app(nsqd):
    """The nsqd WSGI app over a running core."""
    app = create_api()
    app.add_route("/ping", Ping(nsqd))
    app.add_route("/info", Info(nsqd))
    for path in ("/pub", "/put"):
        app.add_route(path, Pub(nsqd))
    for path in ("/mpub", "/mput"):
        app.add_route(path, Mpub(nsqd))
    app.add_route("/stats", Stats(nsqd))
    app.add_route("/topic/{action}", TopicAction(nsqd))
    app.add_route("/channel/peek", ChannelPeek(nsqd))
    app.add_route("/channel/max_attempts", ChannelMaxAttempts(nsqd))
    app.add_route("/channel/{action}", ChannelAction(nsqd))
    app.add_route("/metrics", Metrics(nsqd))
    app.add_route("/config/{opt}", Config(nsqd))
    return app

