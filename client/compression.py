"""The compressions nsqd can switch a connection to after IDENTIFY, without I/O.

Each codec turns what the client sends into the compressed stream (``compress``) and
what arrives into plain bytes (``decompress``), keeping whatever state the stream needs
between calls, so either client feeds it the bytes its own I/O moved:

* snappy is the snappy *framing* format: a stream identifier, then chunks of
  compressed or stored data, each with a masked CRC-32C of its data;
* deflate is raw deflate (no zlib header), sync-flushed after every write so that nsqd
  can decode everything sent so far.

Corrupt input raises :class:`~.errors.FrameError`.
"""

import zlib

from greensq.services.shared.deferred import deferred_import

from .errors import FrameError

cramjam = deferred_import("cramjam")   # loaded when a connection first asks for snappy

SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
# A chunk: header, CRC and at most 64 KiB of data, compressed at worst a sixth bigger.
_SNAPPY_MAX_CHUNK = 4 + 4 + 65536 + 65536 // 6 + 32


class SnappyCodec:
    """The snappy framing format, both ways."""

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

    def decompress(self, data):
        """The plain bytes of every chunk that ``data`` completes."""
        buf = self._in
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 4:
            length = int.from_bytes(buf[pos + 1:pos + 4], "little")
            if length > _SNAPPY_MAX_CHUNK:
                raise FrameError(f"snappy: chunk of {length} bytes")
            if pos + 4 + length > end:
                break
            kind = buf[pos]
            if kind == 0xFF:
                if buf[pos:pos + 4 + length] != SNAPPY_STREAM_ID:
                    raise FrameError("snappy: bad stream identifier")
                self._seen_stream_id = True
            elif not self._seen_stream_id:
                raise FrameError("snappy: missing stream identifier")
            elif 0x02 <= kind <= 0x7F:
                raise FrameError(f"snappy: unskippable chunk type {kind:#x}")
            pos += 4 + length
        if not pos:
            return b""
        chunks = bytes(buf[:pos])
        del buf[:pos]
        if not chunks.startswith(SNAPPY_STREAM_ID):
            chunks = SNAPPY_STREAM_ID + chunks
        try:   # cramjam checks every chunk's CRC-32C
            return bytes(self._snappy.decompress(chunks))
        except Exception as exc:
            raise FrameError(f"snappy: {exc}") from None


class DeflateCodec:
    """Raw deflate, both ways; every ``compress`` is sync-flushed."""

    def __init__(self, level=6):
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._decompressor = zlib.decompressobj(-15)

    def compress(self, data):
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def decompress(self, data):
        try:
            return self._decompressor.decompress(data)
        except zlib.error as exc:
            raise FrameError(f"deflate: {exc}") from None


def codec_for(settings):
    """The codec nsqd's IDENTIFY answer switched on, or None."""
    if settings.get("snappy"):
        return SnappyCodec()
    if settings.get("deflate"):
        return DeflateCodec(settings.get("deflate_level") or 6)
    return None
