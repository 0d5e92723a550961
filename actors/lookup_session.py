"""The server side of one nsqlookupd V1 connection (an nsqd announcing itself).

Commands are lines: ``IDENTIFY`` (followed by a 4-byte size and a JSON body), ``REGISTER
topic [channel]``, ``UNREGISTER topic [channel]`` and ``PING``. Every reply, success or
error, is a 4-byte size and the data, with no frame type. Every error is fatal: it is sent
and the connection is closed. When the connection ends, its producer leaves every
registration.
"""

import logging
import struct

import ujson

from greensq.services.shared import json_input
from greensq.services.shared.names import is_valid_name

log = logging.getLogger("greensq")

SIZE = struct.Struct(">i")
MAX_LINE = 64 * 1024
MAX_IDENTIFY_BODY = 1024 * 1024


class LookupError_(Exception):
    """A V1 protocol error (always fatal): ``CODE description``."""

    def __init__(self, code, description):
        super().__init__(code, description)
        self.text = f"{code} {description}"


class LookupSession:
    def __init__(self, lookupd, sock, address):
        self.lookupd = lookupd
        self.sock = sock
        self.remote = f"{address[0]}:{address[1]}" if address else "unknown"
        self.peer = None
        self.buf = b""

    # -- socket helpers -------------------------------------------------------------------

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _read_line(self):
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 1:]
                return line
            if len(self.buf) > MAX_LINE:
                raise EOFError
            self._fill()

    def _read_exact(self, size):
        while len(self.buf) < size:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def _send(self, data):
        self.sock.sendall(SIZE.pack(len(data)) + data)

    # -- loop -------------------------------------------------------------------------------

    def run(self):
        self.sock.settimeout(None)
        try:
            while True:
                line = self._read_line().decode("utf-8", "replace").strip()
                params = line.split(" ")
                try:
                    response = self.execute(params)
                except LookupError_ as err:
                    log.error("[%s] - %s", self.remote, err.text)
                    self._send(err.text.encode())
                    break
                if response is not None:
                    self._send(response)
        except EOFError:
            pass
        except OSError as exc:
            log.error("client(%s) - %s", self.remote, exc)
        finally:
            log.info("PROTOCOL(V1): [%s] exiting ioloop", self.remote)
            if self.peer is not None:
                self.lookupd.disconnect(self.peer)

    def execute(self, params):
        command = params[0]
        if command == "PING":
            if self.peer is not None:
                self.peer.touch()
            return b"OK"
        if command == "IDENTIFY":
            return self.identify()
        if command in ("REGISTER", "UNREGISTER"):
            if self.peer is None:
                raise LookupError_("E_INVALID", "client must IDENTIFY")
            topic, channel = self._topic_channel(command, params[1:])
            if command == "REGISTER":
                self.lookupd.register(self.peer, topic, channel)
            else:
                self.lookupd.unregister(self.peer, topic, channel)
            return b"OK"
        raise LookupError_("E_INVALID", f"invalid command {command}")

    @staticmethod
    def _topic_channel(command, params):
        if not params:
            raise LookupError_("E_INVALID", f"{command} insufficient number of params")
        topic = params[0]
        channel = params[1] if len(params) >= 2 else ""
        if not is_valid_name(topic):
            raise LookupError_("E_BAD_TOPIC", f"{command} topic name '{topic}' is not valid")
        if channel and not is_valid_name(channel):
            raise LookupError_("E_BAD_CHANNEL",
                               f"{command} channel name '{channel}' is not valid")
        return topic, channel

    def identify(self):
        if self.peer is not None:
            raise LookupError_("E_INVALID", "cannot IDENTIFY again")
        try:
            (size,) = SIZE.unpack(self._read_exact(4))
        except EOFError:
            raise LookupError_("E_BAD_BODY", "IDENTIFY failed to read body size") from None
        if size < 0 or size > MAX_IDENTIFY_BODY:
            raise LookupError_("E_BAD_BODY", "IDENTIFY failed to read body")
        try:
            body = self._read_exact(size)
        except EOFError:
            raise LookupError_("E_BAD_BODY", "IDENTIFY failed to read body") from None
        try:
            data = json_input.loads(body)
            if not isinstance(data, dict):
                raise ValueError
            fields = {}
            for key, kind in (("hostname", str), ("broadcast_address", str), ("version", str),
                              ("tcp_port", int), ("http_port", int)):
                value = data.get(key)
                if value is None:
                    value = kind()
                if not json_input.decodes_as(value, kind):
                    raise ValueError
                fields[key] = value
        except ValueError:
            raise LookupError_("E_BAD_BODY", "IDENTIFY failed to decode JSON body") from None
        if (not fields["broadcast_address"] or not fields["tcp_port"]
                or not fields["http_port"] or not fields["version"]):
            raise LookupError_("E_BAD_BODY", "IDENTIFY missing fields")
        log.info("CLIENT(%s): IDENTIFY Address:%s TCP:%d HTTP:%d Version:%s", self.remote,
                 fields["broadcast_address"], fields["tcp_port"], fields["http_port"],
                 fields["version"])
        self.peer, answer = self.lookupd.identify(self.remote, fields)
        return ujson.dumps(answer).encode()
