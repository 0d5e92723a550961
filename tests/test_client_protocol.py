"""greensq.client's protocol core without I/O (the frame decoder it shares with nsqd,
the handshake's steps, answers matched to requests), and what both clients do when
nsqd's bytes are not NSQ frames: the connection closes with FrameError instead of
hanging."""

import asyncio
import json
import socket
import struct
import threading

import pytest

from support import receive_identify

from greensq.client import aio
from greensq.client.errors import FrameError
from greensq.client.protocol import START_TLS, ClientProtocol, identify_options
from greensq.services.shared.compression import DeflateCodec
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.wire import (
    FRAME_MESSAGE, FRAME_RESPONSE, HEARTBEAT_FRAME, OK_FRAME, StreamError, error_frame,
    frame, response_frame)

MESSAGE = frame(FRAME_MESSAGE, struct.pack(">qH16s", 7, 1, b"0123456789abcdef") + b"body")
STREAM = (OK_FRAME + MESSAGE + HEARTBEAT_FRAME + error_frame(b"E_FIN_FAILED nope")
          + MESSAGE + response_frame(b"CLOSE_WAIT"))


def decode_in_pieces(data, cut):
    decoder = FrameDecoder()
    messages, responses, errors = [], [], []
    for start in range(0, len(data), cut):
        decoder.feed(data[start:start + cut])
        more = decoder.decode()
        messages += more[0]
        responses += more[1]
        errors += more[2]
    assert decoder.buffered == 0
    return messages, responses, errors


def test_frames_decode_the_same_whatever_the_cuts_in_the_stream():
    whole = decode_in_pieces(STREAM, len(STREAM))
    assert whole == ([(b"0123456789abcdef", b"body", 7, 1)] * 2,
                     [b"OK", b"_heartbeat_", b"CLOSE_WAIT"], [b"E_FIN_FAILED nope"])
    for cut in (1, 2, 3, 7, 8, 9, 33):
        assert decode_in_pieces(STREAM, cut) == whole


NOT_FRAMES = [
    struct.pack(">ii", -5, FRAME_RESPONSE),                     # negative size
    struct.pack(">ii", 3, FRAME_RESPONSE),                      # no room for the type
    struct.pack(">ii", 1 << 30, FRAME_MESSAGE),                 # over the bound
    struct.pack(">ii", 10, FRAME_MESSAGE) + b"x" * 6,           # a message without header
    struct.pack(">ii", 6, 7) + b"OK",                           # an unknown frame type
]


@pytest.mark.parametrize("bad", NOT_FRAMES)
def test_bytes_that_are_not_frames_raise_stream_error(bad):
    decoder = FrameDecoder()
    decoder.feed(OK_FRAME + bad)
    with pytest.raises(StreamError):
        decoder.decode()
    decoder = FrameDecoder()
    decoder.feed(bad)
    with pytest.raises(StreamError):
        decoder.next_frame()


@pytest.mark.parametrize("bad", NOT_FRAMES)
def test_the_client_protocol_raises_frame_error_naming_nsqd(bad):
    protocol, _ = new_protocol()
    protocol.initiate()
    with pytest.raises(FrameError, match="^nsqd:4150: not an NSQ frame"):
        protocol.receive_handshake(bad)
    protocol, _ = new_protocol()
    protocol.initiate()
    protocol.receive_handshake(response_frame(b"OK"))
    with pytest.raises(FrameError, match="^nsqd:4150: not an NSQ frame"):
        protocol.receive(OK_FRAME + bad)


def test_messages_are_made_by_the_class_given_with_its_responder_and_address():
    made = []
    decoder = FrameDecoder(lambda *fields: made.append(fields) or len(made),
                           responder="conn", address="nsqd:4150")
    decoder.feed(MESSAGE * 2)
    assert decoder.decode() == ([1, 2], [], [])
    assert made == [(b"0123456789abcdef", b"body", 7, 1, "conn", "nsqd:4150")] * 2


def test_v1_replies_are_size_prefixed_and_bounded():
    decoder = FrameDecoder(max_size=10)
    stream = struct.pack(">i", 2) + b"OK" + struct.pack(">i", 0) + struct.pack(">i", 10)
    for byte in range(len(stream)):
        decoder.feed(stream[byte:byte + 1])
    assert [decoder.next_sized(), decoder.next_sized(), decoder.next_sized()] == [
        b"OK", b"", None]
    decoder.feed(b"0123456789" + struct.pack(">i", 11))
    assert decoder.next_sized() == b"0123456789"
    with pytest.raises(StreamError, match=r"response body size \(11\) is greater than limit "
                                          r"\(10\)"):
        decoder.next_sized()
    negative = FrameDecoder()
    negative.feed(struct.pack(">i", -1))
    with pytest.raises(StreamError):
        negative.next_sized()


