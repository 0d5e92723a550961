"""Byte-stream transports under the NSQ frame codec: plain, TLS, snappy and deflate.

An NSQ connection starts plain; IDENTIFY can switch on TLS, then snappy or deflate
(never both). Each transport moves bytes with ``recv(n)`` and ``sendall(data)`` and
wraps the one below it, so the frame code above never changes:

* TLS is the socket wrapped by ``ssl`` (gevent's cooperative ssl module);
* snappy is the snappy *framing* format (a stream identifier, then compressed or
  uncompressed chunks, each with a masked CRC-32C of its data);
* deflate is raw deflate (no zlib header), sync-flushed after every write so the peer
  can decode everything sent so far.

Server and client share these: bytes already read from the plain stream past the point
of the upgrade (a pipelined peer) are handed to a compressing transport as ``pending``
and decoded first. nsqd's TLS settings are tls.py. cramjam is loaded when a connection
first asks for snappy.
"""

import array
import fcntl
import termios
import zlib

from gevent import get_hub

from greensq.services.shared.deferred import deferred_import

cramjam = deferred_import("cramjam")

SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
# The longest chunk Go's snappy reader takes: a CRC and the worst-case encoding of a
# 64 KiB block.
_SNAPPY_MAX_CHUNK_LENGTH = 4 + 32 + 65536 + 65536 // 6

# NSQ's names in /stats (Go's tls.Version* constants as nsqd prints them).
_VERSION_NAMES = {"SSLv3": "SSL30", "TLSv1": "TLS1.0", "TLSv1.1": "TLS1.1",
                  "TLSv1.2": "TLS1.2", "TLSv1.3": "TLS1.3"}


class TransportError(Exception):
    """The peer sent bytes the transport cannot decode (corrupt compressed stream)."""


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


class SnappyTransport:
    """The snappy framing format over ``inner``. A read decodes whole chunks, and no
    more of them than it takes to return ``size`` bytes: the rest of what arrived waits,
    compressed, for the next read. A chunk is at most ``_SNAPPY_MAX_CHUNK_LENGTH`` long,
    as Go's reader requires, so a peer cannot make nsqd buffer more than one."""

    name = "snappy"

    def __init__(self, inner, pending=b""):
        snappy = cramjam.snappy
        self.inner = inner
        self._snappy = snappy
        self._compressor = snappy.Compressor()
        self._in = bytearray(pending)
        self._seen_stream_id = False

    def sendall(self, data):
        compressor = self._compressor
        compressor.compress(data)
        self.inner.sendall(bytes(compressor.flush()))

    def recv(self, size):
        while True:
            out = self._decode(size)
            if out:
                return out
            data = self.inner.recv(max(size, 65536))
            if not data:
                if self._in:
                    raise TransportError("snappy: stream ended inside a chunk")
                return b""
            self._in += data

    def _decode(self, size):
        """Decode the complete chunks at the head of the input buffer, until they give
        ``size`` bytes or more."""
        buf = self._in
        pos, end = 0, len(buf)
        decoded = 0
        while end - pos >= 4 and decoded < size:
            length = int.from_bytes(buf[pos + 1:pos + 4], "little")
            if length > _SNAPPY_MAX_CHUNK_LENGTH:
                raise TransportError(f"snappy: chunk of {length} bytes is too long")
            if pos + 4 + length > end:
                break
            kind = buf[pos]
            if kind == 0xFF:
                if bytes(buf[pos:pos + 4 + length]) != SNAPPY_STREAM_ID:
                    raise TransportError("snappy: bad stream identifier")
                self._seen_stream_id = True
            elif not self._seen_stream_id:
                raise TransportError("snappy: missing stream identifier")
            elif kind == 0x00:
                decoded += _snappy_block_length(buf, pos + 8, pos + 4 + length)
            elif kind == 0x01:
                decoded += length - 4
            elif kind <= 0x7F:
                raise TransportError(f"snappy: unskippable chunk type {kind:#x}")
            pos += 4 + length
        if not pos:
            return b""
        chunks = bytes(buf[:pos])
        del buf[:pos]
        if not chunks.startswith(SNAPPY_STREAM_ID):
            chunks = SNAPPY_STREAM_ID + chunks
        try:   # cramjam checks every chunk's CRC-32C (and each block's real length)
            return bytes(self._snappy.decompress(chunks))
        except Exception as exc:
            raise TransportError(f"snappy: {exc}") from None


def _snappy_block_length(buf, start, end):
    """The decoded length a snappy block declares (a varint at its start); the decoder
    checks it against the block's contents."""
    length = shift = 0
    for pos in range(start, min(end, start + 5)):
        byte = buf[pos]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
        shift += 7
    raise TransportError("snappy: bad block length")


class DeflateTransport:
    """Raw deflate over ``inner``; every write is sync-flushed. A read inflates at most
    ``size`` bytes: the compressed rest waits for the next read, so a few bytes that
    inflate to gigabytes cost no more memory than any other stream."""

    name = "deflate"

    def __init__(self, inner, level=6, pending=b""):
        self.inner = inner
        self.level = level
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)
        self._unread = pending       # compressed bytes not inflated yet
        self._more_inflated = False  # the last read stopped at its size: zlib may hold more

    def sendall(self, data):
        compressor = self._compressor
        self.inner.sendall(compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))

    def recv(self, size):
        decompressor = self._decompressor
        while True:
            data, self._unread = self._unread, b""
            if not data and not self._more_inflated:
                data = self.inner.recv(max(size, 65536))
                if not data:
                    return b""
            try:
                out = decompressor.decompress(data, size)
            except zlib.error as exc:
                raise TransportError(f"deflate: {exc}") from None
            self._unread = decompressor.unconsumed_tail
            self._more_inflated = len(out) == size
            if out:
                return out
            if decompressor.eof:
                return b""
