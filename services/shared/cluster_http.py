"""nsqadmin's HTTP client for the cluster's nodes (nsqd, nsqlookupd), graphite and the
notification endpoint.

Every request yields to gevent's hub, has a connect timeout and an overall deadline
(``--http-client-connect-timeout``, ``--http-client-request-timeout``), and reads at most
``max_body`` bytes. A failure raises ``UpstreamError`` whose text is the one Go's
nsqadmin shows for the same failure (``Get "http://...": dial tcp ...: connect: connection
refused``, ``got response 404 Not Found "..."``), so operators see familiar messages.
As Go's client does, a node that answers 403 with an ``https_port`` is asked again
over HTTPS on that port.
"""

import http.client
import json
import ssl as stdlib_ssl
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

import gevent
from gevent import socket, ssl

from greensq.services.shared import json_input

NSQ_ACCEPT = "application/vnd.nsq; version=1.0"
MAX_BODY = 64 * 1024 * 1024


class UpstreamError(Exception):
    """One failed request. ``address`` is the ``host:port`` that failed."""

    def __init__(self, text, address=""):
        super().__init__(text)
        self.address = address


class _Deadline(Exception):
    pass


def build_ssl_context(opts):
    """The client TLS context from the ``--http-client-tls-*`` flags."""
    context = ssl.create_default_context(
        cafile=opts.http_client_tls_root_ca_file or None)
    if opts.http_client_tls_insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = stdlib_ssl.CERT_NONE
    if opts.http_client_tls_cert:
        context.load_cert_chain(opts.http_client_tls_cert, opts.http_client_tls_key)
    return context


def _go_quote(data):
    """Bytes quoted as Go's ``%q`` shows them."""
    return json.dumps(data.decode("utf-8", "replace"), ensure_ascii=False)


def _status_line(status):
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class _Connection(http.client.HTTPConnection):
    """http.client over a gevent socket, TLS when ``context`` is given."""

    def __init__(self, host, port, connect_timeout, context=None):
        super().__init__(host, port, timeout=connect_timeout)
        self.context = context

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


class ClusterHTTP:
    """Requests with nsqadmin's timeouts, TLS settings and Go's error texts.

    HTTPS requests use one TLS context, made by ``make_ssl_context`` when the first one
    is sent: a default context loads the system's certificate authorities, about 20 ms of
    CPU that a daemon whose nodes all speak plain HTTP need not spend starting.
    """

    def __init__(self, connect_timeout=2.0, request_timeout=5.0,
                 make_ssl_context=ssl.create_default_context, max_body=MAX_BODY):
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.make_ssl_context = make_ssl_context
        self._ssl_context = None
        self.max_body = max_body

    def ssl_context(self):
        """The TLS context of HTTPS requests (made at the first call)."""
        if self._ssl_context is None:
            self._ssl_context = self.make_ssl_context()
        return self._ssl_context

    # -- the NSQ daemons' V1 API -------------------------------------------------------

    def get_json(self, address, path):
        """GET ``http://address/path`` and parse its JSON body."""
        body = self._nsq_request("GET", f"http://{address}{path}", address)
        try:
            return json_input.loads(body)
        except ValueError as exc:
            raise UpstreamError(f"invalid JSON from {address}: {exc}", address) from None

    def post(self, address, path):
        """POST ``http://address/path`` with an empty body (the NSQ action convention)."""
        self._nsq_request("POST", f"http://{address}{path}", address)

    def _nsq_request(self, method, url, address):
        headers = {"Accept": NSQ_ACCEPT}
        status, body, _ = self.request(method, url, headers=headers, address=address)
        if status == 403 and url.startswith("http:"):
            https_url = self._https_url(url, body)
            if https_url:
                status, body, _ = self.request(method, https_url, headers=headers,
                                               address=address)
        if status != 200:
            raise UpstreamError(f"got response {_status_line(status)} {_go_quote(body)}",
                                address)
        return body

    @staticmethod
    def _https_url(url, body):
        try:
            port = int(json_input.loads(body)["https_port"])
        except (ValueError, KeyError, TypeError, OverflowError):
            return None
        if not 0 < port < 65536:
            return None
        parts = urlsplit(url)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return urlunsplit(("https", f"{host}:{port}", parts.path, parts.query, ""))

    # -- any URL -----------------------------------------------------------------------

    def request(self, method, url, body=None, headers=None, address=None):
        """``(status, body, content_type)`` of one request; UpstreamError on failure."""
        verb = method.capitalize()
        try:
            parts = urlsplit(url)
            secure = parts.scheme == "https"
            host = parts.hostname or ""
            port = parts.port or (443 if secure else 80)
            context = self.ssl_context() if secure else None
            conn = _Connection(host, port, self.connect_timeout, context)
        except (ValueError, http.client.InvalidURL) as exc:
            # A node's address is whatever it told nsqlookupd: a port out of range, a
            # bracket left open, control characters.
            raise UpstreamError(f'{verb} "{url}": {exc}', address or url) from None
        address = address or parts.netloc
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        try:
            with gevent.Timeout(self.request_timeout, _Deadline):
                try:
                    conn.connect()
                except socket.timeout:
                    raise UpstreamError(f'{verb} "{url}": dial tcp {host}:{port}: i/o timeout',
                                        address) from None
                except socket.gaierror:
                    raise UpstreamError(f'{verb} "{url}": dial tcp: lookup {host}: no such host',
                                        address) from None
                except stdlib_ssl.SSLCertVerificationError as exc:
                    raise UpstreamError(f'{verb} "{url}": tls: failed to verify certificate: '
                                        f"{exc.verify_message}", address) from None
                except stdlib_ssl.SSLError as exc:
                    raise UpstreamError(f'{verb} "{url}": tls: {exc.reason or exc}',
                                        address) from None
                except OSError as exc:
                    reason = (exc.strerror or str(exc)).lower()
                    raise UpstreamError(
                        f'{verb} "{url}": dial tcp {host}:{port}: connect: {reason}',
                        address) from None
                conn.sock.settimeout(self.request_timeout)
                conn.request(method, target, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read(self.max_body + 1)
                if len(data) > self.max_body:
                    raise UpstreamError(f'{verb} "{url}": response larger than '
                                        f'{self.max_body} bytes', address)
                return resp.status, data, resp.getheader("Content-Type", "")
        except _Deadline:
            raise UpstreamError(f'{verb} "{url}": context deadline exceeded '
                                "(Client.Timeout exceeded while awaiting headers)",
                                address) from None
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(f'{verb} "{url}": {exc or type(exc).__name__}',
                                address) from None
        finally:
            conn.close()
