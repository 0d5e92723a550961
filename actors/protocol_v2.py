"""NSQ's V2 protocol on one TCP connection: read commands, check them, act on them.

A connection is two greenlets: the reader (the connection's handler greenlet, running
``ProtocolV2.serve``) parses commands and acts on them, and the client's writer
(client_v2.py) sends whatever is queued for the client: replies, messages a channel
delivered, heartbeats. Replies to pipelined commands go out together once every command
already received has been handled, sent by the reader itself when nothing more has
arrived (the client is waiting for them); messages go out as soon as the writer runs, so a
burst a channel delivers leaves in one write.

Each ``cmd_*`` method answers one command with the frame to send (or None) and raises
``ClientError`` with NSQ's code and text for bad input; a fatal one ends the connection.
"""

import logging
import time

import gevent
import ujson

from greensq.actors.actor import Refused
from greensq.actors.channel import Consumer
from greensq.actors.client_v2 import (
    STATE_CLOSING, STATE_INIT, STATE_SUBSCRIBED, ClientV2)
from greensq.services.shared import json_input
from greensq.services.shared.batches import split_mpub_body
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.hub_turn import others_ready
from greensq.services.shared.message import ID_LENGTH
from greensq.services.shared.names import is_valid_name
from greensq.services.shared.version import NSQ_VERSION
from greensq.services.shared.wire import (
    CLOSE_WAIT_FRAME, OK_FRAME, ClientError, ConnectionClosed, FatalClientError, LineTooLong,
    StreamError, go_quote, parse_digits, raw_text, response_frame)

log = logging.getLogger("greensq")

MAX_LINE = 16 * 1024            # NSQ's read buffer: a longer command line drops the client
COMMANDS_PER_TURN = 64          # commands a reader handles before the other greenlets run


def serve_v2(nsqd, sock, address, internal=False):
    """Serve one V2 connection (its magic read) as a client of ``nsqd`` until it ends; one
    that starts while nsqd is exiting is closed at once.

    An ``internal`` connection is one of nsqd's own HTTP workers publishing what they
    were POSTed (http/gateway.py), over a Unix socket only nsqd's user can reach: it is
    no client of nsqd's (not in ``/stats`` or the client count, no heartbeats), needs no
    AUTH or TLS (HTTP publishing has neither), and a failed publish is answered with
    its error frame without closing it, so the other publishes it carries are answered
    on their own.
    """
    if nsqd.exiting:
        return
    protocol = ProtocolV2(nsqd, sock, address, internal)
    if internal:
        protocol.serve()
        return
    nsqd.clients.add(protocol.client)
    try:
        protocol.serve()
    finally:
        nsqd.clients.discard(protocol.client)


