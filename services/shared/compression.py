"""The compressions IDENTIFY can switch an NSQ connection to, without I/O: the one codec
of each for nsqd's transports (transport.py) and both clients.

Each codec turns what its side sends into the compressed stream (``compress``) and what
arrives into plain bytes (``decompress``), keeping the stream's state between calls:

* snappy is the snappy *framing* format: a stream identifier, then chunks of compressed
  or stored data, each with a masked CRC-32C of its data;
* deflate is raw deflate (no zlib header), sync-flushed after every write so that the
  peer can decode everything sent so far.

``decompress(data, limit)`` bounds what one call gives: nsqd asks for no more than it
reads at once, so a few bytes that inflate to gigabytes cost it no more memory than any
other stream; the rest waits, compressed, for the next call (``pending`` says so). A
client asks for everything (``limit`` 0). Corrupt input raises
:class:`~.wire.StreamError`. cramjam is loaded when a connection first asks for snappy.
"""

import zlib

from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.deferred import deferred_import
from greensq.services.shared.wire import StreamError

cramjam = deferred_import("cramjam")

SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
# The longest chunk Go's snappy reader takes: a CRC and the worst-case encoding of a
# 64 KiB block. A longer one ends the stream instead of being buffered.
SNAPPY_MAX_CHUNK_LENGTH = 4 + 32 + 65536 + 65536 // 6


class SnappyCodec:
    """The snappy framing format, both ways. ``decompress`` decodes whole chunks only,
    and with a ``limit`` no more of them than it takes to give that many bytes."""

    name = "snappy"
    ended = False   # the framing format has no end: the connection's end is the stream's

    def __init__(self):
        snappy = cramjam.snappy
        self._snappy = snappy
        self._compressor = snappy.Compressor()
        self._in = bytearray()
        self._seen_stream_id = False

    def compress(self, data):
        compressor = self._compressor
        compressor.compress(data)
        return bytes(compressor.flush())

    @property
    def pending(self):
        """Whether bytes fed wait to be decoded (whole chunks, or part of one)."""
        return bool(self._in)

    def decompress(self, data=b"", limit=0):
        """Feed ``data``; the plain bytes of the complete chunks at the head of what
        was fed, all of them or (``limit``) until they give ``limit`` bytes or more."""
        buf = self._in
        buf += data
        pos, end = 0, len(buf)
        decoded, limit = 0, limit or float("inf")
        while end - pos >= 4 and decoded < limit:
            length = int.from_bytes(buf[pos + 1:pos + 4], "little")
            if length > SNAPPY_MAX_CHUNK_LENGTH:
                raise StreamError(f"snappy: chunk of {length} bytes is too long")
            if pos + 4 + length > end:
                break
            kind = buf[pos]
            if kind == 0xFF:
                if buf[pos:pos + 4 + length] != SNAPPY_STREAM_ID:
                    raise StreamError("snappy: bad stream identifier")
                self._seen_stream_id = True
            elif not self._seen_stream_id:
                raise StreamError("snappy: missing stream identifier")
            elif kind == 0x00:
                decoded += _snappy_block_length(buf, pos + 8, pos + 4 + length)
            elif kind == 0x01:
                decoded += length - 4
            elif kind <= 0x7F:
                raise StreamError(f"snappy: unskippable chunk type {kind:#x}")
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
            raise StreamError(f"snappy: {exc}") from None


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
    raise StreamError("snappy: bad block length")


class DeflateCodec:
    """Raw deflate, both ways; every ``compress`` is sync-flushed. With a ``limit``,
    ``decompress`` inflates at most that many bytes."""

    name = "deflate"

    def __init__(self, level=6):
        self.level = level
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)
        self._unread = b""           # compressed bytes not inflated yet
        self._more_inflated = False  # the last call stopped at its limit: zlib may hold more

    def compress(self, data):
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    @property
    def pending(self):
        """Whether a call without new bytes may give more."""
        return bool(self._unread) or self._more_inflated

    @property
    def ended(self):
        """Whether the peer ended the deflate stream (nothing more will inflate)."""
        return self._decompressor.eof

    def decompress(self, data=b"", limit=0):
        """Feed ``data``; the bytes it inflates to, at most ``limit`` of them (0: all)."""
        if self._unread:
            data, self._unread = self._unread + data, b""
        decompressor = self._decompressor
        try:
            out = decompressor.decompress(data, limit)
        except zlib.error as exc:
            raise StreamError(f"deflate: {exc}") from None
        if limit:
            self._unread = decompressor.unconsumed_tail
            self._more_inflated = len(out) == limit
        return out


use_compiled(globals())
