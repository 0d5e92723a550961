"""One connection to an nsqd (TCP, or a Unix socket) on asyncio: the I/O around
:mod:`..protocol`.

The connection is an :class:`asyncio.Protocol`, so bytes reach the protocol core straight
from the event loop's ``data_received`` (no stream reader in between), and the messages it
decodes go to ``on_messages`` a burst at a time. Everything queued for sending during one
turn of the loop leaves in one ``write``: a burst of FINs, or of pipelined publishes,
costs one system call.

The handshake (IDENTIFY, then TLS, snappy or deflate and AUTH as nsqd agrees) is the
core's; this module only feeds it and, when it says so, upgrades the transport to TLS
with ``loop.start_tls``. nsqd heartbeats every ``heartbeat_interval``: a connection
silent for twice that long is closed.
"""

import asyncio
import logging

from ..connection_core import ConnectionCore
from ..errors import ConnectionClosedError, FrameError
from ..protocol import START_TLS

log = logging.getLogger("greensq.client")


class Connection(ConnectionCore, asyncio.Protocol):
    __doc__ = ConnectionCore.__doc__ + """
    On asyncio: callbacks run in the event loop; ``tls_context`` is a standard
    :class:`ssl.SSLContext`.
    """

    def __init__(self, address, **options):
        super().__init__(address, **options)
        self.closed_event = asyncio.Event()
        self._loop = None
        self._transport = None
        self._handshake_data = []     # bytes read before the handshake is over
        self._handshake_waiter = None
        self._out = []
        self._flush_scheduled = False
        self._heard = False           # something arrived since the last heartbeat check
        self._watchdog = None

    @staticmethod
    def _resolve(future, answer):
        if not future.done():    # a publish that gave up waiting (cancelled, timed out)
            future.set_result(answer)

    @staticmethod
    def _reject(future, error):
        if not future.done():
            future.set_exception(error)

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self):
        """Connect, send the magic and IDENTIFY (then AUTH, if nsqd asks for it); returns
        nsqd's negotiated settings.

        Raises ``OSError`` if nsqd cannot be reached, a typed error if it rejects
        IDENTIFY or AUTH, :class:`ConnectionClosedError` if it hangs up or the handshake
        takes longer than ``connect_timeout``.
        """
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.port is None:
                    await self._loop.create_unix_connection(lambda: self, self.host)
                else:
                    await self._loop.create_connection(lambda: self, self.host, self.port)
                await self._handshake()
        except TimeoutError:
            self._closed("handshake timed out")
            raise ConnectionClosedError(f"{self.address}: handshake timed out") from None
        except BaseException:
            self._closed("handshake failed")
            raise
        self._received(b"")      # frames that came with the handshake's last answer
        if self.heartbeat_interval:
            self._watchdog = self._loop.call_later(self._silence_limit(), self._check_heard)
        return self.settings

    def connection_made(self, transport):
        self._transport = transport

    async def _handshake(self):
        protocol = self.protocol
        self._transport.write(self._hello())
        while not protocol.ready:
            for action in protocol.receive_handshake(await self._read_handshake()):
                if action is START_TLS:
                    self._transport = await self._loop.start_tls(
                        self._transport, self, self.tls_context or self.new_tls_context(),
                        server_hostname=self.host)
                    protocol.tls_started()
                else:
                    self._transport.write(protocol.outgoing(action))

    async def _read_handshake(self):
        while not self._handshake_data:
            if self.closed:
                raise ConnectionClosedError(f"{self.address}: closed by nsqd during IDENTIFY")
            self._handshake_waiter = self._loop.create_future()
            await self._handshake_waiter
        data = b"".join(self._handshake_data)
        self._handshake_data.clear()
        return data

    def close(self):
        """Close once what is queued is written; pending requests fail with
        ConnectionClosedError."""
        self._closed("closed by client")

    def connection_lost(self, exc):
        self._closed(f"read failed: {exc}" if exc else "closed by nsqd")

    def _closed(self, reason):
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._transport is not None:
            self._flush()
            self._transport.close()
        self._wake_handshake()
        error = ConnectionClosedError(f"{self.address}: {reason}")
        for future in self.protocol.abandon():
            self._reject(future, error)
        self.closed_event.set()
        if self.on_close is not None:
            self.on_close(self)

    # -- writing --------------------------------------------------------------------------

    def send(self, data):
        """Queue raw bytes (one or more command lines); they leave at the end of this
        turn of the event loop, with everything else queued."""
        if self.closed:
            raise ConnectionClosedError(f"{self.address}: connection closed")
        if self.on_command is not None:
            self.on_command(self, data)
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def request(self, data):
        """Queue a command nsqd answers; returns a Future of the answer (bytes) or the
        typed error."""
        future = self._loop.create_future()
        if self.closed:
            future.set_exception(ConnectionClosedError(f"{self.address}: connection closed"))
            return future
        self.protocol.expect_answer(future)
        self.send(data)
        return future

    def _flush(self):
        self._flush_scheduled = False
        out = self._out
        if not out or self._transport.is_closing():
            return
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        self._transport.write(self.protocol.outgoing(data))

    # -- reading --------------------------------------------------------------------------

    def data_received(self, data):
        self._heard = True
        if self.protocol.ready:
            self._received(data)
        else:
            self._handshake_data.append(data)
            self._wake_handshake()

    def _received(self, data):
        try:
            messages, reply = self.protocol.receive(data)
        except FrameError as err:
            log.error("%s", err)
            self._closed(str(err))
            return
        if reply:
            self.send(reply)
        if messages and self.on_messages is not None:
            self.on_messages(self, messages)

    def eof_received(self):
        return False     # close the transport: nsqd is done

    def _wake_handshake(self):
        waiter = self._handshake_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _silence_limit(self):
        return self.heartbeat_interval * 2 + 1

    def _check_heard(self):
        if not self._heard:
            self._closed("no heartbeat from nsqd")
            return
        self._heard = False
        self._watchdog = self._loop.call_later(self._silence_limit(), self._check_heard)

