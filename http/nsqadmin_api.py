"""nsqadmin's HTTP surface on Falcon: Go nsqadmin 1.3's JSON API, ``/config``, graphite
rate and proxy, the packaged static assets, the pages (``nsqadmin_pages``) and the live
graph data behind them, all under ``--base-path``.

Requests that change something (POST, PUT, DELETE) must come from the same origin: a
browser sends ``Origin`` (or ``Referer``, and ``Sec-Fetch-Site``) with them, and one that
names another site is refused, so no other page can make an operator's browser act.
Scripts that send none of these headers (curl, existing tooling) are not affected.
Actions are further limited to ``--admin-user`` users when that flag is given.
"""

import base64
import gzip
import hashlib
import mimetypes
import os
from urllib.parse import quote, urlsplit, urlunsplit

from greensq.http.nsq_http import (
    NsqHTTPError, config_body, create_api, query_params, read_body, respond_json, respond_ping)
from greensq.http.nsqadmin_pages import add_pages, is_admin_request
from greensq.services.nsqadmin.graphite import GraphiteError
from greensq.services.nsqadmin.metrics import admin_metrics
from greensq.services.nsqadmin.nsqadmin import ApiError
from greensq.services.shared import json_input
from greensq.services.shared.cluster_http import UpstreamError
from greensq.services.shared.cluster_stats import join_host_port
from greensq.services.shared.json_input import kind_name
from greensq.services.shared.metrics import content_type

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsqadmin_assets")
STATIC = os.path.join(ASSETS, "static")
MAX_BODY = 1024 * 1024
COMPRESSIBLE = ("text/", "application/json", "application/javascript", "image/svg+xml")
UNSAFE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


# -- request helpers ---------------------------------------------------------------------

def request_hosts(req):
    """The names this request was sent to: its Host, and a proxy's X-Forwarded-Host."""
    return {req.get_header("Host"), req.get_header("X-Forwarded-Host")} - {None}


def basic_auth_user(req):
    scheme, _, encoded = (req.get_header("Authorization") or "").partition(" ")
    if scheme != "Basic":
        return ""
    try:
        user, sep, _ = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return ""
    return user if sep else ""


def actor(req):
    """What an admin-action notification says about the request (Go's fields)."""
    secure = req.scheme == "https" or req.get_header("X-Scheme") == "https"
    url = f"{'https' if secure else 'http'}://{req.get_header('Host') or ''}{quote(req.path)}"
    if req.query_string:
        url += "?" + req.query_string
    port = req.env.get("REMOTE_PORT")
    return {"user": basic_auth_user(req),
            "remote_ip": join_host_port(req.remote_addr, port) if port else req.remote_addr,
            "user_agent": req.user_agent or "",
            "url": url}


def _go_decode(text, fields):
    """``(document, None)`` or ``(None, Go's error text)`` for a JSON object of string
    ``fields``, as Go's ``json.Decoder`` reads it into a struct."""
    if not text:
        return None, "EOF"
    try:
        doc = json_input.loads(text)
    except ValueError:
        return None, f"invalid character {text[0]!r} looking for beginning of value"
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        return None, f"json: cannot unmarshal {kind_name(doc)} into Go value of type struct"
    for name in fields:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            return None, (f"json: cannot unmarshal {kind_name(value)} into Go struct field "
                          f".{name} of type string")
    return {name: doc.get(name) or "" for name in fields}, None


def json_body(req, fields, invalid=None):
    """The request's JSON body (see ``_go_decode``); a 400 with Go's error text, or with
    ``invalid`` for every decoding error when given."""
    text = read_body(req, MAX_BODY)[:MAX_BODY].decode("utf-8", "replace").strip()
    doc, error = _go_decode(text, fields)
    if error is not None:
        raise NsqHTTPError(400, invalid or error)
    return doc


# -- middleware --------------------------------------------------------------------------

