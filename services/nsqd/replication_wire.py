"""The replication protocol's frames (README, "The replication protocol"), without I/O.

A primary connects to its replica's TCP port with the magic ``"  R1"`` and sends
``[4-byte size][1-byte type][data]`` frames, the size counting the type and the data; the
replica answers with frames of the same shape. Names are one length byte and the name
(a topic, then a channel, empty for the topic's own queue); message records are
go-diskqueue's, a 4-byte length and NSQ's encoding (services/shared/message.py), so a
disk queue takes them as they are (``read_put`` leaves them encoded); IDs are NSQ's 16
bytes.

Encoding runs on the primary for every published batch, decoding (when the copy keeps
the messages in memory) on the replica: both are one pass over the messages, a
``struct`` call each. Compiled (services/shared/compiled.py).
"""

import struct

import ujson

from greensq.services.shared import json_input
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.message import HEADER_SIZE, ID_LENGTH, Message

MAGIC_R1 = b"  R1"

# Frame types, primary to replica.
HELLO = b"H"
RECONCILED = b"C"
SNAPSHOT_BEGIN = b"S"
SNAPSHOT_END = b"Z"
PUT = b"P"
HANDED_OVER = b"T"
DELIVERED = b"D"
FINISHED = b"F"
DEFERRED = b"R"
EMPTIED = b"E"
DELETED = b"X"
PING = b"K"
GOODBYE = b"B"
# Replica to primary.
WELCOME = b"W"
TAKEN = b"I"
ACK = b"A"
REFUSED = b"N"

# Flags of PUT and DEFERRED frames.
SNAPSHOT_PART = 1      # part of the state sent when the link connects
WHOLE_RECORDS = 2      # DEFERRED: whole records (a DPUB), not only ID and attempts

HEADER = struct.Struct(">IB")       # frame size (type + data), type
RECORD = struct.Struct(">iqH16s")   # record length, then NSQ's message header
PUT_FIELDS = struct.Struct(">BI")   # flags, DPUB delay (ms)
DUE = struct.Struct(">qH16s")       # due (ns since the epoch), attempts, ID
DUE_TIME = struct.Struct(">q")
SEQUENCE = struct.Struct(">Q")

