"""nsqd's connection to one nsqlookupd: an actor that keeps nsqd announced there.

On connect it sends the V1 magic, IDENTIFY (broadcast address, hostname, broadcast ports,
version) and then REGISTERs every topic (or every topic/channel pair). It PINGs every
15 s, forwards REGISTER / UNREGISTER as topics and channels come and go, and when the
connection drops it reconnects with exponential backoff and registers everything again.
Commands that arrive while disconnected are dropped: the full re-registration on
reconnect covers them.

Mailbox messages: ``("command", line)``, ``("disconnected", sock)``, ``("stop",)``.
"""

import logging
import os
import socket
import time

import gevent
import ujson
from gevent.queue import Empty, Queue

from greensq.actors.actor import Actor
from greensq.services.shared import json_input
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.version import NSQ_VERSION
from greensq.services.shared.wire import SIZE, StreamError

log = logging.getLogger("greensq")

PING_INTERVAL = 15.0
CONNECT_TIMEOUT = 1.0
RESPONSE_TIMEOUT = 5.0


def _env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class LookupPeer(Actor):
    def __init__(self, nsqd, address):
        super().__init__(f"lookup peer {address}")
        self.nsqd = nsqd
        self.address = address
        self.host, _, port = address.rpartition(":")
        self.host = self.host.strip("[]") or "127.0.0.1"
        self.port = int(port) if port.isdigit() else 0
        self.info = None            # the IDENTIFY response of the current connection
        self.sock = None
        self.reader = None
        self.responses = None
        self.ping_interval = _env_float("GREENSQ_LOOKUPD_PING_INTERVAL", PING_INTERVAL)
        self.max_backoff = _env_float("GREENSQ_LOOKUPD_MAX_BACKOFF", PING_INTERVAL)
        self.backoff = min(1.0, self.max_backoff)
        self.next_connect = 0.0
        self.next_ping = 0.0

    def __str__(self):
        return self.address

    # -- public (called from other greenlets) ---------------------------------------------

    def command(self, line):
        self.send(self.on_command, line)

    def stop(self):
        self.send(self.on_stop)

    @property
    def http_address(self):
        """``host:port`` of this lookupd's HTTP API, once it has told us its port."""
        info = self.info
        if not info or not info.get("http_port"):
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{info['http_port']}"

    # -- actor hooks ------------------------------------------------------------------------

    def wakeup_in(self):
        target = self.next_ping if self.sock is not None else self.next_connect
        return max(0.0, target - time.monotonic())

    def after_batch(self):
        if self.stopped:
            return
        now = time.monotonic()
        if self.sock is None:
            if now >= self.next_connect:
                self._connect()
        elif now >= self.next_ping:
            log.debug("LOOKUPD(%s): sending heartbeat", self)
            self._command("PING")

    def on_command(self, line):
        if self.sock is not None:
            self._log_registration(line)
            self._command(line)

    def _log_registration(self, line):
        """NSQ's line: ``topic REGISTER t`` or ``channel UNREGISTER t c``."""
        kind = "channel" if line.count(" ") == 2 else "topic"
        log.info("LOOKUPD(%s): %s %s", self, kind, line)

    def on_disconnected(self, sock):
        if sock is self.sock:
            log.info("LOOKUPD(%s): connection closed", self)
            self._drop()

    def on_stop(self):
        log.info("LOOKUP(%s): removing peer", self)
        self._close()
        self.stop_loop()

    # -- connection -------------------------------------------------------------------------

    def _identify_body(self):
        opts, nsqd = self.nsqd.opts, self.nsqd
        tcp_port = opts.broadcast_tcp_port or nsqd.tcp_port
        http_port = opts.broadcast_http_port or nsqd.http_port
        return {"version": NSQ_VERSION, "tcp_port": tcp_port, "http_port": http_port,
                "hostname": opts.hostname, "broadcast_address": opts.broadcast_address}

    def _connect(self):
        log.info("LOOKUP connecting to %s", self)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            log.error("LOOKUPD(%s): failed to connect - %s", self, exc)
            self._schedule_reconnect()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self.sock = sock
        self.responses = Queue()
        self.reader = gevent.spawn(self._read_loop, sock, self.responses)
        try:
            sock.sendall(b"  V1")
        except OSError:
            self._drop()
            return
        body = ujson.dumps(self._identify_body()).encode()
        response = self._command("IDENTIFY", body)
        if response is None:
            return
        if response.startswith(b"E_"):
            log.info("LOOKUPD(%s): lookupd returned %s", self, response.decode("utf-8", "replace"))
            self._drop()
            return
        try:
            info = json_input.loads(response)
            if not isinstance(info, dict):
                raise ValueError
        except ValueError:
            log.error("LOOKUPD(%s): parsing response - %r", self, response)
            self._drop()
            return
        self.info = info
        log.info("LOOKUPD(%s): peer info {TCPPort:%s HTTPPort:%s Version:%s BroadcastAddress:%s}",
                 self, info.get("tcp_port"), info.get("http_port"), info.get("version"),
                 info.get("broadcast_address"))
        if not info.get("broadcast_address"):
            log.error("LOOKUPD(%s): no broadcast address", self)
        self.backoff = min(1.0, self.max_backoff)
        for line in self.nsqd.lookup_registrations():
            self._log_registration(line)
            if self._command(line) is None:
                return

    def _command(self, line, body=None):
        """Send one command and wait for its response; None if the connection failed."""
        sock = self.sock
        if sock is None:
            return None
        data = line.encode() + b"\n"
        if body is not None:
            data += SIZE.pack(len(body)) + body
        try:
            sock.sendall(data)
        except OSError as exc:
            log.error("LOOKUPD(%s): %s - %s", self, line, exc)
            self._drop()
            return None
        try:
            response = self.responses.get(timeout=RESPONSE_TIMEOUT)
        except Empty:
            response = None
        if not isinstance(response, bytes):
            log.error("LOOKUPD(%s): %s - %s", self, line, response or "no response")
            self._drop()
            return None
        self.next_ping = time.monotonic() + self.ping_interval
        return response

    def _read_loop(self, sock, responses):
        """Put each reply nsqlookupd sends (``[size][data]``, as long as nsqd's
        --max-body-size at most, as in Go) in ``responses``; when the connection ends,
        None, or the StreamError of a reply no nsqlookupd sends."""
        replies = FrameDecoder(max_size=self.nsqd.opts.max_body_size)
        end = None
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                replies.feed(data)
                while (reply := replies.next_sized()) is not None:
                    responses.put(reply)
        except OSError:
            pass
        except StreamError as exc:
            end = exc
        responses.put(end)
        self.send(self.on_disconnected, sock)

    def _close(self):
        sock, reader = self.sock, self.reader
        self.sock = self.reader = self.responses = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)

    def _drop(self):
        self._close()
        self._schedule_reconnect()

    def _schedule_reconnect(self):
        self.next_connect = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, self.max_backoff)
