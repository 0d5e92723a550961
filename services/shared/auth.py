"""nsqd's side of NSQ's auth protocol: asking an auth server about a client's secret, and
the permissions it grants.

When nsqd runs with ``--auth-http-address``, a client sends ``AUTH`` with a secret after
IDENTIFY. nsqd asks an auth server ``GET /auth?common_name=..&remote_ip=..&secret=..&tls=..``
(or the full URL it was given, plus that query) and gets back JSON::

    {"ttl": 3600, "identity": "...", "identity_url": "...",
     "authorizations": [{"topic": "regex", "channels": ["regex"],
                         "permissions": ["subscribe", "publish"]}]}

The answer holds for ``ttl`` seconds; the first permission check after that asks again
with the same secret. Topic and channel patterns are unanchored regular expressions (a
match anywhere in the name counts, as Go's ``MatchString``). A publish is checked with the
channel ``""``, so a grant needs a channel pattern that matches the empty string (``.*``)
to allow publishing.

Queries go through the stdlib's HTTP client: in the nsqd worker gevent has patched the
socket module, so a slow auth server only holds up the session that asked.
"""

import http.client
import json
import random
import re
import time
import urllib.parse

import gevent

from greensq.services.shared import json_input
from greensq.services.shared.json_input import decodes_as, kind_name

PERMISSIONS = ("subscribe", "publish")
MAX_RESPONSE = 16 * 1024 * 1024   # bytes of an auth server's answer nsqd reads


class AuthError(Exception):
    """The auth servers could not be asked, or gave an unusable answer. The text is for
    nsqd's log only: clients get ``E_AUTH_FAILED AUTH failed``."""


class Authorization:
    """One grant: a topic pattern, channel patterns and the permissions on them."""

    __slots__ = ("topic", "channels", "permissions", "_topic_re", "_channel_res")

    def __init__(self, topic, channels, permissions):
        self.topic, self.channels, self.permissions = topic, channels, permissions
        self._topic_re = _compile(topic, "topic")
        self._channel_res = [_compile(channel, "channel") for channel in channels]

    def is_allowed(self, topic, channel=""):
        """Publishing (``channel == ""``) needs "publish", subscribing "subscribe"; then the
        topic pattern must match and so must one of the channel patterns."""
        if ("subscribe" if channel else "publish") not in self.permissions:
            return False
        if self._topic_re.search(topic) is None:
            return False
        return any(regex.search(channel) is not None for regex in self._channel_res)


class AuthState:
    """An auth server's answer for one secret, valid until ``expires`` (monotonic)."""

    def __init__(self, ttl, identity, identity_url, authorizations, now=None):
        self.ttl = ttl
        self.identity = identity
        self.identity_url = identity_url
        self.authorizations = authorizations
        self.expires = (time.monotonic() if now is None else now) + ttl

    def is_expired(self, now=None):
        return (time.monotonic() if now is None else now) >= self.expires

    def is_allowed(self, topic, channel=""):
        return any(grant.is_allowed(topic, channel) for grant in self.authorizations)


def _compile(pattern, what):
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as err:   # e.g. a{9999999999}, ((((...
        raise AuthError(f"unable to compile {what} {json.dumps(pattern)} {err}") from None


