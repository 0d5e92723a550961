"""Requests an HTTP worker (or the gateway) does not answer itself, passed to an nsqd's
HTTP API, and its answers passed back, unchanged: method, path and query as the client
wrote them, headers, body; status, headers, body. Hop-by-hop headers (``Connection``,
``Transfer-Encoding`` ...) are the two connections' own, and ``Date`` is the server's.

Connections to the nsqd are kept alive and reused (a few kept idle per process). A kept
connection the nsqd closed meanwhile is noticed when the request cannot be sent or gets
no answer at all, and the request is sent again on a new one; any other failure is
answered 502 ``BAD_GATEWAY`` and logged.
"""

import http.client
import logging
from urllib.parse import quote

import ujson

from greensq.client.http import http_connection

log = logging.getLogger("greensq")

HOP_BY_HOP = frozenset(["connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "trailers",
                        "transfer-encoding", "upgrade", "expect"])
_NOT_RELAYED = HOP_BY_HOP | {"date"}
_BAD_GATEWAY_BODY = ujson.dumps({"message": "BAD_GATEWAY"}).encode()
_BAD_GATEWAY_HEADERS = [("Content-Type", "application/json; charset=utf-8"),
                        ("Content-Length", str(len(_BAD_GATEWAY_BODY)))]


def _header_name(environ_key):
    """``HTTP_X_FORWARDED_FOR`` -> ``X-Forwarded-For``."""
    return "-".join(part.capitalize() for part in environ_key[5:].split("_"))


class Forwarder:
    """A WSGI app that passes every request to the nsqd at ``address`` (``host:port``,
    or a Unix socket's path)."""

    def __init__(self, address, timeout=60.0, keep_idle=16):
        self.address = address
        self.timeout = timeout
        self.keep_idle = keep_idle
        self._idle = []

    def __call__(self, environ, start_response):
        target = environ.get("RAW_URI") or quote(environ.get("PATH_INFO") or "/")
        if "RAW_URI" not in environ and environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        headers = [(_header_name(key), value) for key, value in environ.items()
                   if key.startswith("HTTP_") and key[5:].replace("_", "-").lower()
                   not in HOP_BY_HOP]
        if environ.get("CONTENT_TYPE"):
            headers.append(("Content-Type", environ["CONTENT_TYPE"]))
        body = environ["wsgi.input"].read()
        # The declared length: a body too big for the server to buffer did not come
        # with the request, and the nsqd answers it from its head, as it would have.
        length = environ.get("CONTENT_LENGTH")
        if body or length:
            headers.append(("Content-Length", length or str(len(body))))
        try:
            status, reason, answer_headers, data = self.request(
                environ["REQUEST_METHOD"], target, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            log.error("HTTP %s %s: nsqd at %s did not answer - %s",
                      environ["REQUEST_METHOD"], target[:200], self.address, exc)
            start_response("502 Bad Gateway", list(_BAD_GATEWAY_HEADERS))
            return [_BAD_GATEWAY_BODY]
        start_response(f"{status} {reason}", [(name, value) for name, value in answer_headers
                                              if name.lower() not in _NOT_RELAYED])
        return [data]

    def request(self, method, target, headers=(), body=b""):
        """``(status, reason, headers, body)`` of one request to the nsqd."""
        if self._idle:
            try:
                return self._exchange(self._idle.pop(), method, target, headers, body)
            except ConnectionError:
                pass        # a kept connection the nsqd had closed: again on a new one
        return self._exchange(http_connection(self.address, self.timeout), method, target,
                              headers, body)

    def _exchange(self, conn, method, target, headers, body):
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            if not any(name.lower() == "host" for name, _ in headers):
                conn.putheader("Host", "localhost")
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close or len(self._idle) >= self.keep_idle:
            conn.close()
        else:
            self._idle.append(conn)
        return response.status, response.reason, response.getheaders(), data

    def close(self):
        while self._idle:
            self._idle.pop().close()