# A put of more than this many bytes of records is sent as several frames.
PUT_CHUNK = 1 << 20
# The largest frame a replica reads: puts are cut at PUT_CHUNK, so only a single message
# near its 64 MiB bound could come close.
MAX_FRAME = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A frame that does not parse: the connection is out of step and is closed."""


# -- encoding ------------------------------------------------------------------------------

def frame(kind, data=b""):
    return HEADER.pack(len(data) + 1, kind[0]) + data


def names(topic, channel=None):
    """The topic and channel (None: the topic's own queue) as a frame's names prefix."""
    topic = topic.encode()
    channel = channel.encode() if channel else b""
    return bytes((len(topic),)) + topic + bytes((len(channel),)) + channel


def json_frame(kind, document):
    return frame(kind, ujson.dumps(document).encode())


def put_frames(prefix, msgs, flags=0):
    """The PUT frames for ``msgs`` (a queue's ``prefix`` from ``names``), cut every
    PUT_CHUNK bytes; the DPUB delay is the batch's (its first message's)."""
    pack = RECORD.pack
    head = prefix + PUT_FIELDS.pack(flags, msgs[0].defer_ms)
    frames = []
    pieces = []
    size = 0
    for msg in msgs:
        body = msg.body
        pieces += (pack(HEADER_SIZE + len(body), msg.timestamp, msg.attempts, msg.id), body)
        size += len(body) + 30
        if size >= PUT_CHUNK:
            frames.append(_joined(PUT, head, pieces, size))
            pieces, size = [], 0
    if pieces:
        frames.append(_joined(PUT, head, pieces, size))
    return frames


def _joined(kind, head, pieces, size):
    return b"".join([HEADER.pack(len(head) + size + 1, kind[0]), head, *pieces])


def ids_frame(kind, prefix, msgs):
    """A DELIVERED or FINISHED frame: the IDs of ``msgs``."""
    ids = b"".join([msg.id for msg in msgs])
    return b"".join([HEADER.pack(len(prefix) + len(ids) + 1, kind[0]), prefix, ids])


def handed_over_frame(prefix, channel_names, msgs):
    """HANDED_OVER: a topic's backlog (``msgs``) moved to ``channel_names``."""
    listed = b"".join([bytes((len(name),)) + name for name in
                       [channel.encode() for channel in channel_names]])
    ids = b"".join([msg.id for msg in msgs])
    return frame(HANDED_OVER, prefix + bytes((len(channel_names),)) + listed + ids)


def deferred_frame(prefix, entries, flags=0):
    """DEFERRED for ``entries`` of (message, due in ns since the epoch): with
    WHOLE_RECORDS each carries its whole record, else its attempts and ID."""
    pieces = [prefix, bytes((flags,))]
    if flags & WHOLE_RECORDS:
        pack = RECORD.pack
        for msg, due in entries:
            body = msg.body
            pieces += (DUE_TIME.pack(due),
                       pack(HEADER_SIZE + len(body), msg.timestamp, msg.attempts, msg.id),
                       body)
    else:
        pieces += [DUE.pack(due, msg.attempts, msg.id) for msg, due in entries]
    data = b"".join(pieces)
    return HEADER.pack(len(data) + 1, DEFERRED[0]) + data


def sequence_frame(kind, number):
    return frame(kind, SEQUENCE.pack(number))


# -- decoding ------------------------------------------------------------------------------

def split_frame(data):
    """A frame's data as ``next_sized`` returns it (type, then the rest): (type, rest)."""
    if not data:
        raise ProtocolError("empty frame")
    return data[:1], memoryview(data)[1:]


def read_names(data):
    """(topic, channel or None, offset past the names) from a frame's data."""
    try:
        size = data[0]
        topic = bytes(data[1:1 + size]).decode()
        at = 1 + size
        size = data[at]
        channel = bytes(data[at + 1:at + 1 + size]).decode() if size else None
    except (IndexError, UnicodeDecodeError):
        raise ProtocolError("bad names") from None
    if not topic:
        raise ProtocolError("no topic")
    return topic, channel, at + 1 + size


def read_put(data, at):
    """(flags, DPUB delay in ms, records) of a PUT frame's data after its names: the
    records as they came (``read_records`` makes them messages; a disk queue can take
    them as they are)."""
    try:
        flags, defer_ms = PUT_FIELDS.unpack_from(data, at)
    except struct.error:
        raise ProtocolError("short put") from None
    return flags, defer_ms, data[at + PUT_FIELDS.size:]


def read_records(data, at=0, end=None):
    """The messages of the records from ``at`` to ``end`` (the end of ``data``)."""
    end = len(data) if end is None else end
    unpack = RECORD.unpack_from
    msgs = []
    append = msgs.append
    try:
        while at < end:
            size, timestamp, attempts, msg_id = unpack(data, at)
            stop = at + 4 + size
            if size < HEADER_SIZE or stop > end:
                raise ProtocolError("bad record")
            append(Message(bytes(msg_id), bytes(data[at + 30:stop]), timestamp, attempts))
            at = stop
    except struct.error:
        raise ProtocolError("short record") from None
    return msgs


def read_ids(data, at):
    """The IDs from ``at`` to the end of a frame's data."""
    rest = bytes(data[at:])
    if len(rest) % ID_LENGTH:
        raise ProtocolError("bad IDs")
    return [rest[i:i + ID_LENGTH] for i in range(0, len(rest), ID_LENGTH)]


def read_handed_over(data, at):
    """(channel names, IDs) of a HANDED_OVER frame's data after its names."""
    try:
        count = data[at]
        at += 1
        channels = []
        for _ in range(count):
            size = data[at]
            channels.append(bytes(data[at + 1:at + 1 + size]).decode())
            at += 1 + size
    except (IndexError, UnicodeDecodeError):
        raise ProtocolError("bad channel names") from None
    return channels, read_ids(data, at)


def read_deferred(data, at):
    """(flags, [(message or (ID, attempts), due ns)]) of a DEFERRED frame's data."""
    try:
        flags = data[at]
    except IndexError:
        raise ProtocolError("short deferred") from None
    at += 1
    entries = []
    try:
        if flags & WHOLE_RECORDS:
            while at < len(data):
                (due,) = DUE_TIME.unpack_from(data, at)
                (size,) = struct.unpack_from(">i", data, at + 8)
                record_end = at + 12 + size
                msgs = read_records(data, at + 8, record_end)
                entries.append((msgs[0], due))
                at = record_end
        else:
            if (len(data) - at) % DUE.size:
                raise ProtocolError("bad deferred entries")
            for offset in range(at, len(data), DUE.size):
                due, attempts, msg_id = DUE.unpack_from(data, offset)
                entries.append(((bytes(msg_id), attempts), due))
    except (struct.error, IndexError):
        raise ProtocolError("short deferred") from None
    return flags, entries


def read_sequence(data):
    try:
        return SEQUENCE.unpack_from(data, 0)[0]
    except struct.error:
        raise ProtocolError("short sequence") from None


def read_json(data):
    try:
        document = json_input.loads(bytes(data))
    except ValueError:
        raise ProtocolError("bad JSON") from None
    if not isinstance(document, dict):
        raise ProtocolError("JSON is not an object")
    return document


use_compiled(globals())
