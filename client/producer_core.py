"""What a Producer decides, without I/O: which nsqd to publish to, in which order to try
them, and the commands each publish sends. Shared by the gevent
:class:`~.producer.Producer` and the asyncio :class:`~.aio.producer.Producer`.
"""

import logging

from greensq.services.shared.wire import SIZE

from .errors import NoConnectionsError
from .protocol import encode_command, encode_mpub_body, format_address

log = logging.getLogger("greensq.client")


# "PUB <topic>\n" by topic, as encoding and checking the line costs more than the rest of
# a publish; bounded, the cache starts again when it is full.
_PUB_LINES = {}
_PUB_LINES_MAX = 1024


def pub_command(topic, body):
    line = _PUB_LINES.get(topic)
    if line is None:
        if len(_PUB_LINES) >= _PUB_LINES_MAX:
            _PUB_LINES.clear()
        line = _PUB_LINES[topic] = encode_command("PUB", topic)
    return line + SIZE.pack(len(body)) + body


def mpub_command(topic, bodies):
    return encode_command("MPUB", topic, body=encode_mpub_body(bodies))


def dpub_command(topic, body, delay_ms):
    return encode_command("DPUB", topic, int(delay_ms), body=body)


class ProducerCore:
    """Publishes to one of ``nsqd_tcp_addresses`` (``"host:port"`` strings or tuples).

    ``timeout`` bounds how long a blocking publish waits for its answer; ``retries`` is how
    many times a blocking publish is sent again after losing its connection.
    Other keyword arguments are the connection's (IDENTIFY options, ``auth_secret``,
    TLS, snappy, deflate).
    """

    def __init__(self, nsqd_tcp_addresses, *, timeout=10.0, retries=2, connect_timeout=5.0,
                 on_command=None, **connection_options):
        if isinstance(nsqd_tcp_addresses, (str, tuple)):
            nsqd_tcp_addresses = [nsqd_tcp_addresses]
        self.addresses = [format_address(a) for a in nsqd_tcp_addresses]
        if not self.addresses:
            raise ValueError("a Producer needs at least one nsqd address")
        self.timeout = timeout
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.on_command = on_command
        self.connection_options = connection_options
        self.connection = None
        self._index = 0
        self._closed = False

    @property
    def address(self):
        """The nsqd currently published to, or None."""
        conn = self.connection
        return conn.address if conn is not None and not conn.closed else None

    def _live_connection(self):
        conn = self.connection
        return conn if conn is not None and not conn.closed else None

    def _failover_order(self):
        """``(index, address)`` of each nsqd, starting with the one last used."""
        count = len(self.addresses)
        return [((self._index + step) % count, self.addresses[(self._index + step) % count])
                for step in range(count)]

    def _connected(self, index, conn):
        self._index = index
        self.connection = conn
        log.info("producer connected to %s", conn.address)
        return conn

    def _unreachable(self, errors):
        """Every nsqd failed: the error to raise. The next attempt starts with the next."""
        self._index = (self._index + 1) % len(self.addresses)
        return NoConnectionsError("no nsqd reachable: " + "; ".join(errors))

    def _on_error(self, conn, error):
        log.error("%s: %s", conn.address, error)

    # -- pipelined publishing -------------------------------------------------------------

    def _send(self, data):
        """Send ``data`` (connecting first if need be); what will receive nsqd's answer
        (gevent: an AsyncResult; asyncio: a Future)."""
        raise NotImplementedError

    def publish_async(self, topic, body):
        """PUB without waiting; returns what receives ``b"OK"`` or the typed error."""
        return self._send(pub_command(topic, body))

    def multi_publish_async(self, topic, bodies):
        """MPUB (all or nothing) without waiting."""
        return self._send(mpub_command(topic, bodies))

    def deferred_publish_async(self, topic, body, delay_ms):
        """DPUB without waiting: deliver after ``delay_ms`` milliseconds."""
        return self._send(dpub_command(topic, body, delay_ms))
