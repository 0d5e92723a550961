"""snappy and deflate: the codecs nsqd and the clients share, the IDENTIFY upgrades,
NSQ's stream formats (snappy framing, raw deflate), negotiation rules, pipelined bytes
after IDENTIFY, and round trips with greensq.client, pynsq and gnsq.

The raw-protocol tests encode with python-snappy and zlib, not with greensq's own codecs.
"""

import json
import struct
import zlib

import pytest

from support import FRAME_ERROR, FRAME_RESPONSE, V2Client, gevent_wait_until
from test_tls import run_transport_client

from greensq.services.shared.compression import (
    SNAPPY_MAX_CHUNK_LENGTH, SNAPPY_STREAM_ID, DeflateCodec, SnappyCodec)
from greensq.services.shared.wire import StreamError

snappy = pytest.importorskip("snappy")

OK = (FRAME_RESPONSE, b"OK")


class SnappySock:
    """A client socket speaking the snappy framing format (python-snappy's codec)."""

    def __init__(self, sock, pending=b""):
        self.sock = sock
        self.decompressor = snappy.StreamDecompressor()
        self.compressor = snappy.StreamCompressor()
        self.pending = pending

    def encode(self, data):
        return self.compressor.add_chunk(data)

    def sendall(self, data):
        self.sock.sendall(self.encode(data))

    def recv(self, size):
        while True:
            data, self.pending = (self.pending or self.sock.recv(size)), b""
            if not data:
                return b""
            out = self.decompressor.decompress(data)
            if out:
                return out

    def settimeout(self, value):
        self.sock.settimeout(value)


class DeflateSock(SnappySock):
    """A client socket speaking raw deflate, sync-flushed per write."""

    def __init__(self, sock, level=6, pending=b""):
        self.sock = sock
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self.decompressor = zlib.decompressobj(-15)
        self.pending = pending

    def encode(self, data):
        return self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)


# -- the codecs, without I/O ---------------------------------------------------------

def python_snappy_stream(data):
    return snappy.StreamCompressor().add_chunk(data)


