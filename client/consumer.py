"""Consuming a topic's channel on gevent, from one or many nsqd, found directly or via
nsqlookupd.

What the consumer decides (RDY, backoff, each message's fate) is
:class:`~.consumer_core.ConsumerCore`'s, shared with the asyncio client; this module is
the gevent side of it, in the order things happen:

* **Connections.** One :class:`~greensq.client.connection.Connection` per nsqd, each
  IDENTIFYed and subscribed (``SUB topic channel``). nsqd addresses come from
  ``nsqd_tcp_addresses`` (reconnected with growing delays when they drop) and from
  polling ``lookupd_http_addresses`` (``/lookup?topic=``; the union of every answer;
  new nsqd are connected, vanished ones closed; polls are spread out with jitter, and
  come soon after one that found no nsqd at all, so a topic created a moment before
  the consumer started is not missed for a whole poll interval).
* **Handlers.** Each message runs ``handler(message)`` in a worker greenlet
  (:mod:`.workers`). A handler may also TOUCH, FIN or REQ itself, or call
  ``message.enable_async()`` and answer later.
* **Closing.** :meth:`Consumer.close` stops discovery, sends CLS (nsqd stops sending and
  answers ``CLOSE_WAIT``), requeues at once the messages no handler has started, lets
  the running handlers finish and their FIN/REQ go out, then closes the sockets.

Everything runs in greenlets on gevent's hub, with gevent's own sockets: no
monkey-patching needed.
"""

import logging
import random
import time

import gevent
from gevent.event import Event

from .connection import Connection
from .consumer_core import ConsumerCore
from .errors import NSQError, ProtocolError
from .http import HTTPError, LookupdHTTPClient
from .protocol import encode_command
from .workers import WorkerPool

log = logging.getLogger("greensq.client")


