"""One connection to an nsqd (TCP, or a Unix socket) on gevent: the I/O around
:mod:`.protocol`.

The protocol (:class:`~.protocol.ClientProtocol`) decides everything about the bytes:
the handshake (IDENTIFY, then TLS, snappy or deflate and AUTH as nsqd agrees), the
frames, which answer belongs to which request. This module moves them:

* the **handshake** runs in the caller's greenlet, reading until the protocol is ready
  and wrapping the socket in TLS when it says so;
* a **reader** greenlet hands everything read to the protocol and the messages it
  returns to ``on_messages``, a burst at a time;
* a **writer** greenlet sends everything queued since it last ran in one ``sendall``,
  so many publishes or FINs issued by many greenlets in the same loop iteration cost
  one system call.

Requests (IDENTIFY, SUB, PUB, MPUB, DPUB, CLS) get an AsyncResult that receives nsqd's
answer or the typed error. Only gevent's own sockets are used, so nothing here needs
monkey-patching.
"""

import logging
import socket as stdlib_socket

import gevent
from gevent import socket
from gevent import ssl as gevent_ssl
from gevent.event import AsyncResult, Event

from .connection_core import ConnectionCore
from .errors import ConnectionClosedError, FrameError
from .protocol import START_TLS
from .protocol import (  # noqa: F401 - part of this module's API since before protocol.py
    USER_AGENT, encode_command, encode_mpub_body, parse_address)

log = logging.getLogger("greensq.client")


def connect_unix(path, timeout):
    """A gevent socket connected to the Unix socket at ``path`` (``OSError`` if it
    cannot be)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


class Connection(ConnectionCore):
    __doc__ = ConnectionCore.__doc__ + """
    On gevent: callbacks run in the reader greenlet; ``tls_context`` is a
    ``gevent.ssl.SSLContext`` (a stdlib one would block the hub).
    """

    tls_context_class = gevent_ssl.SSLContext
    _resolve = staticmethod(AsyncResult.set)

    @staticmethod
    def _reject(result, error):
        result.set_exception(error)

    def __init__(self, address, **options):
        super().__init__(address, **options)
        self.sock = None
        self.closed_event = Event()
        self._out = []
        self._wake = Event()
        self._wake_pending = False
        self._drained = Event()
        self._reader = None
        self._writer = None

    # -- lifecycle ------------------------------------------------------------------------

    def connect(self):
        """Connect, send the magic and IDENTIFY (then AUTH, if nsqd asks for it); returns
        nsqd's negotiated settings.

        Raises ``OSError`` if nsqd cannot be reached, a typed error if it rejects
        IDENTIFY or AUTH, :class:`ConnectionClosedError` if it hangs up.
        """
        if self.port is None:
            sock = connect_unix(self.host, self.connect_timeout)
        else:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=self.connect_timeout)
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        # nsqd sends a heartbeat every interval; twice that in silence means it is gone.
        sock.settimeout(self.heartbeat_interval * 2 + 1 if self.heartbeat_interval else None)
        self.sock = sock
        try:
            with gevent.Timeout(self.connect_timeout):
                self._handshake()
        except gevent.Timeout:
            self.close()
            raise ConnectionClosedError(f"{self.address}: handshake timed out") from None
        except BaseException:
            self.close()
            raise
        self._reader = gevent.spawn(self._read_loop)
        self._writer = gevent.spawn(self._write_loop)
        return self.settings

    def _handshake(self):
        protocol = self.protocol
        self.sock.sendall(self._hello())
        while not protocol.ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosedError(f"{self.address}: closed by nsqd during IDENTIFY")
            for action in protocol.receive_handshake(data):
                if action is START_TLS:
                    self.sock = (self.tls_context or self.new_tls_context()).wrap_socket(
                        self.sock, server_hostname=self.host)
                    protocol.tls_started()
                else:
                    self.sock.sendall(protocol.outgoing(action))

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
        if self.sock is not None:
            try:
                self.sock.shutdown(stdlib_socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        error = ConnectionClosedError(f"{self.address}: {reason}")
        for result in self.protocol.abandon():
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

    def request(self, data):
        """Queue a command nsqd answers; an AsyncResult receives the answer (bytes) or
        the typed error."""
        result = AsyncResult()
        if self.closed:
            result.set_exception(ConnectionClosedError(f"{self.address}: connection closed"))
            return result
        self.protocol.expect_answer(result)
        self.send(data)
        return result

    def _write_loop(self):
        out = self._out
        wake = self._wake
        outgoing = self.protocol.outgoing
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
                self.sock.sendall(outgoing(data))
                if not out:
                    self._drained.set()
        except OSError as err:
            self._closed(f"write failed: {err}")

    # -- reading --------------------------------------------------------------------------

    def _read_loop(self):
        reason = "closed by nsqd"
        try:
            self._read_frames()
        except stdlib_socket.timeout:
            reason = "no heartbeat from nsqd"
        except OSError as err:
            reason = f"read failed: {err}"
        except FrameError as err:
            log.error("%s", err)
            reason = str(err)
        except gevent.GreenletExit:
            return
        except Exception:  # a bug in a callback must not leave the connection half dead
            log.exception("%s: error while handling a frame", self.address)
            reason = "internal error"
        self._closed(reason)

    def _read_frames(self):
        recv = self.sock.recv
        receive = self.protocol.receive
        data = b""     # first, the frames that arrived with the handshake's last answer
        while True:
            messages, reply = receive(data)
            if reply:
                self.send(reply)
            if messages and self.on_messages is not None:
                self.on_messages(self, messages)
            data = recv(262144)
            if not data:
                return


def tls_client_context(ca_file=None, verify=True, cert_file=None, key_file=None):
    """:func:`.protocol.tls_client_context` for gevent's cooperative sockets (a stdlib
    context would block the hub)."""
    return Connection.new_tls_context(ca_file, verify, cert_file, key_file)
