"""What every greensq HTTP API shares: NSQ's response conventions on Falcon.

* Errors are ``{"message": "TOPIC_NOT_FOUND"}`` with NSQ's status codes, including
  Falcon's own 404 and 405, and 500 ``INTERNAL_ERROR`` for anything unexpected.
* Every response but ``/ping`` carries ``X-NSQ-Content-Type: nsq; version=1.0``
  (``NsqResponse``; ``respond_ping`` answers ``/ping``).
* Query parameters take their first value, blank values included, as Go's
  ``url.ParseQuery`` does; a missing one is 400 ``MISSING_ARG_<NAME>``, a topic or
  channel name NSQ refuses 400 ``INVALID_ARG_TOPIC`` / ``INVALID_ARG_CHANNEL`` (nsqd's
  own topic endpoints say ``INVALID_TOPIC``), in nsqd and nsqlookupd alike.
"""

import logging

import falcon
import ujson
from falcon.uri import parse_query_string

from greensq.services.shared.names import is_valid_name

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


class NsqResponse(falcon.Response):
    """A response that carries NSQ's content-type header from the start (cheaper than a
    middleware on every request); ``respond_ping`` takes it off for ``/ping``."""

    def __init__(self, options=None):
        super().__init__(options)
        self._headers["x-nsq-content-type"] = NSQ_CONTENT_TYPE


def config_body(req, limit):
    """The body of a ``PUT /config/<opt>``: NSQ's 413 ``INVALID_VALUE`` when it is empty or
    longer than ``limit``."""
    body = read_body(req, limit)
    if not body or len(body) > limit:
        raise NsqHTTPError(413, "INVALID_VALUE")
    return body


def respond_ping(resp):
    """``/ping``'s plain ``OK``, without NSQ's header, as Go answers it."""
    respond_text(resp, "OK")
    resp.delete_header("X-NSQ-Content-Type")


def create_api():
    """A Falcon app with NSQ's error shapes and headers."""
    app = falcon.App(response_type=NsqResponse)
    app.req_options.strip_url_path_trailing_slash = True
    # Falcon parses the query string once, for every request, as Go's url.ParseQuery
    # does: blank values kept, commas not splitting values (query_params reads it).
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(OSError, _connection_error)
    app.add_error_handler(falcon.HTTPError, _falcon_error)
    app.add_error_handler(NsqHTTPError, _nsq_error)
    return app


def _first_values(parsed):
    """Parsed query parameters (a value, or a list of them) as a dict of first values."""
    return {key: value if type(value) is str else value[0] for key, value in parsed.items()}


def query_params(req):
    """The query string, then a POSTed form's fields, as a dict of first values; blank
    values kept (as Go's url.ParseQuery)."""
    params = _first_values(req.params) if req.query_string else {}
    if req.method == "POST" and req.content_type and req.content_type.startswith(
            "application/x-www-form-urlencoded"):
        body = req.bounded_stream.read(64 * 1024).decode("utf-8", "replace")
        form = parse_query_string(body, keep_blank=True, csv=False)
        for key, value in _first_values(form).items():
            params.setdefault(key, value)
    return params


def required_param(params, name):
    """The parameter ``name``, blank or not; NSQ's 400 ``MISSING_ARG_<NAME>`` without it."""
    if name not in params:
        raise NsqHTTPError(400, f"MISSING_ARG_{name.upper()}")
    return params[name]


def topic_param(params, invalid="INVALID_ARG_TOPIC"):
    """The ``topic`` parameter, a name NSQ accepts; ``invalid`` is the 400's text for
    one it refuses (nsqd's publish, create and empty endpoints say ``INVALID_TOPIC``)."""
    name = required_param(params, "topic")
    if not is_valid_name(name):
        raise NsqHTTPError(400, invalid)
    return name


def topic_channel_params(params):
    """The ``topic`` and ``channel`` parameters, checked in that order, as nsqd's channel
    endpoints and nsqlookupd's check them."""
    topic = topic_param(params)
    channel = required_param(params, "channel")
    if not is_valid_name(channel):
        raise NsqHTTPError(400, "INVALID_ARG_CHANNEL")
    return topic, channel


def bool_param(params, name, default):
    """NSQ's lenient booleans: true/1 and false/0; anything else is the default."""
    value = params.get(name)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return default


def read_body(req, limit):
    """Up to ``limit + 1`` bytes of the request body (so callers can tell 'too big'). WSGI
    servers (ours, Gunicorn's, pywsgi) end the input stream at the body's end, chunked
    bodies included, so it is read as it is."""
    return req.stream.read(limit + 1)


def lazy_app(namespace, build):
    """A module ``__getattr__`` that builds the module's ``app`` on first use, so that
    ``gunicorn 'module:app'`` builds it inside Gunicorn's worker."""
    def __getattr__(name):
        if name != "app":
            raise AttributeError(name)
        namespace["app"] = build()
        return namespace["app"]

    return __getattr__
