"""Byte-stream transports under the NSQ frame codec: plain, TLS, snappy and deflate.

An NSQ connection starts plain; IDENTIFY can switch on TLS, then snappy or deflate
(never both). Each transport moves bytes with ``recv(n)`` and ``sendall(data)`` and
wraps the one below it, so the frame code above never changes: TLS is the socket
wrapped by ``ssl`` (gevent's cooperative ssl module), snappy and deflate are the codecs
of compression.py, which the clients use too, over the transport below.

Bytes already read from the plain stream past the point of the upgrade (a pipelined
peer) are handed to the compressed transport as ``pending`` and decoded first. nsqd's
TLS settings are tls.py.
"""

import array
import fcntl
import termios

from gevent import get_hub

from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.wire import StreamError

# NSQ's names in /stats (Go's tls.Version* constants as nsqd prints them).
_VERSION_NAMES = {"SSLv3": "SSL30", "TLSv1": "TLS1.0", "TLSv1.1": "TLS1.1",
                  "TLSv1.2": "TLS1.2", "TLSv1.3": "TLS1.3"}


class TransportError(StreamError):
    """The peer's bytes do not fit the transport: data where a TLS handshake should
    start, a compressed stream that ends inside a chunk. (A corrupt compressed stream
    raises the codec's StreamError, this class's base.)"""


class PlainTransport:
    """A connected gevent socket as it is.

    The hot path bypasses gevent's Python socket wrapper: sends go straight to the OS
    socket (falling back to gevent's ``sendall`` only when the buffer is full), and a
    reader can ask what has arrived without waiting (``recv_nowait``) and then wait for
    readability itself (``recv_when_readable``), so a client waiting for each reply costs
    no failed reads.
    """

    name = "plain"

    def __init__(self, sock):
        self.sock = sock
        self._os_socket = getattr(sock, "_sock", sock)   # the one under gevent's wrapper
        self._unread = array.array("i", [0])
        self._readable = None

    def recv(self, size):
        return self.sock.recv(size)

    def recv_nowait(self, size):
        """What has already arrived, or None when nothing has (nor has EOF)."""
        fcntl.ioctl(self._os_socket, termios.FIONREAD, self._unread, True)
        return self.sock.recv(size) if self._unread[0] else None

    def recv_when_readable(self, size):
        """Wait in the hub until the socket is readable, then read (``b""`` at EOF)."""
        if self._readable is None:
            hub = get_hub()
            self._readable = hub.loop.io(self.sock.fileno(), 1)
            self._wait = hub.wait
        while True:
            self._wait(self._readable)
            try:
                return self._os_socket.recv(size)
            except BlockingIOError:
                continue   # woken without data after all

    def send_nowait(self, data):
        """Send what the socket takes of ``data`` at once; how many bytes it took."""
        try:
            return self._os_socket.send(data)
        except BlockingIOError:
            return 0

    def sendall(self, data):
        try:
            sent = self._os_socket.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])


class TLSTransport:
    """A socket after the TLS handshake (``sock`` is gevent's ``SSLSocket``). Bytes on
    the socket are TLS records, not data, so it has no ``recv_nowait``."""

    name = "tls"

    def __init__(self, sock):
        self.sock = sock

    def recv(self, size):
        return self.sock.recv(size)

    def sendall(self, data):
        self.sock.sendall(data)

    def stats(self):
        """NSQ's tls fields of a client's stats."""
        cipher = self.sock.cipher()
        version = self.sock.version() or ""
        return {
            "tls": True,
            "tls_cipher_suite": cipher[0] if cipher else "",
            "tls_version": _VERSION_NAMES.get(version, f"Unknown {version}"),
            "tls_negotiated_protocol": self.sock.selected_alpn_protocol() or "",
            "tls_negotiated_protocol_is_mutual": True,
        }


class CompressedTransport:
    """snappy or deflate (a codec of compression.py) over ``inner``. A read decodes no
    more than it takes to return ``size`` bytes: the rest of what arrived waits,
    compressed, for the next read, so what a peer sends costs nsqd no more memory than
    one read however well it compresses. ``pending``: bytes read from ``inner`` before
    the upgrade, which belong to the compressed stream."""

    def __init__(self, inner, codec, pending=b""):
        self.inner = inner
        self.codec = codec
        self.name = codec.name
        self._fresh = pending

    def sendall(self, data):
        self.inner.sendall(self.codec.compress(data))

    def recv(self, size):
        codec = self.codec
        data, self._fresh = self._fresh, b""
        while True:
            if data or codec.pending:
                out = codec.decompress(data, size)
                if out:
                    return out
                if codec.ended:
                    return b""
            data = self.inner.recv(max(size, 65536))
            if not data:
                if codec.pending:
                    raise TransportError(f"{codec.name}: stream ended inside a chunk")
                return b""


use_compiled(globals())
