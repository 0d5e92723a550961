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
from .errors import ConnectionClosedError, NSQTimeoutError
from .producer_core import ProducerCore, dpub_command, mpub_command, pub_command

log = logging.getLogger("greensq.client")


class Producer(ProducerCore):
    __doc__ = ProducerCore.__doc__

    def __init__(self, nsqd_tcp_addresses, **options):
        super().__init__(nsqd_tcp_addresses, **options)
        self._lock = Semaphore()

    # -- connections ----------------------------------------------------------------------

    def connect(self):
        """Make sure a connection is up (publishing does this on demand)."""
        return self._connection()

    def _connection(self):
        conn = self.connection
        if conn is not None and not conn.closed:   # every publish: no call on the way
            return conn
        if self._closed:
            raise ConnectionClosedError("producer is closed")
        with self._lock:
            conn = self._live_connection()
            if conn is not None:
                return conn
            errors = []
            for index, address in self._failover_order():
                conn = Connection(address, connect_timeout=self.connect_timeout,
                                  on_command=self.on_command, on_error=self._on_error,
                                  **self.connection_options)
                try:
                    conn.connect()
                except (OSError, ConnectionClosedError) as err:
                    errors.append(f"{address}: {err}")
                    continue
                return self._connected(index, conn)
            raise self._unreachable(errors)

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

    def publish(self, topic, body, timeout=None):
        """PUB and wait for ``OK``; raises the typed error nsqd reports."""
        return self._send_blocking(pub_command(topic, body), timeout)

    def multi_publish(self, topic, bodies, timeout=None):
        """MPUB and wait for ``OK``."""
        return self._send_blocking(mpub_command(topic, bodies), timeout)

    def deferred_publish(self, topic, body, delay_ms, timeout=None):
        """DPUB and wait for ``OK``."""
        return self._send_blocking(dpub_command(topic, body, delay_ms), timeout)

