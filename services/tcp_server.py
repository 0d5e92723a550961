"""The TCP listener: reads a connection's protocol magic and hands it to its protocol.

nsqd speaks V2 only; nsqlookupd speaks V1. A wrong magic gets NSQ's ``E_BAD_PROTOCOL``
error frame and the connection is closed.
"""

import logging
import socket

from gevent.server import StreamServer

from greensq.services.wire import error_frame

log = logging.getLogger("greensq")

MAGIC_TIMEOUT = 30.0


def read_magic(sock):
    """The first four bytes of a connection, or None if it closed or stalled first."""
    sock.settimeout(MAGIC_TIMEOUT)
    data = b""
    try:
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
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
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        log.info("%s: new client(%s)", self.name, _format_address(address))
        magic = read_magic(sock)
        if magic is None:
            sock.close()
            return
        serve = self.protocols.get(magic)
        try:
            if serve is None:
                text = (f"E_BAD_PROTOCOL client({_format_address(address)}) "
                        f"bad protocol magic '{magic.decode('latin-1')}'")
                log.error("%s", text)
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