class Consumer(ConsumerCore):
    __doc__ = ConsumerCore.__doc__ + """
    The handler runs in a worker greenlet; returning FINs the message, raising REQs it.
    """

    def __init__(self, topic, channel, handler, **options):
        super().__init__(topic, channel, handler, **options)
        self._greenlets = []            # background loops
        self._pool = WorkerPool(self._handle, self.concurrency or self.max_in_flight)
        self._closed = Event()

    # -- I/O hooks of the core ------------------------------------------------------------

    connection_class = Connection
    _new_event = Event

    def _call_later(self, delay, func):
        return gevent.spawn_later(delay, func)

    def _cancel(self, greenlet):
        greenlet.kill(block=False)

    # -- public API -----------------------------------------------------------------------

    def start(self):
        """Connect to the given nsqd and start polling lookupd. Returns self.

        Direct nsqd that cannot be reached now are retried in the background. An nsqd
        that rejects the subscription (a bad topic or channel name, ...) raises its typed
        error here: retrying would not help.
        """
        if self._started:
            return self
        self._started = True
        for address in self.nsqd_tcp_addresses:
            try:
                self._connect(address, direct=True)
            except ProtocolError:
                self.close(timeout=0)
                raise
            except (OSError, NSQError) as err:
                log.warning("%s: cannot connect (%s); retrying", address, err)
                self._reconnect(address)
        if self.lookupd_http_addresses:
            self._greenlets.append(gevent.spawn(self._lookupd_loop, self.query_lookupd()))
        self._greenlets.append(gevent.spawn(self._redistribute_loop))
        return self

    def close(self, timeout=10.0):
        """Stop taking messages: CLS, requeue the messages no handler has started, let
        handlers finish (up to ``timeout``), disconnect."""
        if self._closing:
            self._closed.wait(timeout)
            return
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        states = self._closing_states()
        answers = [state.conn.request(encode_command("CLS")) for state in states
                   if state.conn is not None and not state.conn.closed]
        self._requeue_untaken(self._pool.take_pending())
        deadline = time.monotonic() + timeout
        for answer in answers:
            try:
                answer.get(timeout=max(0.0, deadline - time.monotonic()))
            except (gevent.Timeout, NSQError):
                pass
        self._handlers_idle.wait(max(0.0, deadline - time.monotonic()))
        for state in states:
            state.drained.wait(max(0.0, deadline - time.monotonic()))
        for state in states:
            if state.conn is not None:
                state.conn.close_after_flush()
        self._pool.stop()
        self._nsqd.clear()
        self._closed.set()

    def join(self, timeout=None):
        """Wait until :meth:`close` has finished."""
        return self._closed.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def set_max_in_flight(self, count):
        if not self.concurrency:
            self._pool.resize(count)
        super().set_max_in_flight(count)

    set_max_in_flight.__doc__ = ConsumerCore.set_max_in_flight.__doc__

    # -- connections ----------------------------------------------------------------------

    def _connect(self, address, direct):
        state = self._new_nsqd(address, direct)
        if state is None:
            return
        self._connecting.add(address)
        try:
            conn = state.conn
            conn.connect()
            try:
                conn.request(encode_command("SUB", self.topic, self.channel)).get(
                    timeout=self.connect_timeout)
            except BaseException:
                conn.close()
                raise
            if self._closing:
                conn.close()
                return
            self._subscribed(state)
        finally:
            self._connecting.discard(address)

    def _reconnect(self, address):
        self._greenlets.append(gevent.spawn(self._reconnect_loop, address))

    def _reconnect_loop(self, address):
        delay = self.reconnect_interval
        while not self._closing and address not in self._nsqd:
            gevent.sleep(delay * random.uniform(0.8, 1.2))
            if self._closing:
                return
            try:
                self._connect(address, direct=True)
                return
            except (OSError, NSQError) as err:
                log.info("%s: reconnect failed (%s)", address, err)
                delay = min(delay * 2, self.max_reconnect_interval)

    def _retire(self, state):
        """Stop consuming from an nsqd that lookupd no longer lists."""
        self._retiring(state)
        conn = state.conn

        def drain():
            try:
                conn.request(encode_command("CLS")).get(timeout=self.connect_timeout)
            except (gevent.Timeout, NSQError):
                pass
            state.drained.wait(self.connect_timeout)
            conn.close_after_flush()

        self._greenlets.append(gevent.spawn(drain))

    # -- lookupd --------------------------------------------------------------------------

    def query_lookupd(self):
        """Ask every lookupd where the topic is; connect new nsqd, retire vanished ones.

        Returns the set of nsqd TCP addresses found, or None if no lookupd answered.
        """
        answers = []
        for address in self.lookupd_http_addresses:
            try:
                answers.append((address, LookupdHTTPClient(
                    address, timeout=self.connect_timeout).lookup(self.topic)))
            except (HTTPError, OSError, ValueError) as err:
                answers.append((address, err))
        found, new, vanished = self._lookupd_answered(answers)
        for address in new:
            self._greenlets.append(gevent.spawn(self._connect_quietly, address))
        for state in vanished:
            self._retire(state)
        return found

    def _connect_quietly(self, address):
        try:
            self._connect(address, direct=False)
        except (OSError, NSQError) as err:
            log.warning("%s: cannot connect (%s)", address, err)

    def _lookupd_loop(self, found):
        gevent.sleep(self._lookupd_spread(found))
        while not self._closing:
            gevent.sleep(self._lookupd_wait(found))
            found = self.query_lookupd()

    # -- messages -------------------------------------------------------------------------

    def _on_messages(self, conn, messages):
        self._received(conn.responder, messages)
        self._pool.submit_many(messages)

    def _handle(self, msg):
        try:
            if self.max_attempts and msg.attempts > self.max_attempts:
                self._give_up(msg)
                return
            try:
                self.handler(msg)
            except Exception:
                self._handler_failed(msg)
                return
            if not msg._async and not msg._responded:
                msg._responded = True
                msg._responder.finish(msg)
        finally:   # _handler_done(), inline: this runs for every message
            self._handlers -= 1
            if self._handlers == 0:
                self._handlers_idle.set()

    # -- RDY ------------------------------------------------------------------------------

    def _redistribute_loop(self):
        while not self._closing:
            gevent.sleep(self.rdy_redistribute_interval)
            self.redistribute()
