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

import gevent

from greensq.http.nsq_http import GO_INT, NsqHTTPError, query_params, read_body, respond_text
from greensq.services.shared.batches import LineTooBig, split_lines, split_mpub_body
from greensq.services.shared.wire import FatalClientError


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


def add_publish_routes(app, publisher):
    """``/pub`` and ``/mpub`` (and their old names ``/put``, ``/mput``) on ``app``."""
    for path in ("/pub", "/put"):
        app.add_route(path, Pub(publisher))
    for path in ("/mpub", "/mput"):
        app.add_route(path, Mpub(publisher))
