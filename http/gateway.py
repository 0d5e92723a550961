"""nsqd's HTTP API in front of an nsqd's TCP port: what nsqd's HTTP workers serve
(``--http-workers``), and what ``gunicorn 'greensq.http.gateway_app:app'`` serves in
front of any nsqd, Go's included.

``/pub`` and ``/mpub`` are answered here, by publish_api.py's resources (NSQ's checks,
in NSQ's order, and its answers), and published over NSQ's TCP protocol with greensq's
pipelining Producer: concurrent ``/pub`` requests for one topic become one MPUB
(coalescing.py), ``/pub?defer=`` a DPUB, an ``/mpub`` MPUBs of its own. A request is
answered 200 only once the nsqd has answered OK, that is once its messages are stored
(fsynced, with ``--durable``). Every other request goes to the nsqd's HTTP API and
comes back with the nsqd's answer (forwarding.py).
"""

import http.client
import logging
from urllib.parse import quote

import gevent

from greensq.client.errors import ProtocolError
from greensq.client.producer import Producer
from greensq.http.coalescing import Coalescer
from greensq.http.forwarding import Forwarder
from greensq.http.nsq_http import NsqHTTPError, create_api, topic_param
from greensq.http.publish_api import publishing_app
from greensq.services.shared.batches import SlicedBodies
from greensq.services.shared.wire import INTERNAL_ERROR_IN, NO_ROOM_ON_DISK, SIZE

log = logging.getLogger("greensq")

# Falcon's routes for them (a trailing slash is stripped); any other path, e.g. one
# Falcon would route to /pub after all, goes to the nsqd, which answers it as well.
PUBLISH_PATHS = frozenset(path + slash for path in ("/pub", "/put", "/mpub", "/mput")
                          for slash in ("", "/"))

VALID_TOPICS_KEPT = 4096      # topic names known valid, to skip the check


def publish_error(error):
    """NSQ's HTTP answer to a publish that failed with ``error`` (the Producer's): what
    nsqd's own ``/pub`` answers for the same failure."""
    if isinstance(error, ProtocolError):
        if error.code == "E_BAD_TOPIC":
            return NsqHTTPError(400, "INVALID_TOPIC")
        if error.code in ("E_BAD_BODY", "E_BAD_MESSAGE"):   # the nsqd's limits changed
            return NsqHTTPError(413, error.code[2:])
        if error.code.endswith("_FAILED"):
            if NO_ROOM_ON_DISK in error.description:
                return NsqHTTPError(503, "QUEUE_FULL")
            if INTERNAL_ERROR_IN in error.description:
                return NsqHTTPError(500, "INTERNAL_ERROR")
            return NsqHTTPError(503, "EXITING")
        log.error("publish refused by nsqd - %s", error)      # E_UNAUTHORIZED ...
        return NsqHTTPError(500, "INTERNAL_ERROR")
    log.error("publish failed - %s", error)   # no nsqd, the connection lost, no answer
    return NsqHTTPError(503, "EXITING")


def _no_room(error):
    """A publish refused by a full bounded queue (nsqd's E_PUB_FAILED / E_MPUB_FAILED)."""
    return isinstance(error, ProtocolError) and NO_ROOM_ON_DISK in error.description


def mpub_batches(bodies, max_body_size):
    """``bodies`` (a list, or a big batch's SlicedBodies) as lists that each fit in one
    MPUB of at most ``max_body_size`` bytes."""
    slices = bodies.slices() if isinstance(bodies, SlicedBodies) else [bodies]
    batch, size = [], SIZE.size
    for piece in slices:
        for body in piece:
            if batch and size + SIZE.size + len(body) > max_body_size:
                yield batch
                batch, size = [], SIZE.size
            batch.append(body)
            size += SIZE.size + len(body)
        gevent.sleep(0)     # a big batch: the other requests get their turns
    if batch:
        yield batch


class UpstreamPublisher:
    """publish_api.py's publisher for an nsqd reached over TCP (``producer``) and HTTP
    (``forwarder``); ``limits`` are the nsqd's."""

    def __init__(self, producer, forwarder, limits):
        self.producer = producer
        self.forwarder = forwarder
        self.limits = limits
        self.coalescer = Coalescer(self._send_batch, limits, no_room=_no_room)
        self._valid_topics = set()

    def topic(self, params):
        name = params.get("topic")
        if name in self._valid_topics:
            return name
        name = topic_param(params, "INVALID_TOPIC")
        if len(self._valid_topics) >= VALID_TOPICS_KEPT:
            self._valid_topics.clear()
        self._valid_topics.add(name)
        return name

    def create_topic(self, name):
        """As nsqd's own ``/pub`` does before it refuses a request: through its HTTP API
        (``/topic/create``), as TCP has no command that only creates a topic."""
        try:
            self.forwarder.request("POST", "/topic/create?topic=" + quote(name, safe=""))
        except (OSError, http.client.HTTPException) as exc:
            log.error("TOPIC(%s): not created - %s", name, exc)

    def publish(self, topic, body, defer_ms=0):
        try:
            if defer_ms:
                self.producer.deferred_publish(topic, body, defer_ms)
            else:
                self.coalescer.publish(topic, body)
        except Exception as exc:
            raise publish_error(exc) from None

    def publish_batch(self, topic, bodies):
        if not len(bodies):
            self.create_topic(topic)        # nothing to publish; nsqd creates the topic
            return
        try:
            for batch in mpub_batches(bodies, self.limits.max_body_size):
                self.producer.multi_publish(topic, batch)
        except Exception as exc:
            raise publish_error(exc) from None

    def _send_batch(self, topic, bodies):
        if len(bodies) == 1:
            self.producer.publish(topic, bodies[0])
        else:
            self.producer.multi_publish(topic, bodies)


class Gateway:
    """The WSGI app: ``/pub`` and ``/mpub`` published to the nsqd at ``tcp_address``,
    everything else passed to its HTTP API at ``http_address`` (each ``host:port`` or a
    Unix socket's path). ``limits``: the nsqd's ``max_msg_size``, ``max_body_size``,
    ``max_req_timeout``; ``producer_options``: the Producer's (timeouts, IDENTIFY, TLS,
    AUTH)."""

    def __init__(self, tcp_address, http_address, limits, **producer_options):
        self.forwarder = Forwarder(http_address)
        self.producer = Producer([tcp_address], **producer_options)
        self.publisher = UpstreamPublisher(self.producer, self.forwarder, limits)
        self.publish_api = publishing_app(create_api(), self.publisher)

    def early_answer(self, path, query, body):
        """The common ``/pub`` before any WSGI environ (see wsgi_server.ApiServer)."""
        return self.publish_api.early_answer(path, query, body)

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] in PUBLISH_PATHS:
            return self.publish_api(environ, start_response)
        return self.forwarder(environ, start_response)

    def close(self):
        """Send what is queued, then close the connections to the nsqd."""
        self.producer.close()
        self.forwarder.close()