class SameOrigin:
    """Refuse state-changing requests that a browser says come from another site."""

    def process_request(self, req, resp):
        if req.method not in UNSAFE_METHODS:
            return
        if req.get_header("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise NsqHTTPError(403, "FORBIDDEN")
        source = req.get_header("Origin") or req.get_header("Referer")
        if source is None:
            return
        if source == "null" or urlsplit(source).netloc not in request_hosts(req):
            raise NsqHTTPError(403, "FORBIDDEN")


class Compress:
    """gzip for clients that accept it (Go's nsqadmin compresses too)."""

    def process_response(self, req, resp, resource, req_succeeded):
        data = resp.data
        if (not data or len(data) < 1024 or resp.get_header("Content-Encoding")
                or "gzip" not in (req.get_header("Accept-Encoding") or "")
                or not (resp.content_type or "").startswith(COMPRESSIBLE)):
            return
        resp.data = gzip.compress(data, 6)
        resp.set_header("Content-Encoding", "gzip")
        resp.append_header("Vary", "Accept-Encoding")


class SecurityHeaders:
    """No framing (clickjacking of the action buttons), no inline script or style, no
    content sniffing."""

    def __init__(self, graphite_url):
        origin = ""
        if graphite_url:
            parts = urlsplit(graphite_url)
            origin = f" {parts.scheme}://{parts.netloc}"
        self.policy = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                       f"img-src 'self' data:{origin}; connect-src 'self'; "
                       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

    def process_response(self, req, resp, resource, req_succeeded):
        if (resp.content_type or "").startswith("text/html"):
            resp.set_header("Content-Security-Policy", self.policy)
            resp.set_header("X-Frame-Options", "DENY")
            resp.set_header("Referrer-Policy", "same-origin")
        resp.set_header("X-Content-Type-Options", "nosniff")


# -- resources ---------------------------------------------------------------------------

class Resource:
    def __init__(self, admin):
        self.admin = admin

    def require_admin(self, req):
        if not is_admin_request(self.admin, req):
            raise NsqHTTPError(403, "FORBIDDEN")


def api_call(call, *args, **kwargs):
    """Run a core operation; its ApiError becomes NSQ's error response."""
    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        raise NsqHTTPError(exc.status, exc.message) from None


class Ping(Resource):
    def on_get(self, req, resp):
        respond_ping(resp)


class Metrics(Resource):
    """GET /metrics: Prometheus' text format, the cluster as last polled."""

    def on_get(self, req, resp):
        resp.content_type = content_type()
        resp.data = admin_metrics(self.admin)


class Topics(Resource):
    def on_get(self, req, resp):
        inactive = query_params(req).get("inactive") == "true"
        respond_json(resp, api_call(self.admin.topics, inactive)[0])

    def on_post(self, req, resp):
        self.require_admin(req)
        body = json_body(req, ("topic", "channel"))
        respond_json(resp, api_call(self.admin.create, body["topic"], body["channel"],
                                    actor(req))[0])


class Topic(Resource):
    def on_get(self, req, resp, topic):
        respond_json(resp, api_call(self.admin.topic, topic)[0])

    def on_post(self, req, resp, topic, channel=""):
        self.require_admin(req)
        action = json_body(req, ("action",))["action"]
        respond_json(resp, api_call(self.admin.act, action, topic, channel, actor(req))[0])

    def on_delete(self, req, resp, topic, channel=""):
        self.require_admin(req)
        respond_json(resp, api_call(self.admin.delete, topic, channel, actor(req))[0])


class Channel(Topic):
    def on_get(self, req, resp, topic, channel):
        respond_json(resp, api_call(self.admin.channel, topic, channel)[0])


class Nodes(Resource):
    def on_get(self, req, resp):
        respond_json(resp, api_call(self.admin.nodes)[0])


class Node(Resource):
    def on_get(self, req, resp, node):
        respond_json(resp, api_call(self.admin.node, node)[0])

    def on_delete(self, req, resp, node):
        self.require_admin(req)
        topic = json_body(req, ("topic",), invalid="INVALID_BODY")["topic"]
        respond_json(resp, api_call(self.admin.tombstone, topic, node, actor(req))[0])


class Counter(Resource):
    def on_get(self, req, resp):
        respond_json(resp, api_call(self.admin.counter)[0])


class Graphs(Resource):
    """The live graph series of one page (greensq's own; Go draws from graphite):
    ``/api/graphs`` + the page's path, ``?points=N`` for the last N steps only."""

    def _respond(self, req, resp, **scope):
        points = query_params(req).get("points", "")
        points = int(points) if points.isdigit() and int(points) > 0 else None
        respond_json(resp, self.admin.graphs(points=points, **scope))

    def on_get(self, req, resp):
        self._respond(req, resp)

    def on_get_topic(self, req, resp, name):
        self._respond(req, resp, topic=name)

    def on_get_channel(self, req, resp, name, channel):
        self._respond(req, resp, topic=name, channel=channel)

    def on_get_nodes(self, req, resp):
        self._respond(req, resp, node="*")

    def on_get_node(self, req, resp, name):
        self._respond(req, resp, node=name)


class GraphiteRate(Resource):
    """``/api/graphite?metric=rate&target=...``: ``{"rate": "12.34"}``."""

    def on_get(self, req, resp):
        params = query_params(req)
        if params.get("metric") != "rate":
            raise NsqHTTPError(400, "INVALID_ARG_METRIC")
        if "target" not in params:
            raise NsqHTTPError(400, "INVALID_ARG_TARGET")
        try:
            rate = self.admin.graphite.rate(self.admin.client, params["target"])
        except GraphiteError:
            raise NsqHTTPError(500, "INTERNAL_ERROR") from None
        respond_json(resp, {"rate": rate})


class GraphiteProxy(Resource):
    """``/render`` passed on to ``--graphite-url`` (``--proxy-graphite``)."""

    def on_get(self, req, resp):
        parts = urlsplit(self.admin.opts.graphite_url.rstrip("/"))
        headers = {}
        netloc = parts.netloc
        if parts.username is not None:
            credentials = f"{parts.username}:{parts.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
            netloc = netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path + "/render", req.query_string, ""))
        try:
            status, body, content_type = self.admin.client.request("GET", url, headers=headers)
        except UpstreamError:
            raise NsqHTTPError(502, "BAD_GATEWAY") from None
        resp.status = status
        resp.content_type = content_type or "application/octet-stream"
        resp.data = body


