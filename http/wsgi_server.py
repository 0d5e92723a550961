"""The worker's HTTP/1.1 server: httptools parses, one greenlet per connection calls the
WSGI app (the daemon's Falcon app) and answers in one send.

NSQ's HTTP API is small requests and small answers (``POST /pub`` -> ``OK``), so the
server's own cost per request matters as much as the app's. gevent's pywsgi spent about
three times the app's time around each call (header parsing through the email package,
a file object per connection, two sends per response); here the C parser feeds a few
callbacks, the environ is one dict, and head and body leave in one ``send``. Pipelined
requests that arrive together are answered together, in order, in one ``send``.

Behaviour, as Go's net/http (which Go nsqd uses) where clients can tell:
- HTTP/1.0 and 1.1; keep-alive by their rules; anything else (``HTTP/1``, 0.9, 2.0) 400.
- Folded header lines are joined; a Content-Length beside ``Transfer-Encoding: chunked``
  yields to the chunks; a line that is not a header is a 400.
- ``Expect: 100-continue`` gets its interim answer when the body is still to come.

Limits: the request line is at most 8 KiB (else 414), the head at most 100 fields of
64 KiB (else 431); a body is buffered up to ``max_body`` bytes. A request that declares a
larger body is handed to the app at once, without its body, so the app answers its own
413 (``MSG_TOO_BIG``...) from the Content-Length, and the connection closes. A connection
idle or stalled for ``IDLE_TIMEOUT`` seconds (300; ``GREENSQ_HTTP_IDLE_TIMEOUT`` in the
environment at start overrides it) is closed. Malformed requests and clients that reset
get their 400 or nothing, and at most a debug line in the log, never a traceback.
"""

import io
import logging
import os
import socket
import sys
import time
from collections import deque
from urllib.parse import unquote_to_bytes

import gevent
import httptools
from gevent.server import StreamServer

from greensq.http.accept_share import MAX_PAUSES, PAUSE
from greensq.services.shared.compiled import use_compiled
from greensq.services.shared.transport import PlainTransport, TLSTransport

log = logging.getLogger("greensq")

IDLE_TIMEOUT = float(os.environ.get("GREENSQ_HTTP_IDLE_TIMEOUT") or 300.0)
MAX_REQUEST_LINE = 8192
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
READ_SIZE = 65536

