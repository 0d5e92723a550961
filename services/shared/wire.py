"""The NSQ TCP wire codec: frames, frame types, client errors, and parsing what clients
send (command lines, sized bodies, NSQ's quoting of bad input in errors; MPUB bodies are
split in services/shared/batches.py).

A frame is ``[4-byte size][4-byte frame type][data]`` where size counts the type and data.
Errors carry NSQ's code (``E_INVALID`` ...) and text; fatal ones close the connection.
"""

import re
import struct

from greensq.services.shared.compiled import use_compiled

FRAME_RESPONSE = 0
FRAME_ERROR = 1
FRAME_MESSAGE = 2

MAGIC_V1 = b"  V1"
MAGIC_V2 = b"  V2"

SIZE = struct.Struct(">i")
FRAME_HEADER = struct.Struct(">ii")
MESSAGE_FRAME_HEADER = struct.Struct(">iiqH16s")

OK = b"OK"
CLOSE_WAIT = b"CLOSE_WAIT"
HEARTBEAT = b"_heartbeat_"


def frame(frame_type, data):
    """One encoded frame."""
    return FRAME_HEADER.pack(len(data) + 4, frame_type) + data


def response_frame(data):
    return frame(FRAME_RESPONSE, data)


def error_frame(data):
    return frame(FRAME_ERROR, data)


OK_FRAME = response_frame(OK)
HEARTBEAT_FRAME = response_frame(HEARTBEAT)
CLOSE_WAIT_FRAME = response_frame(CLOSE_WAIT)


def message_frames(msgs):
    """The frames that deliver ``msgs``, as pieces to send in order (each message's frame
    and message headers, then its body), and their total size in bytes."""
    pack = MESSAGE_FRAME_HEADER.pack
    pieces = []
    append = pieces.append
    size = 0
    for msg in msgs:
        body = msg.body
        append(pack(len(body) + 30, FRAME_MESSAGE, msg.timestamp, msg.attempts, msg.id))
        append(body)
        size += len(body)
    return pieces, size + MESSAGE_FRAME_HEADER.size * len(msgs)


class ClientError(Exception):
    """An error reported to the client in an error frame; the connection stays open."""

    fatal = False

    def __init__(self, code, description=""):
        super().__init__(code, description)
        self.code = code
        self.description = description

    def __str__(self):
        return f"{self.code} {self.description}" if self.description else self.code

    def frame(self):
        # Raw client bytes in the text (surrogate-escaped) go back out unchanged.
        return error_frame(str(self).encode("utf-8", "surrogateescape"))


class FatalClientError(ClientError):
    """An error after which nsqd closes the connection."""

    fatal = True


class ConnectionClosed(Exception):
    """The peer closed the connection."""


class StreamError(Exception):
    """The peer sent bytes that are not NSQ's protocol: a frame of impossible size or
    type, a corrupt or oversized compressed stream. The connection cannot go on."""


class LineTooLong(Exception):
    """A command line longer than the reader allows."""


# A run of FIN commands as consumers send them: "FIN " and a 16-byte message ID per line.
_FIN_RUN = re.compile(rb"(?:FIN [^\r\n]{16}\n)+")


class StreamReader:
    """Buffered reads of command lines and sized bodies from a socket (or a transport:
    anything with ``recv``).

    ``on_idle(client_waiting)`` is called whenever every command already received has been
    handled, which is when replies are worth flushing and batched work is worth handing on.
    ``client_waiting`` is True when nothing more has arrived either, so the reader is about
    to wait for the peer, which in turn is likely waiting for those replies. A source
    that can tell cheaply has ``recv_nowait(n)`` (None when nothing has arrived) and
    ``recv_when_readable(n)``; others, such as TLS, always report False.
    """

    def __init__(self, sock, on_idle=None, chunk_size=65536):
        self.on_idle = on_idle
        self.chunk_size = chunk_size
        self._buf = bytearray()
        self._pos = 0
        self.switch_source(sock)

    def _fill(self):
        recv_nowait = self._recv_nowait
        data = recv_nowait(self.chunk_size) if recv_nowait is not None else None
        if self.on_idle is not None:
            self.on_idle(data is None and recv_nowait is not None)
        if data is None:
            data = (self.sock.recv_when_readable(self.chunk_size) if recv_nowait is not None
                    else self.sock.recv(self.chunk_size))
        if not data:
            raise ConnectionClosed()
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def readline(self, limit):
        """The next line without its ``\\n`` (and a trailing ``\\r``). Like NSQ's
        bufio reader of ``limit`` bytes, the line with its newline must fit in ``limit``."""
        while True:
            end = self._buf.find(b"\n", self._pos, self._pos + limit)
            if end >= 0:
                line = bytes(self._buf[self._pos:end])
                self._pos = end + 1
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) - self._pos >= limit:
                raise LineTooLong()
            self._fill()

    def take_fins(self, ids):
        """Take the run of ``FIN <id>`` lines that starts at the read position and is
        already buffered, appending the IDs to ``ids``: a consumer sends one FIN per
        message, and one match over the run costs less than a ``readline`` each."""
        run = _FIN_RUN.match(self._buf, self._pos)
        if run is not None:
            lines = run.group()
            ids.extend([lines[start + 4:start + 20] for start in range(0, len(lines), 21)])
            self._pos = run.end()

    def readexactly(self, size):
        while len(self._buf) - self._pos < size:
            self._fill()
        data = bytes(self._buf[self._pos:self._pos + size])
        self._pos += size
        return data

    def read_size(self):
        """A big-endian int32, as every NSQ body and count is prefixed."""
        if len(self._buf) - self._pos >= 4:
            self._pos += 4
            return SIZE.unpack_from(self._buf, self._pos - 4)[0]
        return SIZE.unpack(self.readexactly(4))[0]

    def take_buffered(self):
        """The bytes read from the source but not consumed yet; the reader forgets them.
        After an IDENTIFY upgrade they belong to the new (compressed) stream's input."""
        leftover = bytes(self._buf[self._pos:])
        self._buf = bytearray()
        self._pos = 0
        return leftover

    def switch_source(self, source):
        """Read from ``source`` (anything with ``recv``, e.g. a TLS or compressing
        transport) from now on."""
        self.sock = source
        self._recv_nowait = getattr(source, "recv_nowait", None)


# -- parsing what V2 clients send --------------------------------------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f",
               "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def raw_text(raw):
    """Raw bytes as text that encodes back to the same bytes (see ClientError.frame)."""
    return raw.decode("utf-8", "surrogateescape")


def go_quote(raw):
    """``raw`` bytes quoted the way Go's ``%q`` prints them in NSQ's error texts."""
    out = ['"']
    for char in raw_text(raw):
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:      # an invalid UTF-8 byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def parse_digits(raw):
    """NSQ's base-10 parse: digits only (so no sign; empty is 0), else None."""
    if not raw:
        return 0
    return int(raw) if raw.isdigit() and raw.isascii() else None


use_compiled(globals())
