"""What a Consumer decides, without I/O: options, RDY accounting, backoff, the fate of
each message. The gevent :class:`~.consumer.Consumer` and the asyncio
:class:`~.aio.consumer.Consumer` are this core plus their own connections, timers and
handler workers, so the two cannot drift apart.

* **Flow control (RDY).** ``max_in_flight`` is the most messages the consumer holds at
  once, over all connections. It is split evenly between connections (capped by each
  nsqd's ``max_rdy_count``). When there are more connections than ``max_in_flight``,
  only some get ``RDY 1``; :meth:`~ConsumerCore.redistribute`, called periodically, takes
  it back from connections that stayed idle and hands it to others, so every nsqd gets
  drained.
* **Handlers' outcomes.** Returning means FIN; raising means REQ with a delay that grows
  with the message's attempts. A message delivered more than ``max_attempts`` times is
  handed to ``on_give_up`` (if any) and finished instead of being handled again.
* **Backoff.** A failed message (REQ with backoff) makes the consumer back off as NSQ's
  official clients do: ``RDY 0`` on every connection, wait (doubling with each
  consecutive failure up to ``max_backoff``), then ``RDY 1`` on one connection to try a
  single message. A success steps the backoff down; back at zero every connection gets
  its full RDY again. Results that arrive while the wait is running are not counted.

The I/O side provides its ``connection_class`` (a
:class:`~.connection_core.ConnectionCore`), two timer hooks, ``_call_later(delay, func)``
returning a handle and ``_cancel(handle)``, ``_new_event()`` (an object with ``set``,
``clear`` and ``is_set``) and ``_reconnect(address)``.
"""

import logging
import random
import time

from .http_answers import HTTPError
from .protocol import format_address

log = logging.getLogger("greensq.client")

# The first wait before asking lookupd again when it listed no nsqd for the topic.
LOOKUPD_RETRY = 0.25


class NsqdState:
    """The consumer's view of one connection: RDY sent, messages held, activity.

    It is also the ``responder`` of the messages that connection delivers, turning
    ``message.finish()`` into ``FIN <id>`` on the right connection.
    """

    __slots__ = ("consumer", "conn", "address", "direct", "rdy", "in_flight",
                 "active_at", "retiring", "drained")

    def __init__(self, consumer, address, direct):
        self.consumer = consumer
        self.conn = None
        self.address = address
        self.direct = direct          # given by the user (reconnect) or found via lookupd
        self.rdy = 0
        self.in_flight = 0
        self.active_at = time.monotonic()
        self.retiring = False
        self.drained = consumer._new_event()
        self.drained.set()

    def send_rdy(self, count):
        if count == self.rdy or self.conn is None or self.conn.closed:
            return
        self.rdy = count
        self.active_at = time.monotonic()
        self.conn.send(b"RDY %d\n" % count)

    def received(self, count):
        """``count`` messages arrived on this connection."""
        self.in_flight += count
        self.drained.clear()
        self.active_at = time.monotonic()

    def _send(self, data):
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.send(data)
            return True
        return False

    def _done(self):
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.drained.set()

    # -- the responder interface of Message --

    def finish(self, msg):
        conn = self.conn
        if not conn.closed:
            conn.send(b"FIN " + msg.id + b"\n")
        self._finished(1)

    def finish_many(self, msgs):
        """FIN several messages of this connection with one write."""
        conn = self.conn
        if not conn.closed:
            conn.send(b"".join([b"FIN " + msg.id + b"\n" for msg in msgs]))
        self._finished(len(msgs))

    def _finished(self, count):
        self.in_flight -= count
        if self.in_flight <= 0:
            self.drained.set()
        consumer = self.consumer
        consumer.stats["finished"] += count
        if consumer._backoff_counter and consumer._backoff_timer is None:
            for _ in range(count):   # each success steps the backoff down
                consumer._message_done(None, success=True)

    def requeue(self, msg, delay=None, backoff=True):
        if delay is None:
            delay = self.consumer.requeue_delay_for(msg.attempts)
        self._send(b"REQ %s %d\n" % (msg.id, max(0, int(delay * 1000))))
        self._done()
        self.consumer._message_done("requeued", success=None if not backoff else False)

    def touch(self, msg):
        self._send(b"TOUCH " + msg.id + b"\n")


