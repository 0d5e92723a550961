"""The client side of NSQ's V2 protocol, without I/O: commands out as bytes, bytes in as
messages and answers.

A :class:`ClientProtocol` is one connection's protocol state. Its owner moves the bytes
(gevent's sockets in :mod:`.connection`, asyncio's transports in :mod:`.aio`):

* **Handshake.** :meth:`~ClientProtocol.initiate` gives the magic and IDENTIFY; every
  read goes to :meth:`~ClientProtocol.receive_handshake` until ``ready``. It returns
  what to do next: bytes to send (AUTH, a heartbeat's NOP) or :data:`START_TLS`, after
  which the owner wraps its socket in TLS and calls :meth:`~ClientProtocol.tls_started`.
  snappy and deflate need no help from the owner: the protocol decompresses what it is
  fed and compresses what :meth:`~ClientProtocol.outgoing` is given from the point nsqd
  agreed on. With ``auth_secret``, AUTH is sent when nsqd says ``auth_required``.
* **Requests.** nsqd answers IDENTIFY, SUB, PUB, MPUB, DPUB, AUTH and CLS in the order
  it received them, so the owner registers a token (an AsyncResult, a Future) with
  :meth:`~ClientProtocol.expect_answer` as it sends each one, and the answers are
  matched in FIFO order: that is what makes pipelining possible. FIN, REQ, TOUCH, RDY
  and NOP get no answer; their failures (``E_FIN_FAILED`` ...) are non-fatal error
  frames that match no request.
* **Frames.** :meth:`~ClientProtocol.receive` returns the messages delivered and the
  bytes to answer heartbeats with; answers go to the ``resolve`` / ``reject``
  callbacks, errors that answer no request to ``on_error``.
"""

import collections
import json
import socket
import ssl

from greensq.services.shared.compression import DeflateCodec, SnappyCodec
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.version import __version__
from greensq.services.shared.wire import (
    FRAME_ERROR, FRAME_MESSAGE, HEARTBEAT, MAGIC_V2, OK, SIZE, StreamError)

from .errors import AuthFirstError, FrameError, error_from_frame
from .message import Message

USER_AGENT = f"greensq/{__version__}"
NOP = b"NOP\n"
START_TLS = "start TLS"    # receive_handshake's word for: wrap the socket in TLS now


def parse_address(address):
    """``"host:port"`` or ``(host, port)`` → ``(host, port)``; a Unix socket's path (a
    string starting with ``/``, as NSQ 1.3 takes one for ``--tcp-address``) →
    ``(path, None)``."""
    if isinstance(address, str):
        if address.startswith("/"):
            return address, None
        host, _, port = address.rpartition(":")
        return host or "127.0.0.1", int(port)
    host, port = address
    return host, int(port)


def format_address(address):
    """An address as the client names it: ``"host:port"``, or a Unix socket's path."""
    host, port = parse_address(address)
    return host if port is None else f"{host}:{port}"


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
    return line + SIZE.pack(len(body)) + body


def encode_mpub_body(bodies):
    """The MPUB body: ``[count]`` then ``[size][bytes]`` per message."""
    pieces = [SIZE.pack(len(bodies))]
    for body in bodies:
        pieces.append(SIZE.pack(len(body)))
        pieces.append(body)
    return b"".join(pieces)


