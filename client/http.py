"""Small HTTP clients for nsqd's and nsqlookupd's HTTP APIs.

Requests go through the standard library's :mod:`http.client` on a gevent socket, so
they yield to other greenlets instead of blocking the hub, without monkey-patching and
without another dependency. JSON answers come back parsed (:mod:`.http_answers`);
nsqlookupd's node entries become :class:`Node` objects. A non-2xx answer raises
:class:`HTTPError` carrying NSQ's ``{"message": ...}`` text (e.g. ``TOPIC_NOT_FOUND``).
"""

import http.client
import json
import struct
import urllib.parse

from gevent import socket

from .connection import connect_unix
from .http_answers import HTTPError, Lookup, Node, checked
from .protocol import format_address, parse_address

__all__ = ["HTTPError", "Lookup", "LookupdHTTPClient", "Node", "NsqdHTTPClient", "request"]


class _GeventHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is gevent's, so requests yield to the hub."""

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), self.timeout)


class _GeventUnixHTTPConnection(http.client.HTTPConnection):
    """The same over a Unix socket (``Host: localhost`` unless the request says)."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = connect_unix(self.path, self.timeout)


def http_connection(address, timeout=5.0):
    """An ``http.client`` connection on gevent's sockets to ``address``: ``host:port``,
    or a Unix socket's path."""
    host, port = parse_address(address)
    if port is None:
        return _GeventUnixHTTPConnection(host, timeout)
    return _GeventHTTPConnection(host, port, timeout=timeout)


def request(address, method, path, params=None, body=None, timeout=5.0):
    """``(status, body bytes)`` of one HTTP request to ``address`` (``host:port``, or a
    Unix socket's path)."""
    if params:
        path = f"{path}?{urllib.parse.urlencode(params)}"
    conn = http_connection(address, timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class _Client:
    def __init__(self, address, timeout=5.0):
        self.address = format_address(address)
        self.timeout = timeout

    def _call(self, method, path, params=None, body=None):
        return checked(*request(self.address, method, path, params, body, self.timeout))

    def _json(self, method, path, params=None, body=None):
        data = self._call(method, path, params, body)
        return json.loads(data) if data else None

    def ping(self):
        """True if the daemon answers ``/ping`` with 200."""
        try:
            self._call("GET", "/ping")
        except (HTTPError, OSError):
            return False
        return True

    def info(self):
        """``/info`` as a dict (version, ports, ...)."""
        return self._json("GET", "/info")


class NsqdHTTPClient(_Client):
    """nsqd's HTTP API: publish, stats, topic and channel administration."""

    def pub(self, topic, body, defer_ms=None):
        params = {"topic": topic}
        if defer_ms is not None:
            params["defer"] = int(defer_ms)
        return self._call("POST", "/pub", params, body)

    def mpub(self, topic, bodies, binary=True):
        """Publish several messages at once (binary framing unless ``binary=False``,
        which sends newline-separated text, so bodies must not contain newlines)."""
        if binary:
            payload = struct.pack(">i", len(bodies)) + b"".join(
                struct.pack(">i", len(b)) + b for b in bodies)
            return self._call("POST", "/mpub", {"topic": topic, "binary": "true"}, payload)
        return self._call("POST", "/mpub", {"topic": topic}, b"\n".join(bodies))

    def stats(self, topic=None, channel=None, include_clients=True):
        """``/stats?format=json`` as a dict."""
        params = {"format": "json"}
        if topic is not None:
            params["topic"] = topic
        if channel is not None:
            params["channel"] = channel
        if not include_clients:
            params["include_clients"] = "false"
        return self._json("GET", "/stats", params)

    def _topic(self, action, topic):
        self._call("POST", f"/topic/{action}", {"topic": topic})

    def _channel(self, action, topic, channel):
        self._call("POST", f"/channel/{action}", {"topic": topic, "channel": channel})

    def create_topic(self, topic):
        self._topic("create", topic)

    def delete_topic(self, topic):
        self._topic("delete", topic)

    def empty_topic(self, topic):
        self._topic("empty", topic)

    def pause_topic(self, topic):
        self._topic("pause", topic)

    def unpause_topic(self, topic):
        self._topic("unpause", topic)

    def create_channel(self, topic, channel):
        self._channel("create", topic, channel)

    def delete_channel(self, topic, channel):
        self._channel("delete", topic, channel)

    def empty_channel(self, topic, channel):
        self._channel("empty", topic, channel)

    def pause_channel(self, topic, channel):
        self._channel("pause", topic, channel)

    def unpause_channel(self, topic, channel):
        self._channel("unpause", topic, channel)


class LookupdHTTPClient(_Client):
    """nsqlookupd's HTTP API: where topics live."""

    def lookup(self, topic):
        """The :class:`Lookup` for ``topic``; raises HTTPError (404 TOPIC_NOT_FOUND) when
        no nsqd has it."""
        return Lookup.from_json(self._json("GET", "/lookup", {"topic": topic}))

    def topics(self):
        return list((self._json("GET", "/topics") or {}).get("topics") or [])

    def channels(self, topic):
        return list((self._json("GET", "/channels", {"topic": topic}) or {}).get(
            "channels") or [])

    def nodes(self):
        return [Node.from_json(p)
                for p in (self._json("GET", "/nodes") or {}).get("producers") or []]
