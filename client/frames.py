"""NSQ frames out of a byte stream, without I/O: the client's one frame reader.

nsqd sends ``[4-byte size][4-byte frame type][data]``, the size counting the type and the
data. A :class:`FrameDecoder` is fed whatever bytes arrived, in any cuts, and hands back
the frames they complete. Message frames become :class:`~.message.Message` objects in the
same pass: a consumer decodes hundreds of thousands of them a second, and a
``(type, payload)`` tuple on the way would cost about as much as the message itself.

Nothing here reads a socket or imports an event loop, so the gevent and the asyncio
clients (and any other peer speaking NSQ frames) decode with the same code.
"""

from greensq.services.shared.message import HEADER
from greensq.services.shared.wire import FRAME_ERROR, FRAME_HEADER, FRAME_MESSAGE, FRAME_RESPONSE

from .errors import FrameError
from .message import Message

# The largest frame accepted: nsqd's own limits are far lower (--max-msg-size is 1 MiB
# by default), so a bigger size means a stream out of step, not a big message; waiting
# for its bytes would only grow the buffer.
MAX_FRAME_SIZE = 256 * 1024 * 1024

_MESSAGE_FRAME_MIN = 4 + HEADER.size    # frame type + message header
_FRAME_TYPES = (FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE)


class FrameDecoder:
    """Complete frames from the bytes fed so far; the rest stays buffered."""

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size=MAX_FRAME_SIZE):
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data):
        self._buf += data

    @property
    def buffered(self):
        """How many bytes wait for the rest of their frame."""
        return len(self._buf)

    def take_buffered(self):
        """The bytes not decoded yet, which the decoder forgets: after a transport
        upgrade they belong to the new layer (a compressed stream, say)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_frame(self):
        """The next complete ``(frame_type, payload)``, or None until more is fed."""
        buf = self._buf
        if len(buf) < 8:
            return None
        size, frame_type = FRAME_HEADER.unpack_from(buf, 0)
        self._check(size, frame_type)
        if len(buf) < 4 + size:
            return None
        payload = bytes(buf[8:4 + size])
        del buf[:4 + size]
        return frame_type, payload

    def decode(self, responder=None, address=None):
        """Every complete frame: ``(messages, responses, errors)``, the message frames as
        :class:`Message` objects answering through ``responder``, the payloads of the
        response frames and of the error frames, each list in stream order."""
        buf = self._buf
        unpack_header = FRAME_HEADER.unpack_from
        unpack_message = HEADER.unpack_from
        messages = []
        append = messages.append
        responses = []
        errors = []
        message_type, message_min = FRAME_MESSAGE, _MESSAGE_FRAME_MIN   # locals: faster
        pos, end_of_data = 0, len(buf)
        while end_of_data - pos >= 8:
            size, frame_type = unpack_header(buf, pos)
            end = pos + 4 + size
            if end > end_of_data:
                self._check(size, frame_type)
                break
            if frame_type == message_type and size >= message_min:
                timestamp, attempts, msg_id = unpack_message(buf, pos + 8)
                append(Message(msg_id, bytes(buf[pos + 34:end]), timestamp, attempts,
                               responder, address))
            elif frame_type == FRAME_RESPONSE and size >= 4:
                responses.append(bytes(buf[pos + 8:end]))
            elif frame_type == FRAME_ERROR and size >= 4:
                errors.append(bytes(buf[pos + 8:end]))
            else:
                self._check(size, frame_type)
            pos = end
        if pos:
            del buf[:pos]
        return messages, responses, errors

    def _check(self, size, frame_type):
        if not 4 <= size <= self.max_size or frame_type not in _FRAME_TYPES or (
                frame_type == FRAME_MESSAGE and size < _MESSAGE_FRAME_MIN):
            raise FrameError(f"not an NSQ frame: size {size}, type {frame_type}")

