"""The worker's HTTP server: gevent's pywsgi, tuned for NSQ's small request/response API.

pywsgi sends a response's headers and its body in two ``send`` calls. Every send to a
waiting client costs a wake-up of that client, and for a ``/pub`` answered with ``OK``
the second one doubles the cost of the request; here the headers wait for the body and
both leave in one send (the headers go alone only when there is no body to join).

More per-request costs are cut: pywsgi parses headers with ``http.client``, which runs
them through the email package's parser (a third of a small request's time), so
``RequestHeaders`` reads them directly; it formats an access-log line for every request
even with logging off, so the handler does not log requests; and the Date header is
formatted once a second instead of once a request.

pywsgi bounds the request line (8 KiB, else 414); ``RequestHeaders`` bounds each header
line (64 KiB) and the header count (100), else 400. A malformed request gets its 400 and
at most a debug line, and a client that resets or goes away mid-request is a debug line
too, never a traceback (Go's HTTP server logs neither). A connection that sends nothing for ``IDLE_TIMEOUT``
seconds (300; ``GREENSQ_HTTP_IDLE_TIMEOUT`` in the environment at start overrides it) is
closed, so idle keep-alive connections and stalled requests are not held forever.
"""

import logging
import os
import re
import socket
import time

from gevent.pywsgi import WSGIHandler, WSGIServer, format_date_time

IDLE_TIMEOUT = float(os.environ.get("GREENSQ_HTTP_IDLE_TIMEOUT") or 300.0)
HTTP_VERSION = re.compile(r"HTTP/(\d{1,3})\.(\d{1,3})")

log = logging.getLogger("greensq")


MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


class RequestHeaders:
    """A request's header block, with the interface pywsgi expects of its MessageClass
    (``status``, ``get``, ``getheader``, ``typeheader``, ``headers`` as raw lines, and
    deletion). The first of repeated fields wins, as with ``email.message``; pywsgi
    itself joins repeats into the WSGI environ from the raw lines."""

    def __init__(self, rfile, *_):
        self.status = ""
        self.headers = []   # "Name: value\r\n" lines as received, continuations included
        self._fields = {}   # lower-case name -> value
        last = None
        while True:
            line = rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.status = "Line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                return
            if len(self.headers) >= MAX_HEADERS:
                self.status = "Too many headers"
                return
            text = line.decode("latin-1")
            if text[:1] in " \t":
                if last is not None:            # a folded continuation of the last field
                    self.headers.append(text)
                    if self._fields.get(last) is not None:
                        self._fields[last] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            if not colon:
                continue                        # not a header line: ignored
            self.headers.append(text)
            last = name.strip().lower()
            self._fields.setdefault(last, value.strip())

    def get(self, name, default=None):
        return self._fields.get(name.lower(), default)

    getheader = get

    @property
    def typeheader(self):
        return self._fields.get("content-type")

    def __delitem__(self, name):
        key = name.lower()
        if key not in self._fields:
            raise KeyError(name)
        del self._fields[key]
        kept, dropping = [], False
        for line in self.headers:
            if line[:1] not in " \t":
                dropping = line.partition(":")[0].strip().lower() == key
            if not dropping:
                kept.append(line)
        self.headers = kept


class CoalescingHandler(WSGIHandler):
    _coalescing = False
    _held_head = None

    MessageClass = RequestHeaders

    def log_request(self):
        """No access log (pywsgi would format the line even with logging off)."""

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
        # One plain send first: gevent's sendall asks the socket its buffer size on
        # every call. (The error bookkeeping is pywsgi's.)
        try:
            sent = self.socket.send(data)
            if sent < len(data):
                self.socket.sendall(memoryview(data)[sent:])
        except OSError as ex:
            self.status = f"socket error: {ex}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def finalize_headers(self):
        if self.provided_date is None:
            self.response_headers.append((b"Date", http_date()))
            self.provided_date = True
        super().finalize_headers()

    def _check_http_version(self):
        """HTTP/0.9 up to HTTP/1.x; anything else (``HTTP/1``, ``HTTP/x.y``) is a 400."""
        if self.request_version == "HTTP/1.1":
            return True
        match = HTTP_VERSION.fullmatch(self.request_version)
        return match is not None and (0, 9) <= (int(match[1]), int(match[2])) < (2, 0)

    def handle(self):
        try:
            super().handle()
        except OSError as exc:          # the client reset or went away
            log.debug("HTTP: [%s] connection error - %s", self._client(), exc)

    def _handle_client_error(self, ex):
        if not isinstance(ex, (ValueError, OSError)):   # pywsgi prints a traceback for these
            ex = ValueError(f"{type(ex).__name__}: {ex}")
        return super()._handle_client_error(ex)

    def log_error(self, msg, *args):
        """pywsgi's own complaints about a connection: one debug line."""
        text = msg % args if args else msg
        log.debug("HTTP: [%s] %s", self._client(), ascii(text)[:200])

    def _client(self):
        address = self.client_address
        return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else address


_date_cache = [0, b""]


def http_date():
    """The Date header's value, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, format_date_time(now)]
    return _date_cache[1]


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
