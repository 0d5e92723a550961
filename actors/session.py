"""The server side of one NSQ V2 TCP connection.

A session is two greenlets: the reader (the connection's handler greenlet) parses commands
and acts on them, and the writer sends whatever is queued for the client (replies,
messages a channel delivered, heartbeats). Replies to pipelined commands go out together
once every command already received has been handled, sent by the reader itself when
nothing more has arrived (the client is waiting for them); messages go out as soon as the
writer runs, so a burst a channel delivers leaves in one write. The reader stops reading
while too much output waits, so a client that never reads cannot make nsqd hold more than
a bounded amount for it.
"""

import logging
import socket
import time
from collections import deque

import gevent
import ujson
from gevent.event import Event
from gevent.lock import Semaphore

from greensq.actors.actor import Refused
from greensq.actors.channel import Consumer
from greensq.services.auth import AuthError, query_any_auth_server
from greensq.services.message import ID_LENGTH
from greensq.services.names import is_valid_name
from greensq.services.transport import (
    DeflateTransport, PlainTransport, SnappyTransport, TLSTransport, TransportError,
    tls_required_mode)
from greensq.services.version import NSQ_VERSION
from greensq.services.wire import (
    CLOSE_WAIT_FRAME, HEARTBEAT_FRAME, OK_FRAME, ClientError, ConnectionClosed,
    FatalClientError, LineTooLong, StreamReader, go_quote, message_frame_header,
    parse_digits, raw_text, response_frame, split_mpub_body)

log = logging.getLogger("greensq")

STATE_INIT = 0
STATE_SUBSCRIBED = 3
STATE_CLOSING = 4

MAX_LINE = 16 * 1024            # NSQ's read buffer: a longer command line drops the client
MAX_PENDING_OUTPUT = 1 << 20    # replies waiting before the reader stops reading
MAX_AWAITED = 64                # publishes being stored before the reader waits
DEFAULT_OUTPUT_BUFFER_SIZE = 16 * 1024


