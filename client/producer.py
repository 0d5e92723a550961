"""Publishing to nsqd over TCP: blocking and pipelined, with failover and reconnect.

A :class:`Producer` holds one connection at a time, to the first reachable nsqd in its
list. Every publish is a command that nsqd answers with ``OK`` or an error frame, in
order; the connection matches answers to commands in FIFO order, so any number of
publishes can be in flight on one connection (pipelining) without waiting for each
answer. Blocking calls (``publish`` ...) wait for their own answer; ``*_async`` calls
return a :class:`gevent.event.AsyncResult` at once.

When the connection drops (nsqd restarted, network), the next publish connects again,
trying the addresses in turn starting with the one that failed. Blocking publishes that
lost their connection before the answer came are sent again on the new connection (NSQ
delivers at least once, so a rare duplicate is the accepted price). Errors nsqd reports
(bad topic name, message too big ...) are raised as the typed errors of
:mod:`greensq.client.errors` and never retried.
"""

import logging

import gevent
from gevent.lock import Semaphore

from .connection import Connection
from .protocol import encode_command, encode_mpub_body, parse_address
from .errors import ConnectionClosedError, NoConnectionsError
from .errors import NSQTimeoutError

log = logging.getLogger("greensq.client")


class Producer:
    """Publishes to one of ``nsqd_tcp_addresses`` (``"host:port"`` strings or tuples).

    ``timeout`` bounds how long a blocking publish waits for its answer; ``retries`` is how
    many times a blocking publish is sent again after losing its connection.
    Other keyword arguments are IDENTIFY options passed to :class:`Connection`.
    """

    def __init__(self, nsqd_tcp_addresses, *, timeout=10.0, retries=2, connect_timeout=5.0,
                 on_command=None, **connection_options):
        if isinstance(nsqd_tcp_addresses, (str, tuple)):
            nsqd_tcp_addresses = [nsqd_tcp_addresses]
        self.addresses = ["%s:%d" % parse_address(a) for a in nsqd_tcp_addresses]
        if not self.addresses:
            raise ValueError("a Producer needs at least one nsqd address")
        self.timeout = timeout
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.on_command = on_command
        self.connection_options = connection_options
        self.connection = None
        self._index = 0
        self._lock = Semaphore()
        self._closed = False

    # -- connections ----------------------------------------------------------------------

    def connect(self):
        """Make sure a connection is up (publishing does this on demand)."""
        return self._connection()

    def _connection(self):
        conn = self.connection
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise ConnectionClosedError("producer is closed")
        with self._lock:
            conn = self.connection
            if conn is not None and not conn.closed:
                return conn
            errors = []
            for step in range(len(self.addresses)):
                index = (self._index + step) % len(self.addresses)
                address = self.addresses[index]
                conn = Connection(address, connect_timeout=self.connect_timeout,
                                  on_command=self.on_command, on_error=self._on_error,
                                  **self.connection_options)
                try:
                    conn.connect()
                except (OSError, ConnectionClosedError) as err:
                    errors.append(f"{address}: {err}")
                    continue
                self._index = index
                self.connection = conn
                log.info("producer connected to %s", address)
                return conn
            # Start with the next one on the following attempt.
            self._index = (self._index + 1) % len(self.addresses)
            raise NoConnectionsError("no nsqd reachable: " + "; ".join(errors))

    def _on_error(self, conn, error):
        log.error("%s: %s", conn.address, error)

    @property
    def address(self):
        """The nsqd currently published to, or None."""
        conn = self.connection
        return conn.address if conn is not None and not conn.closed else None

    def close(self):
        """Close the connection once everything queued is sent."""
        self._closed = True
        conn, self.connection = self.connection, None
        if conn is not None:
            conn.close_after_flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- publishing -----------------------------------------------------------------------

    def _send(self, data):
        return self._connection().request(data)

    def _send_blocking(self, data, timeout):
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(self.retries + 1):
            result = self._send(data)
            try:
                return result.get(timeout=timeout)
            except ConnectionClosedError:
                if attempt == self.retries:
                    raise
                log.warning("publish lost its connection; sending again")
            except gevent.Timeout:
                raise NSQTimeoutError(f"no answer from nsqd within {timeout}s") from None

    def publish_async(self, topic, body):
        """PUB; returns an AsyncResult that gets ``b"OK"`` or the typed error."""
        return self._send(encode_command("PUB", topic, body=body))

    def multi_publish_async(self, topic, bodies):
        """MPUB (all or nothing); returns an AsyncResult."""
        return self._send(encode_command("MPUB", topic, body=encode_mpub_body(bodies)))

    def deferred_publish_async(self, topic, body, delay_ms):
        """DPUB: deliver after ``delay_ms`` milliseconds; returns an AsyncResult."""
        return self._send(encode_command("DPUB", topic, int(delay_ms), body=body))

    def publish(self, topic, body, timeout=None):
        """PUB and wait for ``OK``; raises the typed error nsqd reports."""
        return self._send_blocking(encode_command("PUB", topic, body=body), timeout)

    def multi_publish(self, topic, bodies, timeout=None):
        """MPUB and wait for ``OK``."""
        return self._send_blocking(
            encode_command("MPUB", topic, body=encode_mpub_body(bodies)), timeout)

    def deferred_publish(self, topic, body, delay_ms, timeout=None):
        """DPUB and wait for ``OK``."""
        return self._send_blocking(
            encode_command("DPUB", topic, int(delay_ms), body=body), timeout)