class ConsumerCore:
    """Consume ``topic``/``channel``, handing every message to ``handler``.

    Options (durations in seconds):

    ``nsqd_tcp_addresses``, ``lookupd_http_addresses``
        where to find nsqd (``"host:port"``); at least one of the two.
    ``max_in_flight`` (1)
        messages held at once, over all connections.
    ``max_attempts`` (5; 0 = unlimited), ``on_give_up(message)``
        give up on a message delivered more often than this: call the hook, then FIN.
    ``requeue_delay`` (90), ``max_requeue_delay`` (900)
        a failed message is requeued after ``requeue_delay * attempts`` (capped).
    ``backoff`` (1), ``max_backoff`` (120)
        the first backoff wait, and its cap (it doubles per consecutive failure);
        ``max_backoff=0`` turns backoff off (go-nsq's ``max_backoff_duration,0``).
    ``concurrency`` (``max_in_flight``)
        handlers running at once; fewer than ``max_in_flight`` makes the rest of the
        messages held wait their turn (go-nsq's ``AddConcurrentHandlers``).
    ``lookupd_poll_interval`` (60), ``lookupd_poll_jitter`` (0.3)
        how often lookupd is asked, each wait varied by up to this fraction; while it
        lists no nsqd, it is asked again after 0.25 s, doubling up to the interval.
    ``rdy_redistribute_interval`` (5), ``low_rdy_idle_timeout`` (10)
        with more connections than ``max_in_flight``: how often RDY is redistributed,
        and how long a connection holding RDY may stay idle before losing it.
    ``reconnect_interval`` (1), ``max_reconnect_interval`` (30)
        first and longest wait before reconnecting to a direct nsqd that dropped.
    ``on_command(connection, data)``
        sees every command line sent (instrumentation).
    Other keyword arguments are the connection's: IDENTIFY options
    (``heartbeat_interval``, ``msg_timeout``, ``output_buffer_size``,
    ``output_buffer_timeout``, ``sample_rate``, ``client_id``, ``hostname``,
    ``user_agent``), ``auth_secret``, TLS (``tls_v1``, ``tls_context``, ``tls_ca_file``,
    ``tls_verify``, ``tls_cert``, ``tls_key``) and compression (``snappy``, ``deflate``,
    ``deflate_level``).
    """

    def __init__(self, topic, channel, handler, *, nsqd_tcp_addresses=(),
                 lookupd_http_addresses=(), max_in_flight=1, max_attempts=5,
                 on_give_up=None, requeue_delay=90.0, max_requeue_delay=900.0,
                 backoff=1.0, max_backoff=120.0, lookupd_poll_interval=60.0,
                 lookupd_poll_jitter=0.3, rdy_redistribute_interval=5.0,
                 low_rdy_idle_timeout=10.0, reconnect_interval=1.0,
                 max_reconnect_interval=30.0, connect_timeout=5.0, on_command=None,
                 concurrency=None, **connection_options):
        if isinstance(nsqd_tcp_addresses, str):
            nsqd_tcp_addresses = [nsqd_tcp_addresses]
        if isinstance(lookupd_http_addresses, str):
            lookupd_http_addresses = [lookupd_http_addresses]
        if not nsqd_tcp_addresses and not lookupd_http_addresses:
            raise ValueError("give nsqd_tcp_addresses or lookupd_http_addresses")
        self.topic = topic
        self.channel = channel
        self.handler = handler
        self.nsqd_tcp_addresses = [format_address(a) for a in nsqd_tcp_addresses]
        self.lookupd_http_addresses = list(lookupd_http_addresses)
        self.max_in_flight = max_in_flight
        self.max_attempts = max_attempts
        self.on_give_up = on_give_up
        self.requeue_delay = requeue_delay
        self.max_requeue_delay = max_requeue_delay
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.lookupd_poll_interval = lookupd_poll_interval
        self.lookupd_poll_jitter = lookupd_poll_jitter
        self.rdy_redistribute_interval = rdy_redistribute_interval
        self.low_rdy_idle_timeout = low_rdy_idle_timeout
        self.reconnect_interval = reconnect_interval
        self.max_reconnect_interval = max_reconnect_interval
        self.connect_timeout = connect_timeout
        self.on_command = on_command
        self.concurrency = concurrency
        self.connection_options = connection_options

        self.stats = {"received": 0, "finished": 0, "requeued": 0, "given_up": 0,
                      "handler_errors": 0}
        self._nsqd = {}                 # address -> NsqdState of live connections
        self._connecting = set()        # addresses being connected
        self._lookupd_retry = LOOKUPD_RETRY
        self._backoff_counter = 0
        self._backoff_timer = None
        self._handlers = 0
        self._handlers_idle = self._new_event()
        self._handlers_idle.set()
        self._started = False
        self._closing = False

    # -- I/O hooks ------------------------------------------------------------------------

    def _new_event(self):
        raise NotImplementedError

    def _call_later(self, delay, func):
        raise NotImplementedError

    def _cancel(self, handle):
        raise NotImplementedError

    connection_class = None     # the I/O side's Connection

    def _reconnect(self, address):
        """Reconnect to direct nsqd ``address`` in the background, with growing waits."""
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------

    @property
    def connections(self):
        """``{address: connection}`` of the live connections."""
        return {a: s.conn for a, s in self._nsqd.items()}

    def is_starved(self):
        """True if some connection has used most of its RDY (a hint for batching
        handlers that should process what they hold now)."""
        return any(s.in_flight > 0 and s.in_flight >= 0.85 * s.rdy
                   for s in self._nsqd.values())

    def finish_all(self, messages):
        """FIN ``messages`` (held with ``enable_async()``) with one write per connection
        instead of one command each: for handlers that answer in batches."""
        by_connection = {}
        for message in messages:
            if message._responded:
                raise RuntimeError("message already responded to")
            message._responded = True
            by_connection.setdefault(message._responder, []).append(message)
        for state, batch in by_connection.items():
            if state is not None:
                state.finish_many(batch)

    @property
    def unhandled(self):
        """Messages received whose handler has not returned yet (queued or running)."""
        return self._handlers

    def requeue_delay_for(self, attempts):
        return min(self.requeue_delay * max(1, attempts), self.max_requeue_delay)

    def backoff_duration(self, counter):
        return min(self.max_backoff, self.backoff * 2 ** (counter - 1))

    @property
    def in_backoff(self):
        return self._backoff_counter > 0

    # -- connections ----------------------------------------------------------------------

    def _new_nsqd(self, address, direct):
        """The state of a new connection to ``address``, its connection made (not yet
        connected); None if there is or will be one already, or the consumer closes."""
        if address in self._nsqd or address in self._connecting or self._closing:
            return None
        state = NsqdState(self, address, direct)
        state.conn = self.connection_class(
            address, connect_timeout=self.connect_timeout, on_messages=self._on_messages,
            on_error=self._on_error, on_close=self._on_close, on_command=self.on_command,
            responder=state, **self.connection_options)
        return state

    def _subscribed(self, state):
        """``state``'s connection is subscribed: it takes its share of RDY."""
        self._nsqd[state.address] = state
        log.info("%s: subscribed to %s/%s", state.address, self.topic, self.channel)
        if self._backoff_counter:
            state.send_rdy(0)
        else:
            self._update_rdy()

    def _on_close(self, conn):
        """A connection closed: a live one to a direct nsqd, not closed by the consumer,
        is reconnected."""
        state = conn.responder
        registered = self._nsqd.get(state.address) is state
        if registered:
            del self._nsqd[state.address]
        state.rdy = 0
        state.drained.set()
        if not registered or self._closing or state.retiring:
            return   # a failed connect (its caller retries), close() or retirement
        log.warning("%s: connection closed", state.address)
        self._update_rdy()
        if state.direct:
            self._reconnect(state.address)

    def _on_error(self, conn, error):
        log.warning("%s: %s", conn.address, error)

    def _retiring(self, state):
        """Stop giving RDY to an nsqd that lookupd no longer lists."""
        state.retiring = True
        self._nsqd.pop(state.address, None)
        self._update_rdy()

    def _lookupd_answered(self, answers):
        """What the lookupds answered, ``(lookupd address, Lookup or the error raised)``
        each: ``(found, new, vanished)``, the nsqd TCP addresses found (None if no lookupd
        answered), those to connect to, and the states of the nsqd to retire."""
        found, answered = set(), False
        for address, answer in answers:
            if isinstance(answer, HTTPError) and answer.status == 404:
                answered = True    # TOPIC_NOT_FOUND: no nsqd has the topic (yet)
            elif isinstance(answer, Exception):
                log.warning("lookupd %s: %s", address, answer)
            else:
                answered = True
                found.update(node.tcp_address for node in answer.producers)
        if not answered or self._closing:
            return None, [], []
        new = [a for a in found if a not in self._nsqd and a not in self._connecting]
        vanished = [s for a, s in self._nsqd.items() if not s.direct and a not in found]
        for state in vanished:
            log.info("%s: no longer listed by lookupd; closing", state.address)
        return found, new, vanished

    def _lookupd_spread(self, found):
        """Seconds to wait before the polls start, after a first poll that found
        ``found``: a random part of the interval, so that consumers that started together
        do not poll in lockstep; none while no nsqd was found."""
        if not found:
            return 0
        return random.uniform(0, self.lookupd_poll_interval * self.lookupd_poll_jitter)

    def _lookupd_wait(self, found):
        """Seconds until the next lookupd poll after one that found ``found``: the poll
        interval (jittered); while lookupd gives no nsqd to consume from (the topic is new
        and its nsqd has not registered it yet, or lookupd is down), sooner: after
        ``LOOKUPD_RETRY`` seconds, doubling up to the interval."""
        interval, jitter = self.lookupd_poll_interval, self.lookupd_poll_jitter
        if found or self._nsqd:
            self._lookupd_retry = LOOKUPD_RETRY
            wait = interval
        else:
            wait = min(self._lookupd_retry, interval)
            self._lookupd_retry *= 2
        return wait * random.uniform(1 - jitter, 1 + jitter)

    def _closing_states(self):
        """Start closing: no more RDY or backoff; the live connections' states."""
        self._closing = True
        if self._backoff_timer is not None:
            self._cancel(self._backoff_timer)
            self._backoff_timer = None
        states = list(self._nsqd.values())
        for state in states:
            state.rdy = 0
        return states

    # -- messages -------------------------------------------------------------------------

    def _received(self, state, messages):
        """A burst of messages arrived on ``state``'s connection."""
        count = len(messages)
        state.received(count)
        self.stats["received"] += count
        self._handlers += count
        self._handlers_idle.clear()

    def _give_up(self, msg):
        """``msg`` came more than ``max_attempts`` times: hand it to ``on_give_up`` and
        FIN it (unless the hook answered it)."""
        self.stats["given_up"] += 1
        if self.on_give_up is not None:
            try:
                self.on_give_up(msg)
            except Exception:
                log.exception("on_give_up failed for %r", msg)
        if not msg.has_responded():
            msg._responded = True
            state = msg._responder
            state._send(b"FIN " + msg.id + b"\n")
            state._done()
            self.stats["finished"] += 1

    def _handler_failed(self, msg):
        self.stats["handler_errors"] += 1
        log.exception("handler failed for %r", msg)
        if not msg.has_responded():
            msg.requeue()

    def _requeue_untaken(self, messages):
        """Closing: ``messages``, which no handler has started, go back to nsqd now (REQ
        without delay, no backoff) rather than when their timeout runs out."""
        for msg in messages:
            self._handler_done()
            if not msg._responded:
                msg._responded = True
                msg._responder.requeue(msg, 0, backoff=False)

    def _handler_done(self):
        self._handlers -= 1
        if self._handlers == 0:
            self._handlers_idle.set()

    def _message_done(self, outcome, success):
        if outcome is not None:
            self.stats[outcome] += 1
        if success is None or self._closing or not self.max_backoff:
            return
        if self._backoff_timer is not None:
            return   # results during a backoff wait do not count
        if success:
            if self._backoff_counter == 0:
                return
            self._backoff_counter -= 1
            if self._backoff_counter == 0:
                log.info("backoff over; resuming")
                self._update_rdy()
            else:
                self._start_backoff()
        else:
            self._backoff_counter += 1
            self._start_backoff()

    # -- backoff --------------------------------------------------------------------------

    def _start_backoff(self):
        duration = self.backoff_duration(self._backoff_counter)
        log.info("backing off for %.3fs (level %d)", duration, self._backoff_counter)
        for state in self._nsqd.values():
            state.send_rdy(0)
        self._backoff_timer = self._call_later(duration, self._backoff_test)

    def _backoff_test(self):
        self._backoff_timer = None
        if self._closing or not self._nsqd:
            return
        # One message from one connection decides whether to keep backing off.
        state = random.choice(list(self._nsqd.values()))
        state.send_rdy(1)

    # -- RDY ------------------------------------------------------------------------------

    def set_max_in_flight(self, count):
        """Change ``max_in_flight``; 0 pauses consumption on every connection."""
        self.max_in_flight = count
        self._update_rdy()

    def _update_rdy(self):
        """Give every connection its share of max_in_flight (outside backoff)."""
        if self._closing or self._backoff_counter:
            return
        states = list(self._nsqd.values())
        if not states:
            return
        total = self.max_in_flight
        if total >= len(states):
            share, extra = divmod(total, len(states))
            for index, state in enumerate(states):
                state.send_rdy(self._cap(state, share + (1 if index < extra else 0)))
            return
        # Fewer slots than connections: RDY 1 each to at most max_in_flight of them.
        holders = [s for s in states if s.rdy > 0]
        for state in holders[total:]:
            state.send_rdy(0)
        for state in holders[:total]:
            state.send_rdy(1)
        self._fill_free_slots(states)

    def _fill_free_slots(self, states, avoid=()):
        free = self.max_in_flight - sum(s.rdy for s in states)
        if free <= 0:
            return
        candidates = [s for s in states if s.rdy == 0 and s not in avoid]
        if len(candidates) < free:
            candidates += [s for s in states if s.rdy == 0 and s in avoid]
        random.shuffle(candidates)
        for state in candidates[:free]:
            state.send_rdy(1)

    @staticmethod
    def _cap(state, count):
        limit = state.conn.settings.get("max_rdy_count") if state.conn else None
        return min(count, limit) if limit else count

    def redistribute(self):
        """Move RDY from idle connections to others when max_in_flight is too small to
        give every connection some (called periodically)."""
        states = list(self._nsqd.values())
        if self._closing or self._backoff_counter or len(states) <= self.max_in_flight:
            return
        now = time.monotonic()
        released = []
        for state in states:
            if (state.rdy > 0 and state.in_flight == 0
                    and now - state.active_at >= self.low_rdy_idle_timeout):
                state.send_rdy(0)
                released.append(state)
        self._fill_free_slots(states, avoid=released)
