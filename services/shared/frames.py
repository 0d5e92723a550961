"""NSQ's size-prefixed frames out of a byte stream, without I/O: the one frame reader of
the clients, nsqd's connections to nsqlookupd, the benchmarks and the tests' raw clients.

Every answer NSQ sends starts with its size, a big-endian int32:

* nsqd to a V2 client: ``[size][frame type][data]``, the size counting the type and the
  data; a message frame's data is ``[timestamp][attempts][ID][body]`` (message.py);
* nsqlookupd to an nsqd (V1): ``[size][data]``, every reply, error or not.

A :class:`FrameDecoder` is fed whatever bytes arrived, in any cuts, and hands back what
they complete; the rest stays buffered. A size or type no peer sends (negative, past the
bound, unknown) raises :class:`~.wire.StreamError`: the stream is out of step, and
waiting for the bytes such a size promises would only grow the buffer.
"""

from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.message import HEADER
from greensq.services.shared.wire import (
    FRAME_ERROR, FRAME_HEADER, FRAME_MESSAGE, FRAME_RESPONSE, SIZE, StreamError)

# The largest frame accepted: nsqd's own limits are far lower (--max-msg-size is 1 MiB by
# default), so a bigger size means a stream out of step, not a big message.
MAX_FRAME_SIZE = 256 * 1024 * 1024

_MESSAGE_FRAME_MIN = 4 + HEADER.size    # frame type + message header
_MESSAGE_BODY_AT = 8 + HEADER.size      # size, frame type, message header
_FRAME_TYPES = (FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE)


def message_fields(msg_id, body, timestamp, attempts, responder=None, address=None):
    """A message frame's fields as they are: :class:`FrameDecoder`'s default ``message``."""
    return msg_id, body, timestamp, attempts


class FrameDecoder:
    """Complete frames from the bytes fed so far.

    ``message`` makes what :meth:`decode` gives for each message frame, called as
    ``message(id, body, timestamp, attempts, responder, address)``: a client passes its
    message class, the connection that answers for the messages (FIN, REQ, TOUCH) and
    nsqd's address. Building them here, in the loop that splits the frames, spares a
    consumer an intermediate tuple per message (and two fixed arguments, not a
    ``*context``, keep the call as cheap as a direct one).
    """

    __slots__ = ("_buf", "max_size", "_message", "_responder", "_address")

    def __init__(self, message=message_fields, responder=None, address=None,
                 max_size=MAX_FRAME_SIZE):
        self._buf = bytearray()
        self._message = message
        self._responder = responder
        self._address = address
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

    def next_sized(self):
        """The data of the next complete ``[size][data]`` (a V1 reply), or None until
        more is fed."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (size,) = SIZE.unpack_from(buf, 0)
        if size > self.max_size:
            raise StreamError(
                f"response body size ({size}) is greater than limit ({self.max_size})")
        if size < 0:
            raise StreamError(f"response body size ({size}) is negative")
        if len(buf) < 4 + size:
            return None
        data = bytes(buf[4:4 + size])
        del buf[:4 + size]
        return data

    def next_frame(self):
        """The next complete V2 ``(frame_type, data)``, or None until more is fed."""
        buf = self._buf
        if len(buf) < 8:
            return None
        size, frame_type = FRAME_HEADER.unpack_from(buf, 0)
        self._check(size, frame_type)
        if len(buf) < 4 + size:
            return None
        data = bytes(buf[8:4 + size])
        del buf[:4 + size]
        return frame_type, data

    def decode(self):
        """Every complete V2 frame: ``(messages, responses, errors)``, the message frames
        made by ``message``, the data of the response frames and of the error frames,
        each list in stream order."""
        buf = self._buf
        unpack_header = FRAME_HEADER.unpack_from
        unpack_message = HEADER.unpack_from
        message, responder, address = self._message, self._responder, self._address
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
                append(message(msg_id, bytes(buf[pos + _MESSAGE_BODY_AT:end]), timestamp,
                               attempts, responder, address))
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
            raise StreamError(f"not an NSQ frame: size {size}, type {frame_type}")


use_compiled(globals())