class Config(Resource):
    def on_get(self, req, resp, opt):
        self._check(req)
        respond_json(resp, api_call(self.admin.config_value, opt))

    def on_put(self, req, resp, opt):
        self._check(req)
        body = config_body(req, MAX_BODY)
        if opt == "nsqlookupd_http_addresses":
            try:
                value = json_input.loads(body)
            except ValueError:
                raise NsqHTTPError(400, "INVALID_VALUE") from None
        else:
            value = body.decode("utf-8", "replace")
        respond_json(resp, api_call(self.admin.set_config, opt, value))

    def _check(self, req):
        if not api_call(self.admin.config_allowed, req.remote_addr):
            raise NsqHTTPError(403, "FORBIDDEN")


class Static:
    """The packaged assets (or ``--dev-static-dir``), gzipped once, cached by clients
    for good when asked for by content hash (``?v=``)."""

    def __init__(self, directory):
        self.directory = directory
        self.cache = {}

    def load(self, name):
        if name not in self.cache:
            path = os.path.join(self.directory, name)
            if os.sep in name or name.startswith(".") or not os.path.isfile(path):
                return None
            with open(path, "rb") as fh:
                data = fh.read()
            self.cache[name] = (data, gzip.compress(data, 9),
                                hashlib.sha1(data).hexdigest()[:12])
        return self.cache[name]

    def url(self, base, name):
        asset = self.load(name)
        return f"{base}/static/{name}?v={asset[2]}" if asset else f"{base}/static/{name}"

    def on_get(self, req, resp, asset):
        found = self.load(asset)
        if found is None:
            raise NsqHTTPError(404, "NOT_FOUND")
        data, compressed, version = found
        resp.content_type = mimetypes.guess_type(asset)[0] or "application/octet-stream"
        if query_params(req).get("v") == version:
            resp.cache_control = ["public", "max-age=31536000", "immutable"]
        else:
            resp.cache_control = ["no-cache"]
        if "gzip" in (req.get_header("Accept-Encoding") or "") and len(compressed) < len(data):
            resp.set_header("Content-Encoding", "gzip")
            resp.append_header("Vary", "Accept-Encoding")
            data = compressed
        resp.data = data


def create_app(admin):
    """The nsqadmin WSGI app over a core (``services.nsqadmin.NSQAdmin``)."""
    opts = admin.opts
    base = opts.base_path.rstrip("/")
    app = create_api()
    app.add_middleware([SameOrigin(), SecurityHeaders(opts.graphite_url), Compress()])
    static = Static(opts.dev_static_dir or STATIC)

    def route(path, resource, **kwargs):
        app.add_route(base + path, resource, **kwargs)

    route("/ping", Ping(admin))
    route("/metrics", Metrics(admin))
    route("/static/{asset}", static)
    route("/api/topics", Topics(admin))
    route("/api/topics/{topic}", Topic(admin))
    route("/api/topics/{topic}/{channel}", Channel(admin))
    route("/api/nodes", Nodes(admin))
    route("/api/nodes/{node}", Node(admin))
    route("/api/counter", Counter(admin))
    route("/api/graphite", GraphiteRate(admin))
    graphs = Graphs(admin)
    route("/api/graphs/topics", graphs)
    route("/api/graphs/topics/{name}", graphs, suffix="topic")
    route("/api/graphs/topics/{name}/{channel}", graphs, suffix="channel")
    route("/api/graphs/nodes", graphs, suffix="nodes")
    route("/api/graphs/nodes/{name}", graphs, suffix="node")
    route("/config/{opt}", Config(admin))
    if opts.proxy_graphite:
        route("/render", GraphiteProxy(admin))
    add_pages(app, admin, base, static)
    return app