def tls_client_context(ca_file=None, verify=True, cert_file=None, key_file=None,
                       context_class=ssl.SSLContext):
    """A client TLS context for ``tls_v1``: verify nsqd against ``ca_file`` (or the
    system CAs) unless ``verify`` is False; ``cert_file``/``key_file`` for mutual TLS.
    ``context_class`` is the SSLContext of the sockets it will wrap (gevent's or
    the standard library's)."""
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def identify_options(*, heartbeat_interval=30.0, output_buffer_size=None,
                     output_buffer_timeout=None, msg_timeout=None, sample_rate=None,
                     client_id=None, hostname=None, user_agent=USER_AGENT, tls_v1=False,
                     snappy=False, deflate=False, deflate_level=None):
    """IDENTIFY's JSON fields from NSQ's options, durations given in seconds:
    ``heartbeat_interval``, ``output_buffer_timeout`` (negative: off), ``msg_timeout``;
    ``output_buffer_size`` in bytes; ``sample_rate`` 0-99; ``deflate_level`` 1-9 (nsqd
    caps it at its --max-deflate-level)."""
    options = {
        "client_id": client_id if client_id is not None else socket.gethostname().split(".")[0],
        "hostname": hostname if hostname is not None else socket.gethostname(),
        "user_agent": user_agent,
        "feature_negotiation": True,
        "heartbeat_interval": int(heartbeat_interval * 1000) if heartbeat_interval else -1,
    }
    if output_buffer_size is not None:
        options["output_buffer_size"] = output_buffer_size
    if output_buffer_timeout is not None:
        options["output_buffer_timeout"] = (
            -1 if output_buffer_timeout < 0 else int(output_buffer_timeout * 1000))
    if msg_timeout is not None:
        options["msg_timeout"] = int(msg_timeout * 1000)
    if sample_rate is not None:
        options["sample_rate"] = sample_rate
    if tls_v1:
        options["tls_v1"] = True
    if snappy:
        options["snappy"] = True
    if deflate:
        options["deflate"] = True
        if deflate_level is not None:
            options["deflate_level"] = deflate_level
    return options


# The handshake's steps, in the order nsqd takes them.
_IDENTIFY, _TLS, _TLS_OK, _COMPRESSION_OK, _AUTH = (
    "IDENTIFY", "TLS", "TLS's OK", "compression's OK", "AUTH")


