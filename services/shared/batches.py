"""The message bodies of one published batch: an MPUB body (TCP ``MPUB`` and HTTP
``/mpub?binary=true``) or HTTP ``/mpub``'s lines, split and checked with NSQ's rules.

A batch may hold a million messages (the default 5 MiB ``--max-body-size`` of one-byte
messages): seconds of Python to split, stamp and store, and nothing may hold the hub
that long. So a batch of more than ``SLICE`` messages is checked a piece at a time,
calling ``pause()`` between pieces (the caller yields to the hub there), and comes back
as ``SlicedBodies``: every message checked, as NSQ checks them all before it stores
any, but split into bodies again only a slice at a time, as the topic stores them
(see ``Topic.on_pub_slices``), so memory stays near the body's own size. A smaller
batch is a plain list, split in one pass.
"""

from collections import namedtuple

from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.wire import SIZE, FatalClientError

SLICE = 1024              # messages split, stamped and stored per turn of the hub
LINES_WINDOW = 32 * 1024  # bytes of /mpub lines checked per turn of the hub

# A range of the batch's body: its bytes [start, end), its messages, their bodies' bytes.
Piece = namedtuple("Piece", "start end count size")


class SlicedBodies:
    """The checked bodies of a big batch, split one piece at a time by ``split(piece)``."""

    def __init__(self, pieces, split):
        self.pieces = pieces
        self._split = split
        self.count = sum(piece.count for piece in pieces)

    def __len__(self):
        return self.count

    def slices(self):
        """The bodies, in order, in lists of at most SLICE."""
        for piece in self.pieces:
            bodies = self._split(piece)
            for first in range(0, len(bodies), SLICE):
                yield bodies[first:first + SLICE]

    def bytes_from(self, index):
        """The total size of the bodies from the ``index``-th on."""
        total = seen = 0
        for piece in self.pieces:
            if seen >= index:
                total += piece.size
            elif seen + piece.count > index:
                total += sum(map(len, self._split(piece)[index - seen:]))
            seen += piece.count
        return total


def split_mpub_body(body, opts, prefix="MPUB", pause=None):
    """The messages of an MPUB body (``[count][size][bytes]...``): a list of bodies, or
    with ``pause`` and more than SLICE messages a SlicedBodies; or a FatalClientError
    with NSQ's text. One size read and one slice per message: this runs for every message
    published in a batch."""
    if len(body) < 4:
        raise FatalClientError("E_BAD_BODY", f"{prefix} failed to read message count")
    count = SIZE.unpack_from(body)[0]
    if count <= 0 or count > (opts.max_body_size - 4) // 5:
        raise FatalClientError("E_BAD_BODY", f"{prefix} invalid message count {count}")
    max_size = opts.max_msg_size
    if pause is None or count <= SLICE:
        return _read_messages(body, 4, 0, count, max_size, prefix)[0]
    pieces = []
    pos = 4
    for first in range(0, count, SLICE):
        bodies, end = _read_messages(body, pos, first, min(SLICE, count - first), max_size,
                                     prefix)
        pieces.append(Piece(pos, end, len(bodies), end - pos - 4 * len(bodies)))
        pos = end
        pause()
    return SlicedBodies(pieces, lambda piece: _read_messages(
        body, piece.start, 0, piece.count, max_size, prefix)[0])


def _read_messages(body, pos, first, count, max_size, prefix):
    """The bodies of messages ``first`` to ``first + count - 1``, the first one's size at
    ``pos``, and the position after the last."""
    end = len(body)
    read_size = SIZE.unpack_from
    bodies = []
    append = bodies.append
    for index in range(first, first + count):
        if pos + 4 > end:
            raise FatalClientError(
                "E_BAD_MESSAGE", f"{prefix} failed to read message({index}) body size")
        size = read_size(body, pos)[0]
        pos += 4
        if not 0 < size <= max_size or pos + size > end:
            if size <= 0:
                raise FatalClientError(
                    "E_BAD_MESSAGE", f"{prefix} invalid message({index}) body size {size}")
            if size > max_size:
                raise FatalClientError(
                    "E_BAD_MESSAGE", f"{prefix} message too big {size} > {max_size}")
            raise FatalClientError("E_BAD_MESSAGE", f"{prefix} failed to read message body")
        append(body[pos:pos + size])
        pos += size
    return bodies, pos


class LineTooBig(ValueError):
    """A /mpub line longer than --max-msg-size."""


def split_lines(body, max_size, pause=None):
    """HTTP ``/mpub``'s messages: the body's non-empty lines, as a list, or with
    ``pause`` and more than SLICE lines a SlicedBodies; LineTooBig if one is longer than
    ``max_size``."""
    if pause is None or body.count(b"\n") < SLICE:
        return _lines(body, max_size)
    pieces = []
    start, end = 0, len(body)
    while start < end:
        stop = body.find(b"\n", min(start + LINES_WINDOW, end) - 1) + 1 or end
        lines = _lines(body[start:stop], max_size)
        pieces.append(Piece(start, stop, len(lines), sum(map(len, lines))))
        start = stop
        pause()
    return SlicedBodies(pieces, lambda piece: _lines(body[piece.start:piece.end], max_size))


def _lines(data, max_size):
    lines = [line for line in data.split(b"\n") if line]
    if lines and max(map(len, lines)) > max_size:
        raise LineTooBig()
    return lines


use_compiled(globals())
