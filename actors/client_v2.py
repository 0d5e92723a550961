"""One V2 TCP client's connection state: who it is, what it negotiated, and its output.

The protocol (protocol_v2.py) reads the client's commands and changes this state; the
channel it subscribes to hands it messages (``deliver``); nsqd's watchdog sends its
heartbeats; /stats reads it. What a client sends back is queued here, in order, and sent
by the client's writer greenlet, or by the protocol's reader when the client is waiting
for its replies. The reader stops reading while too much output waits, so a client that
never reads cannot make nsqd hold more than a bounded amount for it.

Replies behind a publish that is still being stored (durable mode's fsync, a busy
channel) wait in ``_awaited`` and leave in command order once it is stored.
"""

import logging
import socket
import time
from collections import deque

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from greensq.services.shared.auth import AuthError, query_any_auth_server
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.compression import DeflateCodec, SnappyCodec
from greensq.services.shared.json_input import decodes_as
from greensq.services.shared.tls import tls_required_mode
from greensq.services.shared.transport import (
    CompressedTransport, PlainTransport, TLSTransport, TransportError)
from greensq.services.shared.wire import (
    HEARTBEAT_FRAME, OK_FRAME, ClientError, FatalClientError, StreamError, StreamReader,
    go_quote, message_frames)

log = logging.getLogger("greensq")

STATE_INIT = 0
STATE_SUBSCRIBED = 3
STATE_CLOSING = 4

MAX_PENDING_OUTPUT = 1 << 20    # replies waiting before the reader stops reading
MAX_AWAITED = 64                # publishes being stored before the reader waits
SHUTDOWN_WAIT = 2.0             # seconds a closing connection waits to answer and send
DEFAULT_OUTPUT_BUFFER_SIZE = 16 * 1024