class ClientProtocol:
    """One V2 connection's protocol state (see the module's docstring).

    ``identify`` is IDENTIFY's fields (:func:`identify_options`); ``auth_secret`` the
    secret for AUTH; ``responder`` and ``address`` go into every message delivered.
    ``resolve(token, answer)`` and ``reject(token, error)`` receive the requests'
    outcomes, ``on_error(error)`` the error frames that answer no request.
    """

    def __init__(self, identify, *, resolve, reject, on_error, auth_secret=None,
                 responder=None, address=None):
        self.identify = identify
        self.auth_secret = auth_secret
        self.address = address
        self.settings = {}           # nsqd's IDENTIFY answer (feature negotiation)
        self.auth_info = None        # nsqd's AUTH answer: identity, identity_url, ...
        self.ready = False
        self.codec = None            # snappy or deflate, once nsqd switched it on
        self._resolve = resolve
        self._reject = reject
        self._on_error = on_error
        self._decoder = FrameDecoder(Message, responder, address)
        self._pending = collections.deque()   # tokens of the requests sent, oldest first
        # A request is being sent: its answer goes to ``token`` (a bound method: this
        # runs for every publish).
        self.expect_answer = self._pending.append
        self._steps = [_IDENTIFY]

    # -- handshake ------------------------------------------------------------------------

    def initiate(self):
        """The first bytes to send: the magic and IDENTIFY."""
        return MAGIC_V2 + encode_command(
            "IDENTIFY", body=json.dumps(self.identify).encode())

    def receive_handshake(self, data):
        """Feed bytes read during the handshake; returns what to do, in order: commands
        to send (through :meth:`outgoing`), or :data:`START_TLS`. Raises nsqd's typed
        error if it refuses a step, and :class:`FrameError` if it answers out of place.
        Bytes past the handshake stay for :meth:`receive`."""
        try:
            self._feed(data)
            actions = []
            while not self.ready and self._steps[0] != _TLS:   # TLS: the owner's turn
                frame = self._decoder.next_frame()
                if frame is None:
                    break
                frame_type, payload = frame
                if frame_type == FRAME_ERROR:
                    raise error_from_frame(payload)
                if frame_type == FRAME_MESSAGE:
                    raise FrameError(f"{self.address}: a message before SUB")
                if payload == HEARTBEAT:
                    actions.append(NOP)
                else:
                    self._answered(self._steps.pop(0), payload, actions)
        except StreamError as exc:   # not NSQ's frames, or a corrupt compressed stream
            raise FrameError(f"{self.address}: {exc}") from None
        return actions

    def tls_started(self):
        """The socket speaks TLS now; nsqd's OK comes through it."""
        if not self._steps or self._steps[0] != _TLS:
            raise RuntimeError("TLS was not asked for")
        self._steps[0] = _TLS_OK

    def _answered(self, step, payload, actions):
        if step == _IDENTIFY:
            self._identified(payload)
        elif step == _AUTH:
            self.auth_info = _json_object(payload, step, self.address)
        elif payload != OK:
            raise FrameError(f"{self.address}: {payload[:100]!r} instead of OK after {step}")
        self._next_step(actions)

    def _identified(self, payload):
        """nsqd's settings; the upgrades and AUTH they ask for become the next steps."""
        settings = {} if payload == OK else _json_object(payload, _IDENTIFY, self.address)
        self.settings = settings
        if settings.get("tls_v1"):
            self._steps.append(_TLS)
        if settings.get("snappy") or settings.get("deflate"):
            self._steps.append(_COMPRESSION_OK)
        if settings.get("auth_required"):
            self._steps.append(_AUTH)

    def _next_step(self, actions):
        """Start the next step of the handshake (or finish it)."""
        if not self._steps:
            self.ready = True
            return
        step = self._steps[0]
        if step == _TLS:
            if self._decoder.buffered:
                raise FrameError(f"{self.address}: data before the TLS handshake")
            actions.append(START_TLS)
        elif step == _COMPRESSION_OK:
            # From here on both directions are compressed, the bytes already read too.
            self.codec = _codec_for(self.settings)
            self._decoder.feed(self.codec.decompress(self._decoder.take_buffered()))
        elif step == _AUTH:
            if self.auth_secret is None:
                raise AuthFirstError(
                    "E_AUTH_FIRST", f"{self.address} requires AUTH: no auth_secret given")
            secret = self.auth_secret
            actions.append(encode_command(
                "AUTH", body=secret.encode() if isinstance(secret, str) else bytes(secret)))

    # -- after the handshake --------------------------------------------------------------

    def outgoing(self, data):
        """``data`` as it goes on the wire (compressed once nsqd agreed to)."""
        codec = self.codec
        return codec.compress(data) if codec is not None else data

    def _feed(self, data):
        codec = self.codec
        self._decoder.feed(codec.decompress(data) if codec is not None else data)

    @property
    def pending_requests(self):
        return len(self._pending)

    def receive(self, data):
        """Feed bytes from nsqd. Returns ``(messages, reply)``: the messages delivered, and
        the commands to send back now (a NOP for each heartbeat), or ``b""``."""
        try:
            self._feed(data)
            messages, responses, errors = self._decoder.decode()
        except StreamError as exc:
            raise FrameError(f"{self.address}: {exc}") from None
        reply = b""
        if responses:
            pending = self._pending
            resolve = self._resolve
            for payload in responses:
                if payload == HEARTBEAT:
                    reply += NOP
                elif pending:
                    resolve(pending.popleft(), payload)
                else:
                    raise FrameError(f"{self.address}: an answer to no request: "
                                     f"{payload[:100]!r}")
        # After the responses, whatever their order in the stream: a non-fatal error
        # answers no request, and nsqd sends nothing after a fatal one.
        for payload in errors:
            self._error(error_from_frame(payload))
        return messages, reply

    def _error(self, error):
        """A fatal error answers the oldest request (nsqd closes after it); any other
        error (FIN/REQ/TOUCH failures) answers none."""
        if error.fatal and self._pending:
            self._reject(self._pending.popleft(), error)
        else:
            self._on_error(error)

    def abandon(self):
        """The connection is gone: the tokens of every unanswered request, oldest first
        (the owner fails them); no answer will come."""
        tokens = list(self._pending)
        self._pending.clear()
        return tokens


def _codec_for(settings):
    """The compression nsqd's IDENTIFY answer switched on."""
    if settings.get("snappy"):
        return SnappyCodec()
    return DeflateCodec(settings.get("deflate_level") or 6)


def _json_object(payload, step, address):
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise FrameError(f"{address}: {step} answered {payload[:100]!r}")
    return value