def zlib_raw_stream(data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


CODECS = {"snappy": (SnappyCodec, python_snappy_stream),
          "deflate": (DeflateCodec, zlib_raw_stream)}


@pytest.mark.parametrize("kind", CODECS)
def test_a_bounded_decompress_gives_about_its_limit_and_keeps_the_rest(kind):
    """nsqd's reads: however well the input compresses, one call gives at most its limit
    (snappy: plus the rest of the last whole chunk, at most 64 KiB); the rest waits,
    compressed, and comes out whole in later calls."""
    codec_class, encode = CODECS[kind]
    plain = b"".join(b"line %d of a well compressed stream\n" % i for i in range(200_000))
    wire = encode(plain)
    assert len(wire) < len(plain) // 4
    codec, limit, out = codec_class(), 10_000, []
    for start in range(0, len(wire), 4096):
        out.append(codec.decompress(wire[start:start + 4096], limit))
        while codec.pending and (more := codec.decompress(b"", limit)):
            out.append(more)
    assert b"".join(out) == plain
    assert max(map(len, out)) < limit + (65536 if kind == "snappy" else 1)


@pytest.mark.parametrize("kind", CODECS)
def test_an_unbounded_decompress_gives_everything_the_input_completes(kind):
    codec_class, encode = CODECS[kind]
    plain = b"x" * 300_000 + b"the end"
    wire = encode(plain)
    codec = codec_class()
    assert codec.decompress(wire[:-3]) + codec.decompress(wire[-3:]) == plain


@pytest.mark.parametrize("kind", CODECS)
def test_what_one_codec_compresses_the_other_side_decompresses(kind):
    codec_class, _ = CODECS[kind]
    ours, theirs = codec_class(), codec_class()
    for data in (b"IDENTIFY\n", b"x" * 200_000, b"", b"NOP\n"):
        assert theirs.decompress(ours.compress(data)) == data
    if kind == "snappy":
        assert snappy.StreamDecompressor().decompress(SnappyCodec().compress(b"hi")) == b"hi"
    else:
        assert zlib.decompressobj(-15).decompress(DeflateCodec().compress(b"hi")) == b"hi"


@pytest.mark.parametrize("wire", [
    SNAPPY_STREAM_ID + b"\x80" + (SNAPPY_MAX_CHUNK_LENGTH + 1).to_bytes(3, "little"),
    python_snappy_stream(b"data")[10:],                      # no stream identifier
    SNAPPY_STREAM_ID + b"\x02\x01\x00\x00x",                # an unskippable chunk type
    python_snappy_stream(b"data")[:-1] + b"?",               # a wrong CRC
], ids=["chunk too long", "no stream id", "unskippable", "crc"])
def test_a_snappy_stream_no_peer_sends_raises_stream_error(wire):
    with pytest.raises(StreamError, match="^snappy: "):
        SnappyCodec().decompress(wire)


def test_a_corrupt_deflate_stream_raises_stream_error():
    with pytest.raises(StreamError, match="^deflate: "):
        DeflateCodec().decompress(b"\xff" * 20)


# -- nsqd ---------------------------------------------------------------------------------

def upgrade(client, kind, **fields):
    reply = client.identify(feature_negotiation=True, **{kind: True}, **fields)
    assert reply[kind] is True
    pending = client.frames.take_buffered()
    client.sock = (SnappySock if kind == "snappy" else DeflateSock)(client.sock, pending=pending)
    assert client.read_frame() == OK
    return reply


@pytest.mark.parametrize("kind", ["snappy", "deflate"])
def test_upgrade_then_publish_and_consume_compressed(nsqd, kind):
    client = V2Client(nsqd.tcp_port)
    reply = upgrade(client, kind)
    other = "deflate" if kind == "snappy" else "snappy"
    assert reply[other] is False and reply["tls_v1"] is False
    big = b"compressible " * 20000                     # several snappy chunks
    assert client.pub("t", b"small") == OK
    assert client.mpub("t", [big, b"third"]) == OK
    client.sub("t", "ch", rdy=10)
    assert [client.read_message().body for _ in range(3)] == [b"small", big, b"third"]
    (stats,) = nsqd.channel_stats("t", "ch")["clients"]
    assert stats[kind] is True and stats[other] is False and stats["tls"] is False


@pytest.mark.parametrize("kind", ["snappy", "deflate"])
def test_commands_pipelined_behind_identify_are_decoded_after_the_upgrade(nsqd, kind):
    client = V2Client(nsqd.tcp_port)
    body = json.dumps({"feature_negotiation": True, kind: True}).encode()
    codec = (SnappySock if kind == "snappy" else DeflateSock)(client.sock)
    compressed = codec.encode(b"PUB piped\n" + struct.pack(">i", 6) + b"piped!" + b"NOP\n")
    # IDENTIFY and the compressed commands in one write: nsqd has them buffered together.
    client.sock.sendall(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body + compressed)
    kind_, data = client.read_frame()
    assert kind_ == FRAME_RESPONSE and json.loads(data)[kind] is True
    codec.pending = client.frames.take_buffered()
    client.sock = codec
    assert client.read_frame() == OK            # the upgrade's OK
    assert client.read_frame() == OK            # the pipelined PUB's answer
    assert nsqd.topic_stats("piped")["message_count"] == 1


def test_snappy_and_deflate_together_is_a_fatal_identify_error(nsqd):
    client = V2Client(nsqd.tcp_port)
    client.command("IDENTIFY", json.dumps(
        {"feature_negotiation": True, "snappy": True, "deflate": True}).encode())
    assert client.read_frame() == (
        FRAME_ERROR, b"E_IDENTIFY_FAILED cannot enable both deflate and snappy compression")
    assert client.is_closed()


@pytest.mark.parametrize("flags, requested, expected", [
    ((), 0, 6),                                   # not given: 6
    ((), 9, 6),                                   # default --max-deflate-level=6
    (("--max-deflate-level=9",), 9, 9),
    ((), 1, 1),
    (("--max-deflate-level=3",), 9, 3),           # capped at the flag
    (("--max-deflate-level=3",), 0, 3),
])
def test_deflate_level_negotiation(nsqd_factory, flags, requested, expected):
    nsqd = nsqd_factory(*flags)
    client = V2Client(nsqd.tcp_port)
    reply = upgrade(client, "deflate", deflate_level=requested)
    assert reply["deflate_level"] == expected
    assert reply["max_deflate_level"] == (int(flags[0].rpartition("=")[2]) if flags else 6)
    assert client.pub("t", b"x" * 1000) == OK


@pytest.mark.parametrize("kind", ["snappy", "deflate"])
def test_disabled_by_flag_the_connection_stays_plain(nsqd_factory, kind):
    nsqd = nsqd_factory(f"--{kind}=false")
    client = V2Client(nsqd.tcp_port)
    reply = client.identify(feature_negotiation=True, **{kind: True})
    assert reply[kind] is False
    assert client.pub("t", b"plain") == OK
    client.sub("t", "ch")
    assert nsqd.channel_stats("t", "ch")["clients"][0][kind] is False


def test_a_corrupt_snappy_stream_closes_the_connection(nsqd):
    client = V2Client(nsqd.tcp_port)
    upgrade(client, "snappy")
    frame = bytearray(client.sock.encode(b"PUB t\n" + struct.pack(">i", 1) + b"x"))
    frame[-1] ^= 0xFF                                     # breaks the chunk's CRC
    client.sock.sock.sendall(bytes(frame))
    assert V2Client.is_closed(client)
    assert nsqd.topic_stats("t") is None


def test_a_snappy_chunk_longer_than_go_reads_closes_the_connection(nsqd):
    # Go's reader takes chunks of at most 76,494 bytes (a CRC and the worst-case
    # encoding of 64 KiB); a longer one, skippable or not, ends the stream at once
    # instead of being buffered up to the 16 MiB its length allows.
    client = V2Client(nsqd.tcp_port)
    upgrade(client, "snappy")
    stream_id = b"\xff\x06\x00\x00sNaPpY"
    client.sock.sock.sendall(stream_id + b"\x80" + (76_495).to_bytes(3, "little") + b"x" * 1000)
    assert V2Client.is_closed(client)


@pytest.mark.parametrize("options", [{"snappy": True}, {"deflate": True, "deflate_level": 9}],
                         ids=["snappy", "deflate"])
def test_greensq_client_round_trip(nsqd, options):
    from greensq.client import Consumer, Producer

    address = f"127.0.0.1:{nsqd.tcp_port}"
    received = []
    with Producer([address], **options) as producer:
        assert producer.publish("t", b"one") == b"OK"
        assert producer.multi_publish("t", [b"two" * 5000, b"three"]) == b"OK"
        kind = "snappy" if "snappy" in options else "deflate"
        assert producer.connection.settings[kind] is True
    consumer = Consumer("t", "ch", handler=lambda msg: received.append(msg.body),
                        nsqd_tcp_addresses=[address], max_in_flight=10, **options)
    consumer.start()
    try:
        gevent_wait_until(lambda: len(received) == 3, message="3 compressed messages")
        assert sorted(received) == sorted([b"one", b"two" * 5000, b"three"])
        (stats,) = nsqd.channel_stats("t", "ch")["clients"]
        assert stats[kind] is True
    finally:
        consumer.close()


@pytest.mark.parametrize("client", ["pynsq", "gnsq"])
@pytest.mark.parametrize("kind", ["snappy", "deflate"])
def test_third_party_clients_round_trip(nsqd, client, kind):
    out = run_transport_client(nsqd, client, {kind: True})
    assert all(reply[kind] is True for reply in out["identify"])
    clients = out["stats"]["topics"][0]["channels"][0]["clients"]
    assert clients and all(c[kind] is True for c in clients)
    producers = out["stats"]["producers"]
    assert producers and all(p[kind] is True for p in producers)