class Session:
    """One V2 client: its identity, its state, and its subscription (at most one)."""

    auth_secret = None   # what the client sent with AUTH (bytes)
    auth_state = None    # the auth server's answer (services.auth.AuthState)
    next_heartbeat = None  # monotonic time of the next heartbeat (see heartbeat)
    _command_start = None  # when the reader began waiting for the current command
    _reads_since_yield = 0

    def __init__(self, nsqd, sock, address):
        self.nsqd = nsqd
        self.opts = opts = nsqd.opts
        self.sock = sock
        self.remote_address = f"{address[0]}:{address[1]}" if address else "unknown"
        self.state = STATE_INIT
        self.connect_ts = int(time.time())
        self.client_id = self.hostname = address[0] if address else ""
        self.user_agent = ""
        self.heartbeat_interval = 30.0
        self.output_buffer_size = DEFAULT_OUTPUT_BUFFER_SIZE
        self.output_buffer_timeout = opts.output_buffer_timeout
        self.msg_timeout = opts.msg_timeout
        self.sample_rate = 0
        self.channel = None
        self.consumer = None
        self.pub_counts = {}
        self._out = []
        self._out_size = 0
        self._wake = Event()
        self._drained = Event()
        self._drained.set()
        self._closed = False
        self._pending_fins = []
        # Replies behind a publish still being stored (durable mode's fsync, a busy
        # channel) wait here, in command order: (receipt, verb) or (None, frame).
        self._awaited = deque()
        self._close_when_sent = False
        # Bytes go through a transport (plain, then TLS / snappy / deflate after
        # IDENTIFY); the writer holds _write_lock while sending so an upgrade can swap
        # the transport between two writes.
        self.transport = PlainTransport(sock)
        self.tls = False
        self.tls_conn = None        # the SSLSocket once TLS is on
        self.snappy = False
        self.deflate = False
        self._write_lock = Semaphore()
        self._tls_required = tls_required_mode(opts) != "false"
        self.reader = StreamReader(self.transport, on_idle=self._on_idle)
        self._commands = {
            b"FIN": self.cmd_fin, b"RDY": self.cmd_rdy, b"REQ": self.cmd_req,
            b"PUB": self.cmd_pub, b"MPUB": self.cmd_mpub, b"DPUB": self.cmd_dpub,
            b"NOP": self.cmd_nop, b"TOUCH": self.cmd_touch, b"SUB": self.cmd_sub,
            b"CLS": self.cmd_cls, b"AUTH": self.cmd_auth, b"IDENTIFY": self.cmd_identify,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def run(self):
        """Serve the connection until it closes (called after the magic was read)."""
        self._schedule_heartbeats()
        writer = gevent.spawn(self._write_loop)
        try:
            self._read_loop()
        except ConnectionClosed:
            pass
        except (OSError, TransportError) as err:
            if not self._closed:
                log.error("client(%s) - failed to read command - %s", self.remote_address, err)
        except LineTooLong:
            log.error("client(%s) - failed to read command - line too long",
                      self.remote_address)
        finally:
            log.info("PROTOCOL(V2): [%s] exiting ioloop", self.remote_address)
            self._closed = True
            self._wake.set()
            self._release_subscription()
            writer.join(timeout=2.0)
            writer.kill(block=False)
            self._shutdown_socket()
            if self.tls_conn is not None:
                self.tls_conn.close()

    def close(self):
        """Drop the connection from outside (channel deleted, nsqd exiting)."""
        self._closed = True
        self._shutdown_socket()

    def _shutdown_socket(self):
        # The OS socket's shutdown, also under TLS: SSLSocket.shutdown would unwrap the
        # TLS layer under a reader that may be about to use it.
        try:
            getattr(self.sock, "_sock", self.sock).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _release_subscription(self):
        self._flush_fins()
        if self.channel is not None:
            self.channel.detach(self.consumer)
            self.channel = None

    # -- timed work, done by nsqd's watchdog (services/watchdog.py) -----------------------

    def _schedule_heartbeats(self):
        """The first heartbeat one interval from now (at the start, and after IDENTIFY)."""
        if self.heartbeat_interval > 0:
            self.next_heartbeat = time.monotonic() + self.heartbeat_interval
            self.nsqd.watchdog.schedule(self, self.next_heartbeat)
        else:
            self.next_heartbeat = None

    def heartbeat(self, now):
        """Send the heartbeat that is due; the time of the next one (None: no more)."""
        if self._closed:
            self.next_heartbeat = None
            return None
        self._queue(HEARTBEAT_FRAME)
        self._wake.set()
        # Every interval from the first, unless the watchdog fell behind.
        self.next_heartbeat = max(self.next_heartbeat + self.heartbeat_interval, now)
        return self.next_heartbeat

    def check_read_deadline(self, now):
        """NSQ's read deadline: a command, line and body, must arrive within two heartbeat
        intervals of the reader starting to wait for it."""
        started = self._command_start
        interval = self.heartbeat_interval
        if (started is not None and interval > 0 and not self._closed
                and now - started > interval * 2):
            log.info("[%s] heartbeat timeout, closing", self.remote_address)
            self.close()

    # -- reading --------------------------------------------------------------------------

    def _read_loop(self):
        reader = self.reader
        commands = self._commands
        while not self._closed:
            self._command_start = None   # _on_idle starts this command's clock
            line = reader.readline(MAX_LINE)
            if (len(line) == 20 and line[:4] == b"FIN " and self.state >= STATE_SUBSCRIBED
                    and (self.tls or not self._tls_required)):
                self._pending_fins.append(line[4:])   # the hot path: one per message
                continue
            params = line.split(b" ")
            handler = commands.get(params[0])
            try:
                if self._tls_required and not self.tls and params[0] != b"IDENTIFY":
                    raise FatalClientError("E_INVALID", f"cannot {raw_text(params[0])} "
                                           "in current state (TLS required)")
                if handler is None:
                    raise FatalClientError(
                        "E_INVALID", f"invalid command {raw_text(params[0])}")
                if self._pending_fins and params[0] != b"FIN":
                    self._flush_fins()
                reply = handler(params)
                if reply is not None:
                    self._reply(reply)
            except ClientError as err:
                log.error("[%s] - %s", self.remote_address, err)
                self._reply(err.frame())
                if err.fatal:
                    return

    def _on_idle(self, client_waiting):
        """Every command received so far is handled: hand batched FINs to the channel,
        send the replies, and wait while too much output is pending."""
        if self._command_start is None:
            self._command_start = time.monotonic()   # the read deadline's clock starts
        fins_sent = self._pending_fins and self._flush_fins()
        if self._out:
            if client_waiting and not self._write_lock.locked():
                # Nothing more has arrived: the client is waiting for these replies, and
                # the reader waits in the hub next, so sending them here saves the hop to
                # the writer without letting anyone skip the hub's turn.
                self._send_pending()
            else:
                # A client that keeps sending is answered by the writer: its replies
                # wait for the hub's turn like everything else, which keeps a flooding
                # publisher from outrunning the other greenlets.
                self._wake.set()
        # gevent's recv returns at once while data is waiting, without visiting the hub:
        # yield after handing the channel a FIN batch, and every few reads, so a client
        # that keeps its socket full can neither starve the other greenlets nor pile work
        # (FIN batches, publishes) into the actors' mailboxes faster than they run, and
        # the replies and errors that work produces count against MAX_PENDING_OUTPUT
        # below before it reads much more. (A waiting client's reader visits the hub
        # next anyway.)
        if not client_waiting:
            self._reads_since_yield += 1
            if fins_sent or self._reads_since_yield >= 16:
                self._reads_since_yield = 0
                gevent.sleep(0)
        while self._out_size > MAX_PENDING_OUTPUT and not self._closed:
            self._drained.clear()
            self._drained.wait()
        # (A client trickling bytes is closed by the watchdog's read-deadline sweep.)

    def _read_body(self, verb, code, what):
        """Read a size-prefixed body for PUB/DPUB/IDENTIFY/AUTH after checking the size."""
        try:
            size = self.reader.read_size()
        except ConnectionClosed:  # EOF mid-command still gets NSQ's error frame
            raise FatalClientError(code, f"{verb} failed to read {what} size") from None
        limit = self.opts.max_msg_size if code == "E_BAD_MESSAGE" else self.opts.max_body_size
        if size <= 0:
            raise FatalClientError(code, f"{verb} invalid {what} size {size}")
        if size > limit:
            too_big = "message too big" if code == "E_BAD_MESSAGE" else "body too big"
            raise FatalClientError(code, f"{verb} {too_big} {size} > {limit}")
        try:
            return self.reader.readexactly(size)
        except ConnectionClosed:
            raise FatalClientError(code, f"{verb} failed to read {what}") from None

    # -- writing --------------------------------------------------------------------------

    def _reply(self, frame):
        """A command's answer: after the answers of publishes still being stored."""
        if self._awaited:
            self._awaited.append((None, frame))
        else:
            self._queue(frame)

    def _await(self, receipt, verb):
        """A publish not stored yet: its answer follows, in order, once it is. The reader
        goes on reading meanwhile (a pipelining publisher's batches share the fsync), up
        to MAX_AWAITED of them."""
        self._awaited.append((receipt, verb))
        receipt.on_done(self._answer_awaited)
        if len(self._awaited) > MAX_AWAITED:
            self._awaited[0][0].wait_done()

    def _answer_awaited(self, _error=None):
        """Queue the answers at the head of the line whose publishes are done."""
        awaited = self._awaited
        while awaited:
            receipt, item = awaited[0]
            if receipt is None:
                frame = item
            elif receipt.pending:
                break
            elif receipt.error is None:
                frame = OK_FRAME
            else:
                err = FatalClientError(f"E_{item}_FAILED", f"{item} failed {receipt.error}")
                log.error("[%s] - %s", self.remote_address, err)
                frame = err.frame()
                self._close_when_sent = True
                awaited.clear()
            if awaited:
                awaited.popleft()
            self._queue(frame)
        self._wake.set()

    def _queue(self, data):
        self._out.append(data)
        self._out_size += len(data)

    def send_error(self, err):
        """Queue an error frame (called by the channel for FIN/REQ/TOUCH failures)."""
        log.error("[%s] - %s", self.remote_address, err)
        self._queue(err.frame())
        self._wake.set()

    def deliver(self, msgs):
        """Queue message frames (called by the channel); the writer sends them next."""
        out = self._out
        size = 0
        for msg in msgs:
            out.append(message_frame_header(msg))
            out.append(msg.body)
            size += len(msg.body) + 34
        self._out_size += size
        self._wake.set()

    def _write_loop(self):
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            if self._out:
                try:
                    self._send_pending()
                except OSError:
                    self.close()
                    return
                if self._close_when_sent:     # a failed publish's fatal error is out
                    self.close()
                    return
            if self._closed and not self._out:
                return

    def _send_pending(self):
        """Send everything queued, in one write. The lock keeps writes whole while an
        IDENTIFY upgrade swaps the transport. The bytes count as pending until they are
        written, so a client that does not read stops being read."""
        out = self._out
        try:
            with self._write_lock:
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                if data:
                    self.transport.sendall(data)
                self._out_size -= len(data)
        finally:
            self._drained.set()

    # -- commands -------------------------------------------------------------------------

    def cmd_nop(self, params):
        return None

    def cmd_identify(self, params):
        if self.state != STATE_INIT:
            raise FatalClientError("E_INVALID", "cannot IDENTIFY in current state")
        body = self._read_body("IDENTIFY", "E_BAD_BODY", "body")
        try:
            data = ujson.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise FatalClientError("E_BAD_BODY", "IDENTIFY failed to decode JSON body")
        # Go's JSON decoding matches keys case-insensitively (a later duplicate wins).
        data = {key.lower(): value for key, value in data.items()}
        self._identify(data)
        if not data.get("feature_negotiation"):
            return OK_FRAME
        opts = self.opts
        tls_context = getattr(self.nsqd, "tls_context", None)
        tls_v1 = bool(tls_context is not None and data.get("tls_v1") and not self.tls)
        deflate = bool(opts.deflate and data.get("deflate"))
        deflate_level = 6
        if deflate and (data.get("deflate_level") or 0) > 0:
            deflate_level = data["deflate_level"]
        deflate_level = min(deflate_level, opts.max_deflate_level)
        snappy = bool(opts.snappy and data.get("snappy"))
        if deflate and snappy:
            raise FatalClientError(
                "E_IDENTIFY_FAILED", "cannot enable both deflate and snappy compression")
        response = response_frame(ujson.dumps({
            "max_rdy_count": opts.max_rdy_count,
            "version": NSQ_VERSION,
            "max_msg_timeout": int(opts.max_msg_timeout * 1000),
            "msg_timeout": int(self.msg_timeout * 1000),
            "tls_v1": tls_v1,
            "deflate": deflate,
            "deflate_level": deflate_level,
            "max_deflate_level": opts.max_deflate_level,
            "snappy": snappy,
            "sample_rate": self.sample_rate,
            "auth_required": bool(opts.auth_http_address),
            "output_buffer_size": self.output_buffer_size,
            "output_buffer_timeout": int(self.output_buffer_timeout * 1000),
        }).encode())
        if not (tls_v1 or snappy or deflate):
            return response
        self._upgrade(response, tls_context if tls_v1 else None, snappy,
                      deflate_level if deflate else 0)
        return None

    def _upgrade(self, response, tls_context, snappy, deflate_level):
        """Send the IDENTIFY answer in the clear, then switch the stream to TLS, snappy
        or deflate, sending NSQ's ``OK`` through each new layer. Runs in the reader
        greenlet, holding the write lock so nothing else is written in between."""
        leftover = self.reader.take_buffered()  # a pipelining client's compressed bytes
        try:
            with self._write_lock:
                pending = b"".join(self._out) + response
                self._out.clear()
                self._out_size = 0
                self.transport.sendall(pending)
                if tls_context is not None:
                    if leftover:
                        raise TransportError("data received before the TLS handshake")
                    tls_sock = tls_context.wrap_socket(self.sock, server_side=True)
                    self.sock = self.tls_conn = tls_sock
                    self.transport = TLSTransport(tls_sock)
                    self.tls = True
                    self.transport.sendall(OK_FRAME)
                if snappy:
                    self.transport = SnappyTransport(self.transport, leftover)
                    self.snappy, leftover = True, b""
                    self.transport.sendall(OK_FRAME)
                if deflate_level:
                    self.transport = DeflateTransport(self.transport, deflate_level, leftover)
                    self.deflate, leftover = True, b""
                    self.transport.sendall(OK_FRAME)
        except (OSError, ValueError, TransportError) as err:
            raise FatalClientError("E_IDENTIFY_FAILED", f"IDENTIFY failed {err}") from None
        finally:
            self.reader.switch_source(self.transport)

    def tls_stats(self):
        """The tls fields of this client's stats."""
        if self.tls:
            return TLSTransport(self.tls_conn).stats()
        return {"tls": False, "tls_cipher_suite": "", "tls_version": "",
                "tls_negotiated_protocol": "", "tls_negotiated_protocol_is_mutual": False}

    def _identify(self, data):
        def field(name, kind, default):
            value = data.get(name, default)
            if value is None:
                return default
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise FatalClientError("E_BAD_BODY", "IDENTIFY failed to decode JSON body")
            return value

        client_id = field("client_id", str, "")
        hostname = field("hostname", str, "")
        user_agent = field("user_agent", str, "")
        heartbeat = field("heartbeat_interval", int, 0)
        buffer_size = field("output_buffer_size", int, 0)
        buffer_timeout = field("output_buffer_timeout", int, 0)
        sample_rate = field("sample_rate", int, 0)
        msg_timeout = field("msg_timeout", int, 0)
        for flag in ("feature_negotiation", "tls_v1", "snappy", "deflate"):
            field(flag, bool, False)
        field("deflate_level", int, 0)

        opts = self.opts

        def invalid(what, value):
            return FatalClientError("E_BAD_BODY", f"IDENTIFY {what} ({value}) is invalid")

        def duration(value, what, current, low, high, can_disable=True):
            """A client-chosen duration in ms, in seconds: 0 keeps ``current``, -1 turns
            it off where allowed, anything else must lie within [low, high] seconds."""
            if value == -1 and can_disable:
                return 0.0
            if value == 0:
                return current
            if low * 1000 <= value <= high * 1000:
                return value / 1000.0
            raise invalid(what, value)

        heartbeat_s = duration(heartbeat, "heartbeat interval", self.heartbeat_interval,
                               1.0, opts.max_heartbeat_interval)
        timeout_s = duration(buffer_timeout, "output buffer timeout", self.output_buffer_timeout,
                             opts.min_output_buffer_timeout, opts.max_output_buffer_timeout)

        if buffer_size == -1:
            size, timeout_s = 1, 0.0
        elif buffer_size == 0:
            size = self.output_buffer_size
        elif 64 <= buffer_size <= opts.max_output_buffer_size:
            size = buffer_size
        else:
            raise invalid("output buffer size", buffer_size)

        if not 0 <= sample_rate <= 99:
            raise invalid("sample rate", sample_rate)

        msg_timeout_s = duration(msg_timeout, "msg timeout", self.msg_timeout,
                                 1.0, opts.max_msg_timeout, can_disable=False)

        self.client_id, self.hostname, self.user_agent = client_id, hostname, user_agent
        self.heartbeat_interval = heartbeat_s
        self.output_buffer_size, self.output_buffer_timeout = size, timeout_s
        self.sample_rate = sample_rate
        self.msg_timeout = msg_timeout_s
        self._schedule_heartbeats()   # the ticker restarts

    def cmd_auth(self, params):
        if self.state != STATE_INIT:
            raise FatalClientError("E_INVALID", "cannot AUTH in current state")
        if len(params) != 1:
            raise FatalClientError("E_INVALID", "AUTH invalid number of parameters")
        secret = self._read_body("AUTH", "E_BAD_BODY", "body")
        if self.has_authorizations:
            raise FatalClientError("E_INVALID", "AUTH already set")
        if not self.opts.auth_http_address:
            raise FatalClientError("E_AUTH_DISABLED", "AUTH disabled")
        self.auth_secret = bytes(secret)
        self._query_auth()
        if not self.has_authorizations:
            raise FatalClientError("E_UNAUTHORIZED", "AUTH no authorizations found")
        state = self.auth_state
        return response_frame(ujson.dumps(
            {"identity": state.identity, "identity_url": state.identity_url,
             "permission_count": len(state.authorizations)},
            escape_forward_slashes=False, ensure_ascii=False, encode_html_chars=True).encode())

    @property
    def has_authorizations(self):
        return self.auth_state is not None and bool(self.auth_state.authorizations)

    def _query_auth(self):
        """Ask the auth servers about ``auth_secret``; E_AUTH_FAILED if none answers (the
        reason is only logged, as it may name the auth server)."""
        opts = self.opts
        tls_conn = getattr(self, "tls_conn", None)
        common_name = ""
        if tls_conn is not None and hasattr(tls_conn, "getpeercert"):
            for rdn in (tls_conn.getpeercert() or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName" and not common_name:
                        common_name = value
        try:
            self.auth_state = query_any_auth_server(
                opts.auth_http_address, self.remote_address.rsplit(":", 1)[0],
                bool(getattr(self, "tls", False)), common_name, self.auth_secret,
                opts.http_client_connect_timeout, opts.http_client_request_timeout)
        except AuthError as err:
            log.warning("[%s] AUTH failed %s", self.remote_address, err)
            raise FatalClientError("E_AUTH_FAILED", "AUTH failed") from None

    def _check_auth(self, verb, topic_name, channel_name=""):
        """NSQ's CheckAuth: with auth enabled, the client must have AUTHed and the
        (re-queried once expired) grants must cover this topic/channel."""
        if not self.opts.auth_http_address:
            return
        if not self.has_authorizations:
            raise FatalClientError("E_AUTH_FIRST", f"AUTH required before {verb}")
        if self.auth_state.is_expired():
            self._query_auth()
        if not self.auth_state.is_allowed(topic_name, channel_name):
            raise FatalClientError(
                "E_UNAUTHORIZED", f"AUTH failed for {verb} on {go_quote(topic_name.encode())} "
                f"{go_quote(channel_name.encode())}")

    def cmd_sub(self, params):
        if self.state != STATE_INIT:
            raise FatalClientError("E_INVALID", "cannot SUB in current state")
        if self.heartbeat_interval <= 0:
            raise FatalClientError("E_INVALID", "cannot SUB with heartbeats disabled")
        if len(params) < 3:
            raise FatalClientError("E_INVALID", "SUB insufficient number of parameters")
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "SUB topic")
        channel_name = self._valid_name(params[2], "E_BAD_CHANNEL", "SUB channel")
        self._check_auth("SUB", topic_name, channel_name)
        channel = self.nsqd.get_topic(topic_name).get_channel(channel_name)
        limit = self.opts.max_channel_consumers
        if limit and channel.client_count >= limit:
            raise FatalClientError(
                "E_SUB_FAILED",
                f"SUB failed consumers for {topic_name}:{channel_name} exceeds limit of {limit}")
        self.consumer = Consumer(self)
        self.channel = channel
        channel.attach(self.consumer)
        self.state = STATE_SUBSCRIBED
        return OK_FRAME

    def cmd_rdy(self, params):
        if self.state == STATE_CLOSING:
            return None
        if self.state != STATE_SUBSCRIBED:
            raise FatalClientError("E_INVALID", "cannot RDY in current state")
        count = 1
        if len(params) > 1:
            count = parse_digits(params[1])
            if count is None:
                raise FatalClientError(
                    "E_INVALID", f"RDY could not parse count {raw_text(params[1])}")
        if not 0 <= count <= self.opts.max_rdy_count:
            raise FatalClientError(
                "E_INVALID", f"RDY count {count} out of range 0-{self.opts.max_rdy_count}")
        self.channel.send("rdy", self.consumer, count)
        return None

    def _message_id(self, params, verb):
        if self.state not in (STATE_SUBSCRIBED, STATE_CLOSING):
            raise FatalClientError("E_INVALID", f"cannot {verb} in current state")
        if len(params) < (3 if verb == "REQ" else 2):
            raise FatalClientError("E_INVALID", f"{verb} insufficient number of params")
        msg_id = params[1]
        if len(msg_id) != ID_LENGTH:
            raise FatalClientError("E_INVALID", "Invalid Message ID")
        return msg_id

    def cmd_fin(self, params):
        self._pending_fins.append(self._message_id(params, "FIN"))
        return None

    def _flush_fins(self):
        """Hand the FINs read so far to the channel as one batch; True if there were any."""
        if not self._pending_fins:
            return False
        fins, self._pending_fins = self._pending_fins, []
        if self.channel is not None:
            self.channel.send("fin", self.consumer, fins)
        return True

    def _timeout_ms(self, verb, raw):
        """A REQ/DPUB delay in ms (digits only, as NSQ parses it) and the largest allowed:
        NSQ clamps REQ to it but rejects DPUB, so each command decides."""
        value = parse_digits(raw)
        if value is None:
            raise FatalClientError("E_INVALID", f"{verb} could not parse timeout {raw_text(raw)}")
        return value, int(self.opts.max_req_timeout * 1000)

    def cmd_req(self, params):
        msg_id = self._message_id(params, "REQ")
        timeout_ms, max_ms = self._timeout_ms("REQ", params[2])
        if timeout_ms > max_ms:
            log.info("[%s] REQ timeout %d out of range 0-%d. Setting to %d",
                     self.remote_address, timeout_ms, max_ms, max_ms)
            timeout_ms = max_ms
        self.channel.send("req", self.consumer, msg_id, timeout_ms / 1000.0)
        return None

    def cmd_touch(self, params):
        msg_id = self._message_id(params, "TOUCH")
        self.channel.send("touch", self.consumer, msg_id, self.msg_timeout)
        return None

    def cmd_cls(self, params):
        if self.state != STATE_SUBSCRIBED:
            raise FatalClientError("E_INVALID", "cannot CLS in current state")
        self.state = STATE_CLOSING
        self.channel.send("cls", self.consumer)
        return CLOSE_WAIT_FRAME

    def _valid_name(self, raw, code, what, prefix=""):
        name = raw.decode("latin-1")
        if name not in self.nsqd.topics and not is_valid_name(name):   # (a topic's is valid)
            raise FatalClientError(code, f"{prefix}{what} name {go_quote(raw)} is not valid")
        return name

    def _publish(self, verb, topic_name, bodies, defer_ms=0):
        """Publish; OK once the messages are stored (see NSQD.publish): at once when they
        are, else in command order when they are. A refusal (nsqd exiting) or a failed
        disk write is NSQ's fatal ``E_<VERB>_FAILED``."""
        try:
            receipt = self.nsqd.start_publish(topic_name, bodies, defer_ms)
        except Refused as err:
            raise FatalClientError(f"E_{verb}_FAILED", f"{verb} failed {err}") from None
        self.pub_counts[topic_name] = self.pub_counts.get(topic_name, 0) + len(bodies)
        if receipt is None:
            return OK_FRAME
        if receipt.pending:
            self._await(receipt, verb)
            return None
        if receipt.error is not None:
            raise FatalClientError(f"E_{verb}_FAILED", f"{verb} failed {receipt.error}")
        return OK_FRAME

    def cmd_pub(self, params):
        if len(params) < 2:
            raise FatalClientError("E_INVALID", "PUB insufficient number of parameters")
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "PUB topic")
        body = self._read_body("PUB", "E_BAD_MESSAGE", "message body")
        self._check_auth("PUB", topic_name)
        return self._publish("PUB", topic_name, [body])

    def cmd_dpub(self, params):
        if len(params) < 3:
            raise FatalClientError("E_INVALID", "DPUB insufficient number of parameters")
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "DPUB topic")
        defer_ms, max_ms = self._timeout_ms("DPUB", params[2])
        if defer_ms > max_ms:
            raise FatalClientError("E_INVALID", f"DPUB timeout {defer_ms} out of range 0-{max_ms}")
        body = self._read_body("DPUB", "E_BAD_MESSAGE", "message body")
        self._check_auth("DPUB", topic_name)
        return self._publish("DPUB", topic_name, [body], defer_ms)

    def cmd_mpub(self, params):
        if len(params) < 2:
            raise FatalClientError("E_INVALID", "MPUB insufficient number of parameters")
        # NSQ's text repeats the code here; clients match on the first word either way.
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "MPUB topic", "E_BAD_TOPIC ")
        self._check_auth("MPUB", topic_name)
        if not self.nsqd.exiting:
            self.nsqd.get_topic(topic_name)  # NSQ creates the topic before reading the body
        try:
            size = self.reader.read_size()
        except ConnectionClosed:
            raise FatalClientError("E_BAD_BODY", "MPUB failed to read body size") from None
        if size <= 0:
            raise FatalClientError("E_BAD_BODY", f"MPUB invalid body size {size}")
        if size > self.opts.max_body_size:
            raise FatalClientError(
                "E_BAD_BODY", f"MPUB body too big {size} > {self.opts.max_body_size}")
        body = self.reader.readexactly(size)
        return self._publish("MPUB", topic_name, split_mpub_body(body, self.opts))

