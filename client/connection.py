"""One TCP connection to an nsqd: handshake, a frame reader, a batching writer.

Layers, bottom up:

* a **transport** (:class:`SocketTransport`) moves bytes over a gevent socket. TLS,
  snappy and deflate are transforms of this byte stream that nsqd switches on after
  IDENTIFY (``tls_v1``, ``snappy``, ``deflate``): the handshake applies them before the
  reader and writer greenlets start (TLS wraps the socket; snappy and deflate are the
  :mod:`greensq.services.transport` codecs nsqd uses too), leaving the frame code
  untouched. With ``auth_secret``, AUTH is one more request after
  IDENTIFY (sent only when nsqd says ``auth_required``).
* the **frame codec** is the server's (:mod:`greensq.services.wire`): the reader greenlet
  cuts the byte stream into frames and dispatches them;
* the **command layer** queues command lines; a writer greenlet sends everything queued
  since it last ran in one ``sendall``, so many publishes or FINs issued by many
  greenlets in the same loop iteration cost one system call.

Requests that nsqd answers (IDENTIFY, SUB, PUB, MPUB, DPUB, CLS) are matched to their
answers in FIFO order, which is what makes pipelining possible: nsqd answers commands in
the order it received them. FIN, REQ, TOUCH, RDY and NOP get no answer; their failures
(``E_FIN_FAILED`` ...) arrive as non-fatal errors that match no request.

Only gevent's own sockets are used, so nothing here needs monkey-patching.
"""

import collections
import json
import logging
import socket as stdlib_socket

import gevent
from gevent import socket
from gevent.event import AsyncResult, Event

from greensq.services import transport as codecs
from greensq.services import wire
from greensq.services.message import HEADER
from greensq.services.version import __version__

from .errors import AuthFirstError, ConnectionClosedError, error_from_frame
from .message import Message

log = logging.getLogger("greensq.client")

USER_AGENT = f"greensq/{__version__}"

_FRAME_HEADER = wire.FRAME_HEADER
_MESSAGE_HEADER = HEADER
_SIZE = wire.SIZE
_HEARTBEAT = wire.HEARTBEAT
FRAME_RESPONSE, FRAME_ERROR, FRAME_MESSAGE = (
    wire.FRAME_RESPONSE, wire.FRAME_ERROR, wire.FRAME_MESSAGE)


def parse_address(address):
    """``"host:port"`` or ``(host, port)`` → ``(host, port)``."""
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        return host or "127.0.0.1", int(port)
    host, port = address
    return host, int(port)


def encode_command(name, *params, body=None):
    """One command line (``NAME p1 p2\\n``) with an optional size-prefixed body."""
    parts = [name if isinstance(name, bytes) else name.encode()]
    for param in params:
        raw = param if isinstance(param, bytes) else str(param).encode()
        # A space or newline would split the command line and desynchronise the stream;
        # every other bad name is left for nsqd to reject with its typed error.
        if not raw or b" " in raw or b"\n" in raw:
            raise ValueError(f"invalid command parameter {param!r}")
        parts.append(raw)
    line = b" ".join(parts) + b"\n"
    if body is None:
        return line
    return line + _SIZE.pack(len(body)) + body


def encode_mpub_body(bodies):
    """The MPUB body: ``[count]`` then ``[size][bytes]`` per message."""
    pieces = [_SIZE.pack(len(bodies))]
    for body in bodies:
        pieces.append(_SIZE.pack(len(body)))
        pieces.append(body)
    return b"".join(pieces)


class SocketTransport:
    """Bytes to and from a connected gevent socket.

    TLS, snappy and deflate upgrades will wrap this transport with one of the same
    three methods; the connection never touches the socket directly.
    """

    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        self.sock.sendall(data)

    sendall = send

    def recv(self, size):
        return self.sock.recv(size)

    def close(self):
        try:
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class CodecTransport:
    """A compressing codec (snappy / deflate) over a socket transport."""

    def __init__(self, base, codec):
        self.base = base
        self.codec = codec
        self.sock = base.sock

    def send(self, data):
        self.codec.sendall(data)

    sendall = send

    def recv(self, size):
        return self.codec.recv(size)

    def close(self):
        self.base.close()


