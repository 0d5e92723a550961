"""NSQ's HTTP publishing, ``POST /pub`` and ``POST /mpub``, as Falcon resources over a
publisher: nsqd's core itself (nsqd_api.py), or, in an HTTP worker or the gateway, an
nsqd's TCP port (gateway.py). Either way a request gets the same checks, in NSQ's order,
and the same answers.

A publisher has ``limits`` (``max_msg_size``, ``max_body_size``, ``max_req_timeout``:
nsqd's options, or what an upstream nsqd says they are) and these methods, which raise
``NsqHTTPError`` with NSQ's answer:

* ``topic(params)``: the ``topic`` parameter, checked;
* ``create_topic(name)``: NSQ creates the topic before its later checks, so a request
  that fails one of them (a bad ``defer``, a malformed ``/mpub`` body) leaves the topic;
* ``publish(topic, body, defer_ms)``: one ``/pub`` message, answered once stored;
* ``publish_batch(topic, bodies)``: an ``/mpub``'s (a list, or services/shared/batches's
  ``SlicedBodies``), answered once all are stored.
"""

import io

import falcon
import gevent
import ujson

from greensq.http.nsq_http import (
    GO_INT, JSON_TYPE, NSQ_CONTENT_TYPE, TEXT_TYPE, NsqHTTPError, query_params, read_body,
    respond_text)
from greensq.services.shared.batches import LineTooBig, split_lines, split_mpub_body
from greensq.services.shared.names import is_valid_name
from greensq.services.shared.wire import FatalClientError

PUB_PATHS = frozenset(["/pub", "/put"])


class Pub:
    def __init__(self, publisher):
        self.publisher = publisher
        self.limits = publisher.limits

    def on_post(self, req, resp):
        limit = self.limits.max_msg_size
        if (req.content_length or 0) > limit:
            raise NsqHTTPError(413, "MSG_TOO_BIG")
        body = read_body(req, limit)
        if len(body) > limit:
            raise NsqHTTPError(413, "MSG_TOO_BIG")
        if not body:
            raise NsqHTTPError(400, "MSG_EMPTY")
        params = query_params(req)
        topic_name = self.publisher.topic(params)
        defer_ms = 0
        if "defer" in params:
            defer_ms = self._defer_ms(params["defer"])
            if defer_ms is None:
                self.publisher.create_topic(topic_name)
                raise NsqHTTPError(400, "INVALID_DEFER")
        self.publisher.publish(topic_name, body, defer_ms)
        respond_text(resp, "OK")

    def _defer_ms(self, raw):
        """``defer`` in milliseconds, or None if NSQ refuses it."""
        if not GO_INT.fullmatch(raw):
            return None
        defer_ms = int(raw)
        if not 0 <= defer_ms <= self.limits.max_req_timeout * 1000:
            return None
        return defer_ms


class Mpub:
    def __init__(self, publisher):
        self.publisher = publisher
        self.limits = publisher.limits

    def on_post(self, req, resp):
        limit = self.limits.max_body_size
        if (req.content_length or 0) > limit:
            raise NsqHTTPError(413, "BODY_TOO_BIG")
        body = read_body(req, limit)     # first: a form content type must not eat it
        params = query_params(req)
        topic_name = self.publisher.topic(params)
        try:
            bodies = self._bodies(body, params)
        except NsqHTTPError:
            self.publisher.create_topic(topic_name)
            raise
        self.publisher.publish_batch(topic_name, bodies)
        respond_text(resp, "OK")

    def _bodies(self, body, params):
        """The messages of the body, checked as NSQ checks them. A big batch is checked
        (and later stored) in slices, the hub visiting the other greenlets in between
        (services/shared/batches.py)."""
        if len(body) > self.limits.max_body_size:
            raise NsqHTTPError(413, "BODY_TOO_BIG")
        binary = params.get("binary")
        if binary is not None and binary not in ("false", "0"):
            try:
                return split_mpub_body(body, self.limits, pause=gevent.sleep)
            except FatalClientError as err:
                raise NsqHTTPError(413, err.code[2:]) from None
        try:
            return split_lines(body, self.limits.max_msg_size, pause=gevent.sleep)
        except LineTooBig:
            raise NsqHTTPError(413, "MSG_TOO_BIG") from None


