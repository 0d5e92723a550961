"""The worker's HTTP server: gevent's pywsgi, tuned for NSQ's small request/response API.

pywsgi sends a response's headers and its body in two ``send`` calls. Every send to a
waiting client costs a wake-up of that client, and for a ``/pub`` answered with ``OK``
the second one doubles the cost of the request; here the headers wait for the body and
both leave in one send (the headers go alone only when there is no body to join).

pywsgi bounds the request line (8 KiB, else 414), each header line (64 KiB) and the
header count (100), else 400. A connection that sends nothing for ``IDLE_TIMEOUT``
seconds (300; ``GREENSQ_HTTP_IDLE_TIMEOUT`` in the environment at start overrides it) is
closed, so idle keep-alive connections and stalled requests are not held forever.
"""

import os
import socket

from gevent.pywsgi import WSGIHandler, WSGIServer

IDLE_TIMEOUT = float(os.environ.get("GREENSQ_HTTP_IDLE_TIMEOUT") or 300.0)


class CoalescingHandler(WSGIHandler):
    _coalescing = False
    _held_head = None

    def _write_with_headers(self, data):
        self._coalescing = True
        try:
            super()._write_with_headers(data)
        finally:
            self._coalescing = False
            head, self._held_head = self._held_head, None
            if head is not None:
                super()._sendall(head)

    def _sendall(self, data):
        if self._coalescing:
            if self._held_head is None:
                self._held_head = bytes(data)
                return
            data = self._held_head + bytes(data)
            self._held_head = None
        super()._sendall(data)


class ApiServer(WSGIServer):
    """pywsgi with the coalescing handler, no per-request log line, and TCP_NODELAY."""

    handler_class = CoalescingHandler

    def __init__(self, listener, application, spawn, **kwargs):
        super().__init__(listener, application, spawn=spawn, log=None, **kwargs)

    def handle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.settimeout(IDLE_TIMEOUT)
        super().handle(sock, address)