def tls_client_context(ca_file=None, verify=True, cert_file=None, key_file=None):
    """A gevent TLS context for ``tls_v1``: verify nsqd against ``ca_file`` (or the
    system CAs) unless ``verify`` is False; ``cert_file``/``key_file`` for mutual TLS."""
    from gevent import ssl as gevent_ssl

    # gevent's create_default_context() returns a stdlib (blocking) context: build it.
    context = gevent_ssl.SSLContext(gevent_ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs()
    if not verify:
        context.check_hostname = False
        context.verify_mode = gevent_ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def _read_frame(transport, buf):
    """One ``(frame_type, payload)`` read through ``transport``; extra bytes stay in
    ``buf`` (a bytearray)."""
    while True:
        if len(buf) >= 8:
            size, frame_type = _FRAME_HEADER.unpack_from(buf, 0)
            if len(buf) >= 4 + size:
                payload = bytes(buf[8:4 + size])
                del buf[:4 + size]
                return frame_type, payload
        data = transport.recv(65536)
        if not data:
            raise ConnectionClosedError("closed by nsqd during IDENTIFY")
        buf += data


class Connection:
    """A connection to one nsqd.

    Callbacks (all optional, called in the reader greenlet, must not block long):

    * ``on_messages(conn, messages)``: the message frames of one read from the socket,
      as a list of :class:`Message` whose responses go to ``conn.responder`` (a burst
      at a time, so per-burst bookkeeping is paid once);
    * ``on_error(conn, error)``: an error frame that answered no request (FIN/REQ/TOUCH
      failures), or a fatal one;
    * ``on_close(conn)``: the connection is gone (once, whatever the reason);
    * ``on_command(conn, line)``: every command line queued for sending (a hook for
      instrumentation and tests; costs nothing when unset).

    IDENTIFY options are NSQ's, in NSQ's units converted from seconds where they are
    durations: ``heartbeat_interval``, ``output_buffer_timeout``, ``msg_timeout`` in
    seconds; ``output_buffer_size`` in bytes; ``sample_rate`` 0-99.
    """

    def __init__(self, address, *, heartbeat_interval=30.0, output_buffer_size=None,
                 output_buffer_timeout=None, msg_timeout=None, sample_rate=None,
                 client_id=None, hostname=None, user_agent=USER_AGENT,
                 connect_timeout=5.0, on_messages=None, on_error=None, on_close=None,
                 on_command=None, responder=None, auth_secret=None, tls_v1=False,
                 tls_context=None, tls_ca_file=None, tls_verify=True, tls_cert=None,
                 tls_key=None, snappy=False, deflate=False, deflate_level=None):
        self.host, self.port = parse_address(address)
        self.address = f"{self.host}:{self.port}"
        self.heartbeat_interval = heartbeat_interval
        self.identify_options = {
            "client_id": client_id if client_id is not None else stdlib_socket.gethostname().split(".")[0],
            "hostname": hostname if hostname is not None else stdlib_socket.gethostname(),
            "user_agent": user_agent,
            "feature_negotiation": True,
            "heartbeat_interval": int(heartbeat_interval * 1000) if heartbeat_interval else -1,
        }
        if output_buffer_size is not None:
            self.identify_options["output_buffer_size"] = output_buffer_size
        if output_buffer_timeout is not None:
            self.identify_options["output_buffer_timeout"] = (
                -1 if output_buffer_timeout < 0 else int(output_buffer_timeout * 1000))
        if msg_timeout is not None:
            self.identify_options["msg_timeout"] = int(msg_timeout * 1000)
        if sample_rate is not None:
            self.identify_options["sample_rate"] = sample_rate
        # Transport upgrades: TLS (``tls_context``, a ``gevent.ssl.SSLContext`` — a stdlib
        # one would block the hub — or one made from
        # ``tls_ca_file`` / ``tls_verify`` / ``tls_cert`` + ``tls_key``), then snappy or
        # deflate (``deflate_level`` 1-9; nsqd caps it at its --max-deflate-level).
        if tls_v1:
            self.identify_options["tls_v1"] = True
        if snappy:
            self.identify_options["snappy"] = True
        if deflate:
            self.identify_options["deflate"] = True
            if deflate_level is not None:
                self.identify_options["deflate_level"] = deflate_level
        if tls_v1 and tls_context is None:
            tls_context = tls_client_context(tls_ca_file, tls_verify, tls_cert, tls_key)
        self.tls_context = tls_context
        self.connect_timeout = connect_timeout
        self.on_messages = on_messages
        self.on_error = on_error
        self.on_close = on_close
        self.on_command = on_command
        self.responder = responder
        self.auth_secret = auth_secret
        self.auth_info = None        # nsqd's AUTH answer: identity, identity_url, ...
        self.settings = {}           # nsqd's IDENTIFY answer (feature negotiation)
        self.transport = None
        self.closed = False
        self.closed_event = Event()
        self._pending = collections.deque()   # AsyncResults of requests, in send order
        self._out = []
        self._wake = Event()
        self._wake_pending = False
        self._drained = Event()
        self._reader = None
        self._writer = None

    # -- lifecycle ------------------------------------------------------------------------

    def connect(self):
        """Connect, send the magic and IDENTIFY; returns nsqd's negotiated settings.

        Raises ``OSError`` if nsqd cannot be reached, a typed error if it rejects
        IDENTIFY, :class:`ConnectionClosedError` if it hangs up.
        """
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        # nsqd sends a heartbeat every interval; twice that in silence means it is gone.
        sock.settimeout(self.heartbeat_interval * 2 + 1 if self.heartbeat_interval else None)
        self.transport = SocketTransport(sock)
        try:
            with gevent.Timeout(self.connect_timeout):
                leftover = self._identify()
        except gevent.Timeout:
            self.close()
            raise ConnectionClosedError(f"{self.address}: IDENTIFY timed out") from None
        except BaseException:
            self.close()
            raise
        self._reader = gevent.spawn(self._read_loop, leftover)
        self._writer = gevent.spawn(self._write_loop)
        if self.settings.get("auth_required"):
            self._authenticate()
        return self.settings

    def _identify(self):
        """Magic and IDENTIFY, then the upgrades nsqd agreed to (TLS, then snappy or
        deflate), each confirmed by an ``OK`` read through the new layer. Returns the
        bytes read past the last answer (they are frames for the reader)."""
        line = encode_command("IDENTIFY", body=json.dumps(self.identify_options).encode())
        if self.on_command is not None:
            self.on_command(self, line)
        self.transport.send(wire.MAGIC_V2 + line)
        buf = bytearray()

        def answer():
            frame_type, payload = _read_frame(self.transport, buf)
            if frame_type == FRAME_ERROR:
                raise error_from_frame(payload)
            return payload

        data = answer()
        if data != wire.OK:
            self.settings = json.loads(data)
        settings = self.settings
        if settings.get("tls_v1"):
            if buf:
                raise ConnectionClosedError(f"{self.address}: data before the TLS handshake")
            context = self.tls_context or tls_client_context()
            tls_sock = context.wrap_socket(self.transport.sock, server_hostname=self.host)
            self.transport = SocketTransport(tls_sock)
            if answer() != wire.OK:
                raise ConnectionClosedError(f"{self.address}: no OK after the TLS upgrade")
        if settings.get("snappy") or settings.get("deflate"):
            base = self.transport
            if settings.get("snappy"):
                codec = codecs.SnappyTransport(base, bytes(buf))
            else:
                codec = codecs.DeflateTransport(
                    base, settings.get("deflate_level") or 6, bytes(buf))
            buf.clear()
            self.transport = CodecTransport(base, codec)
            if answer() != wire.OK:
                raise ConnectionClosedError(f"{self.address}: no OK after the compression upgrade")
        return bytes(buf)

    def _authenticate(self):
        """AUTH with ``auth_secret``; nsqd's answer goes to ``auth_info``. Without a secret
        this raises AuthFirstError at once (nsqd would refuse every SUB/PUB)."""
        if self.auth_secret is None:
            self.close()
            raise AuthFirstError(
                "E_AUTH_FIRST", f"{self.address} requires AUTH: no auth_secret given")
        secret = self.auth_secret
        answer = self.request(encode_command(
            "AUTH", body=secret.encode() if isinstance(secret, str) else bytes(secret)))
        try:
            self.auth_info = json.loads(answer.get(timeout=self.connect_timeout))
        except gevent.Timeout:
            self.close()
            raise ConnectionClosedError(f"{self.address}: AUTH timed out") from None
        except BaseException:
            self.close()
            raise

    def close(self):
        """Close the socket now; pending requests fail with ConnectionClosedError."""
        self._closed("closed by client")

    def close_after_flush(self, timeout=2.0):
        """Send whatever is queued, then close."""
        if not self.closed and self._out:
            self._drained.clear()
            self._wake.set()
            self._drained.wait(timeout)
        self.close()

    def _closed(self, reason):
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        self._drained.set()
        if self.transport is not None:
            self.transport.close()
        error = ConnectionClosedError(f"{self.address}: {reason}")
        while self._pending:
            result = self._pending.popleft()
            if not result.ready():
                result.set_exception(error)
        current = gevent.getcurrent()
        for greenlet in (self._reader, self._writer):
            if greenlet is not None and greenlet is not current:
                greenlet.kill(block=False)
        self.closed_event.set()
        if self.on_close is not None:
            self.on_close(self)

    # -- writing --------------------------------------------------------------------------

    def send(self, data):
        """Queue raw bytes (one or more command lines) for the writer."""
        if self.closed:
            raise ConnectionClosedError(f"{self.address}: connection closed")
        if self.on_command is not None:
            self.on_command(self, data)
        self._out.append(data)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake.set()

    def command(self, name, *params, body=None):
        """Queue a command that nsqd does not answer (RDY, FIN, REQ, TOUCH, NOP)."""
        self.send(encode_command(name, *params, body=body))

    def request(self, data):
        """Queue a command nsqd answers; an AsyncResult receives the answer (bytes) or
        the typed error."""
        result = AsyncResult()
        if self.closed:
            result.set_exception(ConnectionClosedError(f"{self.address}: connection closed"))
            return result
        self._pending.append(result)
        self.send(data)
        return result

    @property
    def pending_requests(self):
        return len(self._pending)

    def _write_loop(self):
        out = self._out
        wake = self._wake
        try:
            while True:
                wake.wait()
                wake.clear()
                self._wake_pending = False
                if self.closed:
                    return
                if not out:
                    continue
                data = b"".join(out) if len(out) > 1 else out[0]
                out.clear()
                self.transport.send(data)
                if not out:
                    self._drained.set()
        except OSError as err:
            self._closed(f"write failed: {err}")

    # -- reading --------------------------------------------------------------------------

    def _read_loop(self, leftover=b""):
        reason = "closed by nsqd"
        try:
            self._read_frames(leftover)
        except stdlib_socket.timeout:
            reason = "no heartbeat from nsqd"
        except OSError as err:
            reason = f"read failed: {err}"
        except gevent.GreenletExit:
            return
        except Exception:  # a bug in a callback must not leave the connection half dead
            log.exception("%s: error while handling a frame", self.address)
            reason = "internal error"
        self._closed(reason)

    def _read_frames(self, leftover=b""):
        recv = self.transport.recv
        unpack_header = _FRAME_HEADER.unpack_from
        unpack_message = _MESSAGE_HEADER.unpack_from
        pending = self._pending
        responder, address = self.responder, self.address
        buf = bytearray(leftover)   # frames that arrived with the IDENTIFY answers
        parse_first = bool(buf)
        while True:
            if parse_first:
                parse_first = False
            else:
                data = recv(262144)
                if not data:
                    return
                buf += data
            messages = []
            pos, end_of_data = 0, len(buf)
            while end_of_data - pos >= 8:
                size, frame_type = unpack_header(buf, pos)
                end = pos + 4 + size
                if end > end_of_data:
                    break
                if frame_type == FRAME_MESSAGE:
                    timestamp, attempts, msg_id = unpack_message(buf, pos + 8)
                    messages.append(Message(msg_id, bytes(buf[pos + 34:end]), timestamp,
                                            attempts, responder, address))
                    pos = end
                    continue
                payload = bytes(buf[pos + 8:end])
                pos = end
                if frame_type == FRAME_RESPONSE:
                    if payload == _HEARTBEAT:
                        self.send(b"NOP\n")
                    elif pending:
                        pending.popleft().set(payload)
                    else:
                        log.warning("%s: unexpected response %r", self.address, payload)
                elif frame_type == FRAME_ERROR:
                    error = error_from_frame(payload)
                    if error.fatal and pending:
                        pending.popleft().set_exception(error)
                    elif self.on_error is not None:
                        self.on_error(self, error)
                    else:
                        log.error("%s: %s", self.address, error)
                else:
                    log.warning("%s: unknown frame type %d", self.address, frame_type)
            if pos:
                del buf[:pos]
            if messages and self.on_messages is not None:
                self.on_messages(self, messages)

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<Connection {self.address} {state}>"
