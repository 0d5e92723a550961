"""Publishing to nsqd on asyncio: awaited or pipelined, with failover and reconnect.

The same Producer as the gevent one (:mod:`greensq.client.producer`), its choices made by
the same core (:class:`~..producer_core.ProducerCore`): one connection at a time, to the
first reachable nsqd of the list; answers matched to publishes in FIFO order, so any
number of publishes can be in flight at once. ``await producer.publish(...)`` waits for
its own ``OK`` (a publish that lost its connection is sent again, up to ``retries``
times); ``producer.publish_async(...)`` returns a Future at once, without waiting.
Errors nsqd reports are raised as the typed errors of :mod:`greensq.client.errors`.
"""

import asyncio
import logging

from ..errors import ConnectionClosedError, NSQTimeoutError
from ..producer_core import ProducerCore, dpub_command, mpub_command, pub_command
from .connection import Connection

log = logging.getLogger("greensq.client")


class Producer(ProducerCore):
    __doc__ = ProducerCore.__doc__

    def __init__(self, nsqd_tcp_addresses, **options):
        super().__init__(nsqd_tcp_addresses, **options)
        self._connecting = None     # the Task connecting, while one is

    # -- connections ----------------------------------------------------------------------

    async def connect(self):
        """Make sure a connection is up (publishing does this on demand)."""
        return await self._connection()

    async def _connection(self):
        conn = self.connection
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise ConnectionClosedError("producer is closed")
        if self._connecting is None:   # one attempt at a time; every caller waits for it
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self):
        errors = []
        for index, address in self._failover_order():
            conn = Connection(address, connect_timeout=self.connect_timeout,
                              on_command=self.on_command, on_error=self._on_error,
                              **self.connection_options)
            try:
                await conn.connect()
            except (OSError, ConnectionClosedError) as err:
                errors.append(f"{address}: {err}")
                continue
            return self._connected(index, conn)
        raise self._unreachable(errors)

    async def close(self):
        """Close the connection once everything queued is sent."""
        self._closed = True
        conn, self.connection = self.connection, None
        if conn is not None:
            conn.close()
            await conn.closed_event.wait()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # -- publishing -----------------------------------------------------------------------

    def _send(self, data):
        """The Future of ``data``'s answer, sent now if connected, else once connected
        (in the order of the calls)."""
        conn = self.connection
        if conn is not None and not conn.closed:
            return conn.request(data)
        return asyncio.ensure_future(self._send_when_connected(data))

    async def _send_when_connected(self, data):
        conn = await self._connection()
        return await conn.request(data)

    async def _send_blocking(self, data, timeout):
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(self.retries + 1):
            try:
                async with asyncio.timeout(timeout):
                    conn = await self._connection()
                    return await conn.request(data)
            except ConnectionClosedError:
                if attempt == self.retries:
                    raise
                log.warning("publish lost its connection; sending again")
            except TimeoutError:
                raise NSQTimeoutError(f"no answer from nsqd within {timeout}s") from None

    async def publish(self, topic, body, timeout=None):
        """PUB and wait for ``OK``; raises the typed error nsqd reports."""
        return await self._send_blocking(pub_command(topic, body), timeout)

    async def multi_publish(self, topic, bodies, timeout=None):
        """MPUB and wait for ``OK``."""
        return await self._send_blocking(mpub_command(topic, bodies), timeout)

    async def deferred_publish(self, topic, body, delay_ms, timeout=None):
        """DPUB and wait for ``OK``."""
        return await self._send_blocking(dpub_command(topic, body, delay_ms), timeout)