def _fields(data):
    """Go's JSON decoding into a struct: keys match case-insensitively, a later one wins."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AuthError(f"cannot unmarshal {type(data).__name__} into auth state")
    return {key.lower(): value for key, value in data.items()}


def _typed(fields, key, kind, default):
    value = fields.get(key)
    if value is None:
        return default
    if not decodes_as(value, kind):
        raise AuthError(f"cannot unmarshal {kind_name(value)} into field {key}")
    return value


def _strings(fields, key):
    values = _typed(fields, key, list, [])
    for value in values:
        if not isinstance(value, str):
            raise AuthError(f"cannot unmarshal {kind_name(value)} into field {key}")
    return values


def parse_auth_response(body, now=None):
    """An :class:`AuthState` from an auth server's 200 body, validated as nsqd does:
    known permissions only, patterns that compile, a ttl above 0."""
    try:
        data = json_input.loads(body)
    except ValueError as err:
        raise AuthError(f"invalid JSON response - {err}") from None
    fields = _fields(data)
    ttl = _typed(fields, "ttl", int, 0)
    identity = _typed(fields, "identity", str, "")
    identity_url = _typed(fields, "identity_url", str, "")
    grants = []
    for entry in _typed(fields, "authorizations", list, []):
        entry = _fields(entry)
        permissions = _strings(entry, "permissions")
        for permission in permissions:
            if permission not in PERMISSIONS:
                raise AuthError(f"unknown permission {permission}")
        grants.append(Authorization(_typed(entry, "topic", str, ""),
                                    _strings(entry, "channels"), permissions))
    if ttl <= 0:
        raise AuthError(f"invalid TTL {ttl} (must be >0)")
    return AuthState(ttl, identity, identity_url, grants, now)


def auth_url(address, remote_ip, tls, common_name, secret):
    """The URL nsqd asks: ``address`` is ``host:port`` (→ ``http://host:port/auth``) or a
    full URL (``scheme://...``, used as given). ``secret`` may be bytes (it is whatever
    the client sent)."""
    query = "&".join(f"{key}={urllib.parse.quote_plus(value)}" for key, value in (
        ("common_name", common_name), ("remote_ip", remote_ip), ("secret", secret),
        ("tls", "true" if tls else "false")))
    if "://" in address:
        return f"{address}?{query}"
    return f"http://{address}/auth?{query}"


def _get(url, connect_timeout, request_timeout):
    """``(status, reason, body)`` of a GET; OSError/HTTPException on transport failures."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AuthError(f"unsupported URL {url}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=connect_timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with gevent.Timeout(request_timeout or None, AuthError("request timed out")):
            conn.connect()
            if request_timeout:
                conn.sock.settimeout(request_timeout)
            conn.request("GET", path, headers={"Accept": "application/vnd.nsq; version=1.0"})
            resp = conn.getresponse()
            body = resp.read(MAX_RESPONSE + 1)
            if len(body) > MAX_RESPONSE:
                raise AuthError(f"response larger than {MAX_RESPONSE} bytes")
            return resp.status, resp.reason, body
    finally:
        conn.close()


def _https_retry_url(url, body):
    """A 403 over plain HTTP may name the HTTPS port to retry on (NSQ's API client)."""
    try:
        port = _typed(_fields(json_input.loads(body)), "https_port", int, 0)
    except (ValueError, AuthError):
        return None
    if not 0 < port < 65536:      # nothing to retry on: report the 403 itself
        return None
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urllib.parse.urlunsplit(("https", f"{host}:{port}", parts.path, parts.query, ""))


def query_auth_server(address, remote_ip, tls, common_name, secret,
                      connect_timeout=2.0, request_timeout=5.0):
    """Ask one auth server; an :class:`AuthState` or :class:`AuthError`."""
    url = auth_url(address, remote_ip, tls, common_name, secret)
    while True:
        try:
            status, reason, body = _get(url, connect_timeout, request_timeout)
        except (OSError, http.client.HTTPException) as err:
            raise AuthError(f"{type(err).__name__}: {err}") from None
        if status == 200:
            return parse_auth_response(body)
        if status == 403 and not url.startswith("https"):
            retry = _https_retry_url(url, body)
            if retry is not None:
                url = retry
                continue
        raise AuthError(f"got response {status} {reason} {body[:200]!r}")


def query_any_auth_server(addresses, remote_ip, tls, common_name, secret,
                          connect_timeout=2.0, request_timeout=5.0):
    """Ask each auth server in turn, starting at a random one, until one answers.
    Raises :class:`AuthError` naming every failure if none does."""
    if not addresses:
        raise AuthError("no auth server configured")
    start = random.randrange(len(addresses))
    errors = []
    for i in range(len(addresses)):
        address = addresses[(start + i) % len(addresses)]
        try:
            return query_auth_server(address, remote_ip, tls, common_name, secret,
                                     connect_timeout, request_timeout)
        except AuthError as err:
            errors.append(f"failed to auth against {address} - {err}")
    raise AuthError("; ".join(errors))
