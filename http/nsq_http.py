"""What every greensq HTTP API shares: NSQ's response conventions on Falcon.

* Errors are ``{"message": "TOPIC_NOT_FOUND"}`` with NSQ's status codes, including
  Falcon's own 404 and 405, and 500 ``INTERNAL_ERROR`` for anything unexpected.
* Every response but ``/ping`` carries ``X-NSQ-Content-Type: nsq; version=1.0``.
* Query parameters take their first value, blank values included, as Go's
  ``url.ParseQuery`` does.
"""

import logging
from urllib.parse import parse_qs

import falcon
import ujson

log = logging.getLogger("greensq")

NSQ_CONTENT_TYPE = "nsq; version=1.0"
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


class NsqHTTPError(Exception):
    """An API error: HTTP status and NSQ's message text."""

    def __init__(self, status, message):
        super().__init__(status, message)
        self.status = status
        self.message = message


def respond_json(resp, document, status=200):
    resp.status = status
    resp.content_type = JSON_TYPE
    resp.data = ujson.dumps(document, escape_forward_slashes=False).encode()


def respond_text(resp, text, status=200):
    resp.status = status
    resp.content_type = TEXT_TYPE
    resp.data = text.encode() if isinstance(text, str) else text


def _render_error(resp, status, message):
    respond_json(resp, {"message": message}, status)
    resp.set_header("X-NSQ-Content-Type", NSQ_CONTENT_TYPE)


def _nsq_error(req, resp, ex, params):
    _render_error(resp, ex.status, ex.message)


def _falcon_error(req, resp, ex, params):
    status = int(ex.status_code)
    message = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "INVALID_REQUEST")
    _render_error(resp, status, message)
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def _connection_error(req, resp, ex, params):
    """The client reset or went away mid-request: one line, no traceback."""
    log.debug("HTTP %s %s: connection error - %s", req.method, req.path, ex)
    _render_error(resp, 400, "INVALID_REQUEST")
    resp.set_header("Connection", "close")


def _unexpected_error(req, resp, ex, params):
    log.exception("HTTP %s %s: internal error", req.method, req.path)
    _render_error(resp, 500, "INTERNAL_ERROR")


class NsqHeaders:
    """Middleware: NSQ's content-type header on every API response."""

    def __init__(self, plain_paths=("/ping",)):
        self.plain_paths = frozenset(plain_paths)

    def process_response(self, req, resp, resource, req_succeeded):
        if req.path not in self.plain_paths:
            resp.set_header("X-NSQ-Content-Type", NSQ_CONTENT_TYPE)


def create_api(plain_paths=("/ping",)):
    """A Falcon app with NSQ's error shapes and headers."""
    app = falcon.App(middleware=[NsqHeaders(plain_paths)])
    app.req_options.strip_url_path_trailing_slash = True
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(OSError, _connection_error)
    app.add_error_handler(falcon.HTTPError, _falcon_error)
    app.add_error_handler(NsqHTTPError, _nsq_error)
    return app


def query_params(req):
    """The query string as a dict of first values; blank values kept."""
    parsed = parse_qs(req.query_string, keep_blank_values=True)
    if req.method == "POST" and req.content_type and req.content_type.startswith(
            "application/x-www-form-urlencoded"):
        body = req.bounded_stream.read(64 * 1024).decode("utf-8", "replace")
        for key, values in parse_qs(body, keep_blank_values=True).items():
            parsed.setdefault(key, values)
    return {key: values[0] for key, values in parsed.items()}


def bool_param(params, name, default):
    """NSQ's lenient booleans: true/1 and false/0; anything else is the default."""
    value = params.get(name)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return default


def read_body(req, limit):
    """Up to ``limit + 1`` bytes of the request body (so callers can tell 'too big'). A
    chunked body has no Content-Length: it comes from the server's de-chunking stream."""
    stream = req.bounded_stream if req.content_length is not None else req.stream
    return stream.read(limit + 1)


def lazy_app(namespace, build):
    """A module ``__getattr__`` that builds the module's ``app`` on first use, so that
    ``gunicorn 'module:app'`` builds it inside Gunicorn's worker."""
    def __getattr__(name):
        if name != "app":
            raise AttributeError(name)
        namespace["app"] = build()
        return namespace["app"]

    return __getattr__