# Methods the parser knows; any other token method goes to the app as Go's server sends
# it (nsqd answers 404 / 405), parsed under a stand-in the parser knows.
_PARSER_METHODS = frozenset([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"])
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

_REASONS = {400: "Bad Request", 414: "Request-URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}
_NO_BODY_STATUSES = ("1", "204", "304")

# Header name as received -> its WSGI environ key, for the names clients send (filled as
# they are seen, up to a bound, so a client inventing names cannot grow it).
_ENVIRON_KEYS = {b"Content-Length": "CONTENT_LENGTH", b"Content-Type": "CONTENT_TYPE"}
_ENVIRON_KEYS_BOUND = 256


def _environ_key(name):
    key = name.decode("latin-1").upper().replace("-", "_")
    if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
        key = "HTTP_" + key
    if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_BOUND:
        _ENVIRON_KEYS[name] = key
    return key


class _Request:
    """One request as the parser reports it."""

    __slots__ = ("url", "headers", "body", "body_size", "complete", "head_done",
                 "method", "version", "keep_alive", "expect_continue", "oversized")

    def __init__(self):
        self.url = b""
        self.headers = []
        self.body = []
        self.body_size = 0
        self.complete = False
        self.head_done = False
        self.expect_continue = False
        self.oversized = False


class _Refusal(Exception):
    """A request the server answers itself, then closes the connection."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(_cache=[0, ""]):
    """The Date header line (IMF-fixdate), formatted once a second."""
    now = int(time.time())
    if _cache[0] != now:
        t = time.gmtime(now)
        _cache[:] = [now, "Date: %s, %02d %s %d %02d:%02d:%02d GMT\r\n" % (
            _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
            t.tm_hour, t.tm_min, t.tm_sec)]
    return _cache[1]


def refusal_response(status):
    reason = _REASONS[status]
    body = f"{status} {reason}".encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class Connection:
    """One client connection: parser callbacks, then a WSGI call per complete request."""

    def __init__(self, server, sock, address, transport):
        self.server = server
        self.sock = sock
        self.address = address
        self.transport = transport
        self.busy = False           # a request is being answered (shutdown waits for it)
        self.last_active = time.monotonic()
        self._base_environ = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": server.environ_host,
            "SERVER_PORT": server.environ_port,
            "REMOTE_ADDR": address[0] if address else "",
            "REMOTE_PORT": str(address[1]) if address else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": server.url_scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_headers=True, lenient_chunked_length=True)
        self.complete = deque()     # requests parsed whole, not yet answered
        self.current = None         # the request being parsed
        self.method_override = None
        self._status = None
        self._headers = None

    # -- parser callbacks (they record; the serve loop decides) -----------------------------

    def on_message_begin(self):
        self.current = _Request()

    def on_url(self, url):
        request = self.current
        request.url += url
        if len(request.url) > MAX_REQUEST_LINE:
            raise _Refusal(414)

    def on_header(self, name, value):
        request = self.current
        if len(request.headers) >= MAX_HEADERS or len(name) + len(value) > MAX_HEADER_LINE:
            raise _Refusal(431)
        request.headers.append((name, value))
        if len(name) == 14 and name.lower() == b"content-length":
            if value.strip().isdigit() and int(value) > self.server.max_body:
                request.oversized = True
        elif len(name) == 6 and name.lower() == b"expect":
            request.expect_continue = value.strip().lower() == b"100-continue"

    def on_headers_complete(self):
        request = self.current
        parser = self.parser
        request.head_done = True
        request.method = self.method_override or parser.get_method().decode("latin-1")
        self.method_override = None
        request.version = parser.get_http_version()
        if request.version not in ("1.1", "1.0"):
            raise _Refusal(400)
        request.keep_alive = parser.should_keep_alive()

    def on_body(self, body):
        request = self.current
        if request.oversized:
            return
        request.body.append(body)
        request.body_size += len(body)
        if request.body_size > self.server.max_body:   # a chunked body past the bound
            request.oversized = True

    def on_message_complete(self):
        self.current.complete = True
        self.complete.append(self.current)
        self.current = None

    # -- serving ---------------------------------------------------------------------------

    def serve(self):
        transport = self.transport
        # A plain socket is waited on in the hub and read once readable (no failed reads);
        # TLS reads through its SSLSocket.
        read = getattr(transport, "recv_when_readable", transport.recv)
        send = transport.sendall
        try:
            while True:
                data = read(READ_SIZE)
                if not data:
                    return
                self.last_active = time.monotonic()
                if self.current is None:
                    data = self._stand_in_method(data)
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    # Requests completed before the bad one are still answered, unless one
                    # of them ends the connection anyway (HTTP/1.0 followed by more data).
                    refusal = exc.__context__
                    status = refusal.status if isinstance(refusal, _Refusal) else 400
                    log.debug("HTTP: [%s] bad request - %s", self._client(), exc)
                    if self._answer_complete():
                        send(refusal_response(status))
                    return
                if self.complete and not self._answer_complete():
                    return
                request = self.current
                if request is not None and request.head_done:
                    if request.oversized:
                        # Answered from its head (a 413 from the app); the body is not read.
                        request.keep_alive = False
                        send(self._response(request))
                        return
                    if request.expect_continue:
                        request.expect_continue = False
                        send(b"HTTP/1.1 100 Continue\r\n\r\n")
        except OSError as exc:          # the client reset or went away; or idled too long
            log.debug("HTTP: [%s] connection error - %s", self._client(), exc)
        finally:
            # The parser calls this connection's methods: without it nothing refers back
            # here, and the connection is freed when it ends (the worker's cyclic
            # collector seldom runs).
            self.parser = None

    def _stand_in_method(self, data):
        """A request starting with a method the parser does not know (``BREW``) is parsed
        as a POST and reaches the app with its own method."""
        method, space, _ = data[:32].partition(b" ")
        if space and method not in _PARSER_METHODS and method and all(
                byte in _TOKEN for byte in method):
            self.method_override = method.decode("latin-1")
            return b"POST" + data[len(method):]
        return data

    def _answer_complete(self):
        """Answer every complete request, in order, in one send; False once the
        connection is to close (a request said so, or the server is shutting down)."""
        out = []
        keep_going = True
        self.busy = True
        try:
            while self.complete and keep_going:
                request = self.complete.popleft()
                if self.server.closing:
                    request.keep_alive = False
                out.append(self._response(request))
                keep_going = request.keep_alive
            if out:
                self.transport.sendall(out[0] if len(out) == 1 else b"".join(out))
        finally:
            self.busy = False
            self.last_active = time.monotonic()
        return keep_going

    def _response(self, request):
        """One request's whole response as bytes: the app's early answer (see ApiServer),
        or what the WSGI app answers."""
        answer = None
        early_answer = self.server.early_answer
        if early_answer is not None and request.method == "POST" and not request.oversized:
            path, _, query = request.url.partition(b"?")
            body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
            answer = early_answer(path, query, body)
        if answer is None:
            answer = self._app_answer(request)
            if answer is None:
                request.keep_alive = False
                return refusal_response(500)
        return self._encode(request, *answer)

    def _app_answer(self, request):
        """The WSGI app's ``(status, headers, body)`` for a request; None if it failed."""
        environ = self._environ(request)
        try:
            result = self.server.application(environ, self._start_response)
            try:
                body = result[0] if type(result) is list and len(result) == 1 else b"".join(
                    result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            log.exception("HTTP %s %s: unexpected error", request.method, request.url[:200])
            return None
        return self._status, self._headers, body

    def _encode(self, request, status, headers, body):
        head = ["HTTP/1.1 " if request.version == "1.1" else "HTTP/1.0 ", status, "\r\n"]
        has_length = False
        for name, value in headers:
            head += (name, ": ", value, "\r\n")
            if not has_length and len(name) == 14 and name.lower() == "content-length":
                has_length = True
        if not has_length and not status.startswith(_NO_BODY_STATUSES):
            head += ("Content-Length: ", str(len(body)), "\r\n")
        head.append(http_date())
        if not request.keep_alive:
            head.append("Connection: close\r\n\r\n")
        elif request.version == "1.0":
            head.append("Connection: keep-alive\r\n\r\n")
        else:
            head.append("\r\n")
        head = "".join(head).encode("latin-1")
        return head if request.method == "HEAD" else head + body

    def _start_response(self, status, headers, exc_info=None):
        self._status = status
        self._headers = headers
        return self._write_unsupported

    @staticmethod
    def _write_unsupported(data):
        raise NotImplementedError("the WSGI write() callable is not supported")

    def _environ(self, request):
        path, _, query = request.url.partition(b"?")
        body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
        environ = self._base_environ.copy()
        environ["REQUEST_METHOD"] = request.method
        environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode(
            "latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.version == "1.1" else "HTTP/1.0"
        environ["wsgi.input"] = io.BytesIO(body)
        declared = None
        for name, value in request.headers:
            key = _ENVIRON_KEYS.get(name) or _environ_key(name)
            if key == "CONTENT_LENGTH":
                declared = value.strip().decode("latin-1")
            elif key in environ:
                environ[key] += "," + value.decode("latin-1")
            else:
                environ[key] = value.decode("latin-1")
        # The app sees what it got: the buffered body's length, or (for a body too big to
        # buffer) what was declared, so it can refuse it by size.
        if request.oversized and declared is not None:
            environ["CONTENT_LENGTH"] = declared
        elif body or declared is not None:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    def _client(self):
        address = self.address
        return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "unknown"


class ApiServer(StreamServer):
    """The HTTP server for one listener (HTTP, or HTTPS with ``ssl_context``).

    ``accept_share``: other processes accept on the same listener (nsqd's HTTP workers),
    and this one takes its share of new connections as accept_share.py says, pausing
    while it serves more than the others.
    """

    def __init__(self, listener, application, spawn, max_body=1 << 20, ssl_context=None,
                 accept_share=None):
        super().__init__(listener, self.handle_connection, spawn=spawn)
        self.accept_share = accept_share
        self._pauses = 0
        self._serving = 0       # connections accepted and not yet closed
        self.application = application
        # An app may answer some POSTs from their raw path, query and body, before any
        # WSGI environ is made: nsqd's common /pub (publish_api.py's CommonPubs).
        self.early_answer = getattr(application, "early_answer", None)
        self.max_body = max_body
        self.ssl_context = ssl_context
        self.url_scheme = "https" if ssl_context is not None else "http"
        host, port = self.socket.getsockname()[:2]
        self.environ_host, self.environ_port = host, str(port)
        self.connections = set()
        self.closing = False
        self._sweeper = None

    def start(self):
        super().start()
        self._sweeper = gevent.spawn(self._close_idle_connections)

    def stop(self, timeout=None):
        if self._sweeper is not None:
            self._sweeper.kill()
        super().stop(timeout)

    def do_read(self):
        if self.accept_share is not None and self._watcher is None:
            return None         # leaving the listener to the others for now
        return super().do_read()

    def do_handle(self, *args):
        super().do_handle(*args)
        if self.accept_share is not None:
            self._serving += 1
            self.accept_share.serving(self._serving)
            self._pauses = 0
            self._take_share()

    def do_close(self, *args):      # after the handler, whatever happened
        super().do_close(*args)
        if self.accept_share is not None:
            self._serving -= 1
            self.accept_share.serving(self._serving)

    def _take_share(self):
        """Accept again at once, or after a pause while ahead of the others."""
        if self.closing or not self.started:
            return
        if self._pauses < MAX_PAUSES and self.accept_share.ahead():
            self._pauses += 1
            self.stop_accepting()
            self._timer = self.loop.timer(PAUSE)
            self._timer.start(self._pause_over)
        elif self._watcher is None:
            self.start_accepting()

    def _pause_over(self):
        self._timer = None      # a one-shot timer, done
        self._take_share()

    def handle_connection(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.settimeout(IDLE_TIMEOUT)    # bounds the TLS handshake and a stuck send
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ValueError) as exc:
                log.debug("HTTPS: [%s] TLS handshake failed - %s", address, exc)
                sock.close()
                return
            transport = TLSTransport(sock)
        else:
            transport = PlainTransport(sock)
        connection = Connection(self, sock, address, transport)
        self.connections.add(connection)
        try:
            connection.serve()
        finally:
            self.connections.discard(connection)
            sock.close()

    def _close_idle_connections(self):
        """Close connections idle or stalled for IDLE_TIMEOUT (reads wait in the hub
        with no timer of their own)."""
        while True:
            gevent.sleep(min(IDLE_TIMEOUT / 2, 5.0))
            limit = time.monotonic() - IDLE_TIMEOUT
            for connection in list(self.connections):
                if not connection.busy and connection.last_active < limit:
                    _shutdown(connection.sock)

    def close_idle(self):
        """Stop accepting, and close the keep-alive connections not answering a request
        now; the others close after their current answer."""
        self.closing = True
        self.close()
        for connection in list(self.connections):
            if not connection.busy:
                _shutdown(connection.sock)

    @property
    def active(self):
        """How many connections are answering a request right now."""
        return sum(1 for connection in self.connections if connection.busy)


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


use_compiled(globals())
