"""The TCP listener: reads a connection's protocol magic and hands it to its protocol.

nsqd speaks V2 only; nsqlookupd speaks V1. A wrong magic gets NSQ's ``E_BAD_PROTOCOL``
error frame and the connection is closed.

A connection must send its whole magic within ``MAGIC_TIMEOUT`` seconds of connecting
(10 s; the environment variable ``GREENSQ_MAGIC_TIMEOUT``, read when the daemon starts,
overrides it), so a client that connects and sends nothing, or trickles the magic, is
dropped. Every accepted connection gets TCP keepalive (``KEEPALIVE_IDLE``,
``KEEPALIVE_INTERVAL``, ``KEEPALIVE_COUNT``: a dead peer is noticed within about 75 s)
so half-open connections are closed even when the protocol itself has no deadline.
"""

import logging
import os
import socket
import time

from gevent.server import StreamServer

from greensq.services.shared.wire import error_frame

log = logging.getLogger("greensq")

MAGIC_TIMEOUT = float(os.environ.get("GREENSQ_MAGIC_TIMEOUT") or 10.0)
KEEPALIVE_IDLE = 30       # seconds idle before the first probe
KEEPALIVE_INTERVAL = 15   # seconds between probes
KEEPALIVE_COUNT = 3       # unanswered probes before the kernel drops the connection


def set_keepalive(sock):
    """Turn on TCP keepalive with short timers where the platform allows it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                            ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


def read_magic(sock):
    """The first four bytes of a connection, or None if it closed or did not send them
    within MAGIC_TIMEOUT (one deadline for all four bytes, not one per recv)."""
    deadline = time.monotonic() + MAGIC_TIMEOUT
    data = b""
    try:
        while len(data) < 4:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            chunk = sock.recv(4 - len(data))
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    sock.settimeout(None)   # the protocol sets its own deadlines from here on
    return data


class ProtocolServer(StreamServer):
    """A StreamServer on an already-bound listener that dispatches by protocol magic.

    ``protocols`` maps a magic (``b"  V2"``) to a callable ``(sock, address)`` that serves
    the connection until it ends.
    """

    def __init__(self, listener, protocols, name="TCP"):
        super().__init__(listener, self._handle)
        self.protocols = protocols
        self.name = name

    def _handle(self, sock, address):
        serve_connection(sock, address, self.protocols, self.name)


def serve_connection(sock, address, protocols, name="TCP"):
    """Serve one accepted connection until it ends, then close it: socket options, the
    magic, and the protocol that magic names (``protocols``, as ``ProtocolServer``'s).
    The fast tests call it on one end of a socket pair."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    set_keepalive(sock)
    log.info("%s: new client(%s)", name, _format_address(address))
    magic = read_magic(sock)
    if magic is None:
        sock.close()
        return
    serve = protocols.get(magic)
    client = _format_address(address)
    log.info("CLIENT(%s): desired protocol magic '%s'", client, magic.decode("latin-1"))
    try:
        if serve is None:
            log.error("client(%s) bad protocol magic '%s'", client, magic.decode("latin-1"))
            try:
                sock.sendall(error_frame(b"E_BAD_PROTOCOL"))  # NSQ's frame: the code only
            except OSError:
                pass
            return
        serve(sock, address)
    finally:
        sock.close()


def _format_address(address):
    return f"{address[0]}:{address[1]}" if address else "unknown"
