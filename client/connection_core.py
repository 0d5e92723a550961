"""What a connection to one nsqd holds on either client, without I/O: its options and
callbacks, and its :class:`~.protocol.ClientProtocol`. The gevent
:class:`~.connection.Connection` and the asyncio :class:`~.aio.connection.Connection`
add the reading and writing.
"""

import logging
import ssl

from greensq.services.shared.wire import MAGIC_V2

from .protocol import (
    ClientProtocol, encode_command, format_address, identify_options, parse_address)
from .protocol import tls_client_context

log = logging.getLogger("greensq.client")


class ConnectionCore:
    """A connection to one nsqd.

    Callbacks (all optional, called where the connection reads, must not block long):

    * ``on_messages(conn, messages)``: the message frames of one read from the socket,
      as a list of :class:`Message` whose responses go to ``conn.responder`` (a burst
      at a time, so per-burst bookkeeping is paid once);
    * ``on_error(conn, error)``: an error frame that answered no request (FIN/REQ/TOUCH
      failures), or a fatal one;
    * ``on_close(conn)``: the connection is gone (once, whatever the reason);
    * ``on_command(conn, line)``: every command line queued for sending (a hook for
      instrumentation and tests; costs nothing when unset).

    IDENTIFY options are NSQ's, in NSQ's units converted from seconds where they are
    durations (see :func:`.protocol.identify_options`): ``heartbeat_interval``,
    ``output_buffer_timeout``, ``msg_timeout`` in seconds; ``output_buffer_size`` in
    bytes; ``sample_rate`` 0-99. Transport upgrades: ``tls_v1`` with ``tls_context`` or
    one made from ``tls_ca_file`` / ``tls_verify`` / ``tls_cert`` + ``tls_key``;
    ``snappy`` or ``deflate`` (``deflate_level`` 1-9). ``auth_secret`` is sent with AUTH
    when nsqd says ``auth_required``.
    """

    # The SSLContext class of the sockets TLS wraps, and the callbacks that receive the
    # requests' answers: the I/O side's.
    tls_context_class = ssl.SSLContext
    _resolve = _reject = None

    def __init__(self, address, *, heartbeat_interval=30.0, connect_timeout=5.0,
                 on_messages=None, on_error=None, on_close=None, on_command=None,
                 responder=None, auth_secret=None, tls_context=None, tls_ca_file=None,
                 tls_verify=True, tls_cert=None, tls_key=None, **identify):
        self.host, self.port = parse_address(address)   # port None: a Unix socket's path
        self.address = format_address(address)
        self.heartbeat_interval = heartbeat_interval
        self.identify_options = identify_options(heartbeat_interval=heartbeat_interval,
                                                 **identify)
        if identify.get("tls_v1") and tls_context is None:
            tls_context = self.new_tls_context(tls_ca_file, tls_verify, tls_cert, tls_key)
        self.tls_context = tls_context
        self.connect_timeout = connect_timeout
        self.on_messages = on_messages
        self.on_error = on_error
        self.on_close = on_close
        self.on_command = on_command
        self.responder = responder
        self.protocol = ClientProtocol(
            self.identify_options, resolve=self._resolve, reject=self._reject,
            on_error=self._unanswered_error, auth_secret=auth_secret,
            responder=responder, address=self.address)
        self.closed = False

    @classmethod
    def new_tls_context(cls, ca_file=None, verify=True, cert_file=None, key_file=None):
        return tls_client_context(ca_file, verify, cert_file, key_file,
                                  context_class=cls.tls_context_class)

    @property
    def settings(self):
        """nsqd's IDENTIFY answer (feature negotiation)."""
        return self.protocol.settings

    @property
    def auth_info(self):
        """nsqd's AUTH answer: identity, identity_url, permission_count."""
        return self.protocol.auth_info

    @property
    def pending_requests(self):
        return self.protocol.pending_requests

    def send(self, data):
        raise NotImplementedError

    def command(self, name, *params, body=None):
        """Queue a command that nsqd does not answer (RDY, FIN, REQ, TOUCH, NOP)."""
        self.send(encode_command(name, *params, body=body))

    def _hello(self):
        """The first bytes to send: the magic and IDENTIFY."""
        hello = self.protocol.initiate()
        if self.on_command is not None:
            self.on_command(self, hello[len(MAGIC_V2):])
        return hello

    def _unanswered_error(self, error):
        if self.on_error is not None:
            self.on_error(self, error)
        else:
            log.error("%s: %s", self.address, error)

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<{type(self).__module__}.Connection {self.address} {state}>"