def new_protocol(**options):
    answers = []
    protocol = ClientProtocol(identify_options(**options),
                              resolve=lambda token, data: answers.append((token, data)),
                              reject=lambda token, error: answers.append((token, error)),
                              on_error=lambda error: answers.append((None, error)),
                              auth_secret="secret", address="nsqd:4150")
    return protocol, answers


def test_answers_go_to_the_requests_in_order_and_stray_errors_to_no_request():
    protocol, answers = new_protocol()
    protocol.initiate()
    protocol.receive_handshake(response_frame(json.dumps({"max_rdy_count": 2500}).encode()))
    assert protocol.ready and protocol.settings == {"max_rdy_count": 2500}
    protocol.expect_answer("sub")
    protocol.expect_answer("pub")
    messages, reply = protocol.receive(STREAM[:len(OK_FRAME) + len(MESSAGE) + 30])
    assert len(messages) == 1 and reply == b"NOP\n"
    messages, reply = protocol.receive(STREAM[len(OK_FRAME) + len(MESSAGE) + 30:])
    assert len(messages) == 1 and reply == b""
    assert [(token, data) for token, data in answers if token] == [
        ("sub", b"OK"), ("pub", b"CLOSE_WAIT")]
    (stray,) = [error for token, error in answers if token is None]
    assert stray.code == "E_FIN_FAILED" and not stray.fatal
    with pytest.raises(FrameError):      # an answer when no request waits
        protocol.receive(OK_FRAME)


def test_the_handshake_upgrades_in_nsqds_order_then_authenticates():
    protocol, _ = new_protocol(tls_v1=True, deflate=True, deflate_level=3)
    hello = protocol.initiate()
    assert hello.startswith(b"  V2IDENTIFY\n")
    settings = {"tls_v1": True, "deflate": True, "deflate_level": 3, "auth_required": True}
    assert protocol.receive_handshake(response_frame(json.dumps(settings).encode())) == [
        START_TLS]
    protocol.tls_started()
    # nsqd's deflate stream starts right after its plain OK, here in the same read.
    nsqd_deflate = DeflateCodec(3)
    actions = protocol.receive_handshake(OK_FRAME + nsqd_deflate.compress(OK_FRAME))
    (auth,) = actions
    assert auth == b"AUTH\n" + struct.pack(">i", 6) + b"secret"
    assert DeflateCodec(3).decompress(protocol.outgoing(auth)) == auth
    assert not protocol.ready
    identity = json.dumps({"identity": "me", "permission_count": 1}).encode()
    assert protocol.receive_handshake(nsqd_deflate.compress(response_frame(identity))) == []
    assert protocol.ready and protocol.auth_info["identity"] == "me"


def test_nsqd_refusing_identify_raises_its_typed_error():
    protocol, _ = new_protocol()
    protocol.initiate()
    with pytest.raises(Exception) as info:
        protocol.receive_handshake(error_frame(b"E_BAD_BODY IDENTIFY invalid body"))
    assert info.value.code == "E_BAD_BODY"


class GarbagePeer:
    """A TCP peer that answers IDENTIFY like nsqd, then sends a frame of size -4 (which
    would leave a reader that trusts it where it is, forever)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.listener.accept()
        with conn:
            receive_identify(conn)
            conn.sendall(OK_FRAME + struct.pack(">ii", -4, FRAME_RESPONSE))
            conn.settimeout(30)
            while conn.recv(65536):            # until the client closes
                pass

    def close(self):
        self.listener.close()
        self.thread.join(30)


def test_the_gevent_client_closes_a_connection_that_sends_garbage():
    from gevent.event import Event

    from greensq.client import Connection

    peer = GarbagePeer()
    closed = Event()
    conn = Connection(peer.address, on_close=lambda c: closed.set())
    conn.connect()
    assert closed.wait(10), "the reader kept on"
    assert conn.closed
    peer.close()


def test_the_asyncio_client_closes_a_connection_that_sends_garbage():
    peer = GarbagePeer()

    async def scenario():
        conn = aio.Connection(peer.address)
        await conn.connect()
        async with asyncio.timeout(10):
            await conn.closed_event.wait()

    asyncio.run(scenario())
    peer.close()