class ProtocolV2:
    """The V2 protocol for one connection, over its ``ClientV2``."""

    _reads_since_yield = 0

    def __init__(self, nsqd, sock, address, internal=False):
        self.nsqd = nsqd
        self.opts = nsqd.opts
        self.client = ClientV2(nsqd, sock, address, on_idle=self._on_idle, internal=internal)

    def serve(self):
        """Serve the connection until it closes (called after the magic was read)."""
        client = self.client
        writer = client.start_writer()
        try:
            self._read_loop()
        except ConnectionClosed:
            pass
        except (OSError, StreamError) as err:
            if not client.closed:
                log.error("client(%s) - failed to read command - %s", client.remote_address, err)
        except LineTooLong:
            log.error("client(%s) - failed to read command - line too long",
                      client.remote_address)
        finally:
            log.info("PROTOCOL(V2): [%s] exiting ioloop", client.remote_address)
            client.shut_down(writer)

    # -- reading --------------------------------------------------------------------------

    def _read_loop(self):
        client = self.client
        reader = client.reader
        commands = COMMANDS
        fins = client.pending_fins
        handled = 0
        while not client.closed:
            handled += 1
            if handled > COMMANDS_PER_TURN:
                handled = 0
                self._take_turn()
            client.command_start = None   # _on_idle starts this command's clock
            line = reader.readline(MAX_LINE)
            if (len(line) == 20 and line[:4] == b"FIN " and client.state >= STATE_SUBSCRIBED
                    and (client.tls or not client.tls_required)):
                fins.append(line[4:])   # the hot path: one per message
                reader.take_fins(fins)  # and the FINs that came with it
                continue
            params = line.split(b" ")
            handler = commands.get(params[0])
            try:
                if client.tls_required and not client.tls and params[0] != b"IDENTIFY":
                    raise FatalClientError("E_INVALID", f"cannot {raw_text(params[0])} "
                                           "in current state (TLS required)")
                if handler is None:
                    raise FatalClientError(
                        "E_INVALID", f"invalid command {raw_text(params[0])}")
                if fins and params[0] != b"FIN":
                    client.flush_fins()
                reply = handler(self, params)
                if reply is not None:
                    client.reply(reply)
            except ClientError as err:
                log.error("[%s] - %s", client.remote_address, err)
                client.reply(err.frame())
                if err.fatal:
                    return

    def _on_idle(self, client_waiting):
        """Every command received so far is handled: hand batched FINs to the channel,
        send the replies, and wait while too much output is pending."""
        client = self.client
        if client.command_start is None:
            client.command_start = time.monotonic()   # the read deadline's clock starts
        fins_sent = self._hand_on(client_waiting)
        # gevent's recv returns at once while data is waiting, without visiting the hub:
        # yield after handing the channel a FIN batch, and every few reads, so a client
        # that keeps its socket full can neither starve the other greenlets nor pile work
        # (FIN batches, publishes) into the actors' mailboxes faster than they run, and
        # the replies and errors that work produces count against the client's output
        # bound before it reads much more. (A waiting client's reader visits the hub
        # next anyway.)
        if not client_waiting:
            self._reads_since_yield += 1
            if fins_sent or self._reads_since_yield >= 16:
                self._reads_since_yield = 0
                gevent.sleep(0)
        client.wait_while_output_full()
        # (A client trickling bytes is closed by the watchdog's read-deadline sweep.)

    def _take_turn(self):
        """Every COMMANDS_PER_TURN commands, however many more are already buffered (a
        few compressed bytes can inflate to millions of commands), the other greenlets
        run, and the reader waits while too much output is pending."""
        self._hand_on(False)
        gevent.sleep(0)
        self.client.wait_while_output_full()

    def _hand_on(self, client_waiting):
        """Hand the FINs read so far to the channel and the replies to the client; True
        if there were FINs."""
        client = self.client
        fins_sent = client.pending_fins and client.flush_fins()
        if client.out:
            if client_waiting and not client.write_lock.locked():
                # Nothing more has arrived: the client is waiting for these replies, and
                # the reader waits in the hub next, so sending them here saves the hop to
                # the writer without letting anyone skip the hub's turn.
                client.send_pending()
            else:
                # A client that keeps sending is answered by the writer: its replies
                # wait for the hub's turn like everything else, which keeps a flooding
                # publisher from outrunning the other greenlets.
                client.wake.set()
        return fins_sent

    def _read_body(self, verb, code, what):
        """Read a size-prefixed body for PUB/DPUB/IDENTIFY/AUTH after checking the size."""
        reader = self.client.reader
        try:
            size = reader.read_size()
        except ConnectionClosed:  # EOF mid-command still gets NSQ's error frame
            raise FatalClientError(code, f"{verb} failed to read {what} size") from None
        limit = self.opts.max_msg_size if code == "E_BAD_MESSAGE" else self.opts.max_body_size
        if size <= 0:
            raise FatalClientError(code, f"{verb} invalid {what} size {size}")
        if size > limit:
            too_big = "message too big" if code == "E_BAD_MESSAGE" else "body too big"
            raise FatalClientError(code, f"{verb} {too_big} {size} > {limit}")
        try:
            return reader.readexactly(size)
        except ConnectionClosed:
            raise FatalClientError(code, f"{verb} failed to read {what}") from None

    # -- commands -------------------------------------------------------------------------

    def cmd_nop(self, params):
        return None

    def cmd_identify(self, params):
        client = self.client
        if client.state != STATE_INIT:
            raise FatalClientError("E_INVALID", "cannot IDENTIFY in current state")
        body = self._read_body("IDENTIFY", "E_BAD_BODY", "body")
        try:
            data = json_input.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise FatalClientError("E_BAD_BODY", "IDENTIFY failed to decode JSON body")
        # Go's JSON decoding matches keys case-insensitively (a later duplicate wins).
        data = {key.lower(): value for key, value in data.items()}
        client.apply_identify(data)
        if not data.get("feature_negotiation"):
            return OK_FRAME
        opts = self.opts
        tls_context = getattr(self.nsqd, "tls_context", None)
        tls_v1 = bool(tls_context is not None and data.get("tls_v1") and not client.tls)
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
            "msg_timeout": int(client.msg_timeout * 1000),
            "tls_v1": tls_v1,
            "deflate": deflate,
            "deflate_level": deflate_level,
            "max_deflate_level": opts.max_deflate_level,
            "snappy": snappy,
            "sample_rate": client.sample_rate,
            "auth_required": bool(opts.auth_http_address) and not client.internal,
            "output_buffer_size": client.output_buffer_size,
            "output_buffer_timeout": int(client.output_buffer_timeout * 1000),
        }).encode())
        if not (tls_v1 or snappy or deflate):
            return response
        client.upgrade(response, tls_context if tls_v1 else None, snappy,
                       deflate_level if deflate else 0)
        return None

    def cmd_auth(self, params):
        client = self.client
        if client.state != STATE_INIT:
            raise FatalClientError("E_INVALID", "cannot AUTH in current state")
        if len(params) != 1:
            raise FatalClientError("E_INVALID", "AUTH invalid number of parameters")
        secret = self._read_body("AUTH", "E_BAD_BODY", "body")
        if client.has_authorizations:
            raise FatalClientError("E_INVALID", "AUTH already set")
        if not self.opts.auth_http_address:
            raise FatalClientError("E_AUTH_DISABLED", "AUTH disabled")
        client.auth_secret = bytes(secret)
        client.query_auth()
        if not client.has_authorizations:
            raise FatalClientError("E_UNAUTHORIZED", "AUTH no authorizations found")
        state = client.auth_state
        return response_frame(ujson.dumps(
            {"identity": state.identity, "identity_url": state.identity_url,
             "permission_count": len(state.authorizations)},
            escape_forward_slashes=False, ensure_ascii=False, encode_html_chars=True).encode())

    def cmd_sub(self, params):
        client = self.client
        if client.state != STATE_INIT:
            raise FatalClientError("E_INVALID", "cannot SUB in current state")
        if client.heartbeat_interval <= 0:
            raise FatalClientError("E_INVALID", "cannot SUB with heartbeats disabled")
        if len(params) < 3:
            raise FatalClientError("E_INVALID", "SUB insufficient number of parameters")
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "SUB topic")
        channel_name = self._valid_name(params[2], "E_BAD_CHANNEL", "SUB channel")
        client.check_auth("SUB", topic_name, channel_name)
        channel = self.nsqd.get_topic(topic_name).get_channel(channel_name)
        limit = self.opts.max_channel_consumers
        if limit and channel.client_count >= limit:
            raise FatalClientError(
                "E_SUB_FAILED",
                f"SUB failed consumers for {topic_name}:{channel_name} exceeds limit of {limit}")
        client.consumer = Consumer(client)
        client.channel = channel
        channel.attach(client.consumer)
        client.state = STATE_SUBSCRIBED
        return OK_FRAME

    def cmd_rdy(self, params):
        client = self.client
        if client.state == STATE_CLOSING:
            return None
        if client.state != STATE_SUBSCRIBED:
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
        client.channel.send(client.channel.on_rdy, client.consumer, count)
        return None

    def _message_id(self, params, verb):
        if self.client.state not in (STATE_SUBSCRIBED, STATE_CLOSING):
            raise FatalClientError("E_INVALID", f"cannot {verb} in current state")
        if len(params) < (3 if verb == "REQ" else 2):
            raise FatalClientError("E_INVALID", f"{verb} insufficient number of params")
        msg_id = params[1]
        if len(msg_id) != ID_LENGTH:
            raise FatalClientError("E_INVALID", "Invalid Message ID")
        return msg_id

    def cmd_fin(self, params):
        self.client.pending_fins.append(self._message_id(params, "FIN"))
        return None

    def _timeout_ms(self, verb, raw):
        """A REQ/DPUB delay in ms (digits only, as NSQ parses it) and the largest allowed:
        NSQ clamps REQ to it but rejects DPUB, so each command decides."""
        value = parse_digits(raw)
        if value is None:
            raise FatalClientError("E_INVALID", f"{verb} could not parse timeout {raw_text(raw)}")
        return value, int(self.opts.max_req_timeout * 1000)

    def cmd_req(self, params):
        client = self.client
        msg_id = self._message_id(params, "REQ")
        timeout_ms, max_ms = self._timeout_ms("REQ", params[2])
        if timeout_ms > max_ms:
            log.info("[%s] REQ timeout %d out of range 0-%d. Setting to %d",
                     client.remote_address, timeout_ms, max_ms, max_ms)
            timeout_ms = max_ms
        client.channel.send(client.channel.on_req, client.consumer, msg_id,
                            timeout_ms / 1000.0)
        return None

    def cmd_touch(self, params):
        client = self.client
        msg_id = self._message_id(params, "TOUCH")
        client.channel.send(client.channel.on_touch, client.consumer, msg_id,
                            client.msg_timeout)
        return None

    def cmd_cls(self, params):
        client = self.client
        if client.state != STATE_SUBSCRIBED:
            raise FatalClientError("E_INVALID", "cannot CLS in current state")
        client.state = STATE_CLOSING
        client.channel.send(client.channel.on_cls, client.consumer)
        return CLOSE_WAIT_FRAME

    def _valid_name(self, raw, code, what, prefix=""):
        name = raw.decode("latin-1")
        if name not in self.nsqd.topics and not is_valid_name(name):   # (a topic's is valid)
            raise FatalClientError(code, f"{prefix}{what} name {go_quote(raw)} is not valid")
        return name

    def _publish(self, verb, topic_name, bodies, defer_ms=0):
        """Publish; OK once the messages are stored (see NSQD.publish): at once when they
        are, else in command order when they are. A PUB with company in its turn of the
        hub is stored with the turn's other PUBs for its topic (publish_gathering.py). A
        refusal (nsqd exiting) or a failed disk write is NSQ's ``E_<VERB>_FAILED``
        (``ClientV2.publish_failure``)."""
        gathering = self.nsqd.gathering
        try:
            if verb == "PUB" and others_ready():
                receipt = gathering.publish(topic_name, bodies[0])
            else:
                gathering.flush(topic_name)
                receipt = self.nsqd.start_publish(topic_name, bodies, defer_ms)
        except Refused as err:
            raise self.client.publish_failure(verb, err) from None
        pub_counts = self.client.pub_counts
        pub_counts[topic_name] = pub_counts.get(topic_name, 0) + len(bodies)
        if receipt is None:
            return OK_FRAME
        if receipt.pending:
            self.client.await_stored(receipt, verb)
            return None
        if receipt.error is not None:
            raise self.client.publish_failure(verb, receipt.error)
        return OK_FRAME

    def cmd_pub(self, params):
        if len(params) < 2:
            raise FatalClientError("E_INVALID", "PUB insufficient number of parameters")
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "PUB topic")
        body = self._read_body("PUB", "E_BAD_MESSAGE", "message body")
        self.client.check_auth("PUB", topic_name)
        return self._publish("PUB", topic_name, [body])

    def cmd_dpub(self, params):
        if len(params) < 3:
            raise FatalClientError("E_INVALID", "DPUB insufficient number of parameters")
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "DPUB topic")
        defer_ms, max_ms = self._timeout_ms("DPUB", params[2])
        if defer_ms > max_ms:
            raise FatalClientError("E_INVALID", f"DPUB timeout {defer_ms} out of range 0-{max_ms}")
        body = self._read_body("DPUB", "E_BAD_MESSAGE", "message body")
        self.client.check_auth("DPUB", topic_name)
        return self._publish("DPUB", topic_name, [body], defer_ms)

    def cmd_mpub(self, params):
        if len(params) < 2:
            raise FatalClientError("E_INVALID", "MPUB insufficient number of parameters")
        # NSQ's text repeats the code here; clients match on the first word either way.
        topic_name = self._valid_name(params[1], "E_BAD_TOPIC", "MPUB topic", "E_BAD_TOPIC ")
        self.client.check_auth("MPUB", topic_name)
        if not self.nsqd.exiting:
            self.nsqd.get_topic(topic_name)  # NSQ creates the topic before reading the body
        reader = self.client.reader
        try:
            size = reader.read_size()
        except ConnectionClosed:
            raise FatalClientError("E_BAD_BODY", "MPUB failed to read body size") from None
        if size <= 0:
            raise FatalClientError("E_BAD_BODY", f"MPUB invalid body size {size}")
        if size > self.opts.max_body_size:
            raise FatalClientError(
                "E_BAD_BODY", f"MPUB body too big {size} > {self.opts.max_body_size}")
        try:
            body = reader.readexactly(size)
        except ConnectionClosed:
            # Go reads the messages off the stream, so a body cut short by EOF is
            # answered with the error of the message it ends in.
            body = reader.take_buffered()
        bodies = split_mpub_body(body, self.opts, pause=gevent.sleep)
        return self._publish("MPUB", topic_name, bodies)


# Each verb's method as a plain function of the protocol (kept by the class, not by each
# connection, whose own table of bound methods would tie it to itself in a cycle).
COMMANDS = {
    b"FIN": ProtocolV2.cmd_fin, b"RDY": ProtocolV2.cmd_rdy, b"REQ": ProtocolV2.cmd_req,
    b"PUB": ProtocolV2.cmd_pub, b"MPUB": ProtocolV2.cmd_mpub, b"DPUB": ProtocolV2.cmd_dpub,
    b"NOP": ProtocolV2.cmd_nop, b"TOUCH": ProtocolV2.cmd_touch, b"SUB": ProtocolV2.cmd_sub,
    b"CLS": ProtocolV2.cmd_cls, b"AUTH": ProtocolV2.cmd_auth,
    b"IDENTIFY": ProtocolV2.cmd_identify,
}


use_compiled(globals())