class ClientV2:
    """One V2 client: its identity, its negotiated features, its auth, its subscription
    (at most one) and its output."""

    auth_secret = None   # what the client sent with AUTH (bytes)
    auth_state = None    # the auth server's answer (services.auth.AuthState)
    next_heartbeat = None  # monotonic time of the next heartbeat (see heartbeat)
    command_start = None   # when the reader began waiting for the current command

    def __init__(self, nsqd, sock, address, on_idle, internal=False):
        """``on_idle``: the protocol's hook, called by the reader (see StreamReader);
        ``internal``: one of nsqd's own HTTP workers (see protocol_v2.serve_v2)."""
        self.nsqd = nsqd
        self.internal = internal
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
        self.pending_fins = []    # FINs read, not yet handed to the channel as a batch
        self.closed = False
        self.out = []
        self.out_size = 0
        self.wake = Event()
        self._drained = Event()
        self._drained.set()
        self._awaited = deque()   # (receipt, verb) or (None, frame), in command order
        self._close_when_sent = False
        # Bytes go through a transport (plain, then TLS / snappy / deflate after
        # IDENTIFY); the writer holds write_lock while sending so an upgrade can swap
        # the transport between two writes.
        self.transport = PlainTransport(sock)
        self.tls = False
        self.tls_conn = None        # the SSLSocket once TLS is on
        self.snappy = False
        self.deflate = False
        self.write_lock = Semaphore()
        self.tls_required = not internal and tls_required_mode(opts) != "false"
        self.reader = StreamReader(self.transport, on_idle=on_idle)

    # -- lifecycle ------------------------------------------------------------------------

    def start_writer(self):
        self.schedule_heartbeats()
        return gevent.spawn(self._write_loop)

    def shut_down(self, writer):
        """After the protocol's loop: let the publishes still being stored answer (for a
        while) and the writer send what is queued, drop the subscription, close the
        socket, and let go of the objects that point back here."""
        with gevent.Timeout(SHUTDOWN_WAIT, False):
            for receipt, _ in list(self._awaited):
                if receipt is not None:
                    receipt.wait_done()
        self.closed = True
        self.nsqd.watchdog.cancel(self)
        self.wake.set()
        self._release_subscription()
        writer.join(timeout=SHUTDOWN_WAIT)
        writer.kill(block=False)
        self._shutdown_socket()
        if self.tls_conn is not None:
            self.tls_conn.close()
        # The protocol's hook and the subscription refer back to this client: without
        # them nothing here is in a reference cycle, and the connection is freed as soon
        # as its last holder lets go (the worker's cyclic collector seldom runs).
        self.reader.on_idle = None
        self.consumer = None

    def close(self):
        """Drop the connection from outside (channel deleted, nsqd exiting)."""
        self.closed = True
        self._shutdown_socket()

    def _shutdown_socket(self):
        # The OS socket's shutdown, also under TLS: SSLSocket.shutdown would unwrap the
        # TLS layer under a reader that may be about to use it.
        try:
            getattr(self.sock, "_sock", self.sock).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _release_subscription(self):
        self.flush_fins()
        if self.channel is not None:
            self.channel.detach(self.consumer)
            self.channel = None

    def flush_fins(self):
        """Hand the FINs read so far to the channel as one batch; True if there were any."""
        fins = self.pending_fins
        if not fins:
            return False
        batch = fins[:]
        fins.clear()
        if self.channel is not None:
            self.channel.send(self.channel.on_fin, self.consumer, batch)
        return True

    # -- timed work, done by nsqd's watchdog (services/nsqd/watchdog.py) -----------------------

    def schedule_heartbeats(self):
        """The first heartbeat one interval from now (at the start, and after IDENTIFY)."""
        if self.heartbeat_interval > 0:
            self.next_heartbeat = time.monotonic() + self.heartbeat_interval
            self.nsqd.watchdog.schedule(self, self.next_heartbeat)
        else:
            self.next_heartbeat = None
            self.nsqd.watchdog.cancel(self)

    def heartbeat(self, now):
        """Send the heartbeat that is due; the time of the next one (None: no more)."""
        if self.closed:
            self.next_heartbeat = None
            return None
        self.queue(HEARTBEAT_FRAME)
        self.wake.set()
        # Every interval from the first, unless the watchdog fell behind.
        self.next_heartbeat = max(self.next_heartbeat + self.heartbeat_interval, now)
        return self.next_heartbeat

    def check_read_deadline(self, now):
        """NSQ's read deadline: a command, line and body, must arrive within two heartbeat
        intervals of the reader starting to wait for it."""
        started = self.command_start
        interval = self.heartbeat_interval
        if (started is not None and interval > 0 and not self.closed
                and now - started > interval * 2):
            log.info("[%s] heartbeat timeout, closing", self.remote_address)
            self.close()

    # -- output ---------------------------------------------------------------------------

    def reply(self, frame):
        """A command's answer: after the answers of publishes still being stored."""
        if self._awaited:
            self._awaited.append((None, frame))
        else:
            self.queue(frame)

    def await_stored(self, receipt, verb):
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
                err = self.publish_failure(item, receipt.error)
                log.error("[%s] - %s", self.remote_address, err)
                frame = err.frame()
                if err.fatal:
                    self._close_when_sent = True
                    awaited.clear()
            if awaited:
                awaited.popleft()
            self.queue(frame)
        self._send_or_wake()

    def _send_or_wake(self):
        """Send what is queued from the greenlet that has it ready (a batch of publishes
        just stored answers many clients) when it leaves at once: a plain socket with
        room, nobody else writing. Anything left is the writer's."""
        send_nowait = getattr(self.transport, "send_nowait", None)
        if (send_nowait is None or not self.out or self.closed or self._close_when_sent
                or self.write_lock.locked()):
            self.wake.set()
            return
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            sent = send_nowait(data)
        except OSError:
            self.close()
            return
        self.out_size -= sent
        if sent < len(data):
            out.append(data[sent:])
            self.wake.set()
        self._drained.set()

    def publish_failure(self, verb, error):
        """NSQ's ``E_<VERB>_FAILED`` for a publish nsqd refused or could not store: fatal,
        as in NSQ, except on an internal connection, which carries other publishers'
        messages too."""
        kind = ClientError if self.internal else FatalClientError
        return kind(f"E_{verb}_FAILED", f"{verb} failed {error}")

    def queue(self, data):
        self.out.append(data)
        self.out_size += len(data)

    def send_error(self, err):
        """Queue an error frame (called by the channel for FIN/REQ/TOUCH failures)."""
        log.error("[%s] - %s", self.remote_address, err)
        self.queue(err.frame())
        self.wake.set()

    def deliver(self, msgs):
        """Queue message frames (called by the channel); the writer sends them next."""
        pieces, size = message_frames(msgs)
        self.out += pieces
        self.out_size += size
        self.wake.set()

    def wait_while_output_full(self):
        """Block the reader while more than MAX_PENDING_OUTPUT bytes wait to be sent."""
        while self.out_size > MAX_PENDING_OUTPUT and not self.closed:
            self._drained.clear()
            self._drained.wait()

    def _write_loop(self):
        wake = self.wake
        while True:
            wake.wait()
            wake.clear()
            if self.out:
                try:
                    self.send_pending()
                except OSError:
                    self.close()
                    return
                if self._close_when_sent:     # a failed publish's fatal error is out
                    self.close()
                    return
            if self.closed and not self.out:
                return

    def send_pending(self):
        """Send everything queued, in one write. The lock keeps writes whole while an
        IDENTIFY upgrade swaps the transport. The bytes count as pending until they are
        written, so a client that does not read stops being read."""
        out = self.out
        try:
            with self.write_lock:
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                if data:
                    self.transport.sendall(data)
                self.out_size -= len(data)
        finally:
            self._drained.set()

    # -- what IDENTIFY negotiates ---------------------------------------------------------

    def apply_identify(self, data):
        """Check and take the client's IDENTIFY fields (keys lower-cased); E_BAD_BODY for a
        value of the wrong type or out of the range nsqd's flags allow."""
        def field(name, kind, default):
            value = data.get(name, default)
            if value is None:
                return default
            if not decodes_as(value, kind):
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
        self.schedule_heartbeats()   # the ticker restarts

    def upgrade(self, response, tls_context, snappy, deflate_level):
        """Send the IDENTIFY answer in the clear, then switch the stream to TLS, snappy
        or deflate, sending NSQ's ``OK`` through each new layer. Runs in the reader
        greenlet, holding the write lock so nothing else is written in between."""
        leftover = self.reader.take_buffered()  # a pipelining client's compressed bytes
        try:
            with self.write_lock:
                pending = b"".join(self.out) + response
                self.out.clear()
                self.out_size = 0
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
                    self.transport = CompressedTransport(self.transport, SnappyCodec(), leftover)
                    self.snappy, leftover = True, b""
                    self.transport.sendall(OK_FRAME)
                if deflate_level:
                    self.transport = CompressedTransport(
                        self.transport, DeflateCodec(deflate_level), leftover)
                    self.deflate, leftover = True, b""
                    self.transport.sendall(OK_FRAME)
        except (OSError, ValueError, StreamError) as err:
            raise FatalClientError("E_IDENTIFY_FAILED", f"IDENTIFY failed {err}") from None
        finally:
            self.reader.switch_source(self.transport)

    def tls_stats(self):
        """The tls fields of this client's stats."""
        if self.tls:
            return TLSTransport(self.tls_conn).stats()
        return {"tls": False, "tls_cipher_suite": "", "tls_version": "",
                "tls_negotiated_protocol": "", "tls_negotiated_protocol_is_mutual": False}

    # -- auth -----------------------------------------------------------------------------

    @property
    def has_authorizations(self):
        return self.auth_state is not None and bool(self.auth_state.authorizations)

    def query_auth(self):
        """Ask the auth servers about ``auth_secret``; E_AUTH_FAILED if none answers (the
        reason is only logged, as it may name the auth server)."""
        opts = self.opts
        common_name = ""
        if self.tls_conn is not None and hasattr(self.tls_conn, "getpeercert"):
            for rdn in (self.tls_conn.getpeercert() or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName" and not common_name:
                        common_name = value
        try:
            self.auth_state = query_any_auth_server(
                opts.auth_http_address, self.remote_address.rsplit(":", 1)[0],
                self.tls, common_name, self.auth_secret,
                opts.http_client_connect_timeout, opts.http_client_request_timeout)
        except AuthError as err:
            log.warning("[%s] AUTH failed %s", self.remote_address, err)
            raise FatalClientError("E_AUTH_FAILED", "AUTH failed") from None

    def check_auth(self, verb, topic_name, channel_name=""):
        """NSQ's CheckAuth: with auth enabled, the client must have AUTHed and the
        (re-queried once expired) grants must cover this topic/channel."""
        if not self.opts.auth_http_address or self.internal:
            return
        if not self.has_authorizations:
            raise FatalClientError("E_AUTH_FIRST", f"AUTH required before {verb}")
        if self.auth_state.is_expired():
            self.query_auth()
        if not self.auth_state.is_allowed(topic_name, channel_name):
            raise FatalClientError(
                "E_UNAUTHORIZED", f"AUTH failed for {verb} on {go_quote(topic_name.encode())} "
                f"{go_quote(channel_name.encode())}")


use_compiled(globals())