class CommonPubs:
    """A WSGI front for a Falcon app with the publish routes: the common ``/pub`` answered
    without Falcon.

    Nearly every ``/pub`` is ``POST /pub?topic=<name>`` with a body of 1 to
    ``--max-msg-size`` bytes. This answers those by itself, with the publisher and
    byte for byte the answers ``Pub`` gives (tests/test_publish_api.py compares them),
    but without Falcon's request and response objects, routing and serialising: about
    15 µs a request, a third of an HTTP worker's time. Anything else, ``defer``, other
    parameters, an empty or too big body, goes to the Falcon app as it came.

    greensq's HTTP server (wsgi_server.py) asks ``early_answer`` first, before it makes
    the request's WSGI environ at all; other servers call the app.
    """

    TOPICS_KEPT = 4096

    def __init__(self, app, publisher):
        self.app = app
        self.publisher = publisher
        self.limits = publisher.limits
        self._topics = {}     # query string "topic=<valid name>" -> the name

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] not in PUB_PATHS:
            return self.app(environ, start_response)
        query = environ.get("QUERY_STRING", "")
        if self._topics.get(query) or self._topic(query):
            body = environ["wsgi.input"].read(self.limits.max_msg_size + 1)
            answer = self._answer(query, body)
            if answer is not None:
                status, headers, body = answer
                start_response(status, list(headers))
                return [body]
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def early_answer(self, path, query, body):
        """``(status, headers, body)`` for ``POST <path>?<query>`` (bytes: the path as
        received, not unquoted) with ``body`` when it is a common ``/pub``; else None, and
        the WSGI app answers the request."""
        if path not in _RAW_PUB_PATHS:
            return None
        return self._answer(query.decode("latin-1"), body)

    def _answer(self, query, body):
        topic = self._topics.get(query) or self._topic(query)
        if topic is None or not 0 < len(body) <= self.limits.max_msg_size:
            return None
        try:
            self.publisher.publish(topic, body, 0)
        except NsqHTTPError as err:
            return error_answer(err)
        return _OK_ANSWER

    def _topic(self, query):
        """The topic of a query string that is ``topic=<valid name>`` and nothing else."""
        name = query[6:] if query.startswith("topic=") else ""
        if not is_valid_name(name):     # also refuses "&", "%", "+": a longer query
            return None
        if len(self._topics) >= self.TOPICS_KEPT:
            self._topics.clear()
        self._topics[query] = name
        return name


_RAW_PUB_PATHS = frozenset(path.encode() for path in PUB_PATHS)
_OK_ANSWER = ("200 OK", (("x-nsq-content-type", NSQ_CONTENT_TYPE), ("content-type", TEXT_TYPE),
                         ("content-length", "2")), b"OK")


def error_answer(err):
    """An ``NsqHTTPError`` as ``(status, headers, body)``, as nsq_http's error handler
    answers it in Falcon."""
    body = ujson.dumps({"message": err.message}, escape_forward_slashes=False).encode()
    return (falcon.code_to_http_status(err.status),
            (("x-nsq-content-type", NSQ_CONTENT_TYPE), ("content-type", JSON_TYPE),
             ("content-length", str(len(body)))), body)


def publishing_app(app, publisher):
    """The WSGI app to serve: the Falcon ``app`` with ``/pub`` and ``/mpub`` (and their
    old names ``/put``, ``/mput``) over ``publisher``, behind ``CommonPubs``."""
    for path in PUB_PATHS:
        app.add_route(path, Pub(publisher))
    for path in ("/mpub", "/mput"):
        app.add_route(path, Mpub(publisher))
    return CommonPubs(app, publisher)
