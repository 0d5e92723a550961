"""The fast tier's daemons: nsqd's and nsqlookupd's cores running in the test process.

Each core is built as the daemon's worker builds it (``load_nsqd``, ``NSQLookupd``, the
Falcon apps), but nothing listens on a port: HTTP requests go through Falcon's
``TestClient``, and every TCP client is one end of a gevent socket pair whose other end
is served in a greenlet by ``serve_connection``, the listener's own code (the magic, then
the V2 or V1 protocol).

gevent is not monkey-patched. The cores use gevent's own queues, events, sockets and
thread pool; the tests talk through gevent sockets, so a test waiting for a frame (a
``recv``) or polling with ``gevent_wait_until`` lets the hub run the daemon's greenlets.
``time.sleep``, ``wait_until`` or a standard-library socket would block the hub: not
here. The features that reach other hosts through the standard library (nsqlookupd
peers, statsd, auth servers) would need a patched process, so their flags are refused
(and a fast test must not PUT /config/nsqlookupd_tcp_addresses, which starts peers);
the process tier tests them.

``close()`` stops the core as the worker does (clients closed, queues flushed to disk,
metadata written), then checks that every greenlet the daemon started has ended and
removes the data directory it made.
"""

import gc
import itertools
import logging
import os
import shutil
import tempfile

import gevent
from falcon.testing import TestClient
from gevent import socket as gsocket
from gevent.pool import Group

from greensq.http.nsqd_api import create_app as nsqd_app
from greensq.http.nsqlookupd_app import create_app as nsqlookupd_app
from greensq.services.nsqd.nsqd import load_nsqd
from greensq.services.nsqd.options import parse_nsqd_options
from greensq.services.nsqlookupd.nsqlookupd import NSQLookupd
from greensq.services.nsqlookupd.options import parse_nsqlookupd_options
from greensq.services.shared.tcp_server import serve_connection
from support import StatsQueries, V1Client, V2Client, gevent_wait_until

# A socket pair has no peer address: each connection gets its own made-up one, so stats
# and nsqlookupd's producers (keyed by remote address) tell the connections apart.
_peer_ports = itertools.count(20000)

# Where a core's own data directory goes: memory where there is some (Linux's /dev/shm),
# so that the fsyncs a start, a publish in --durable and a close make cost nothing.
DATA_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Flags whose features talk to other hosts through the standard library.
REMOTE_FLAGS = {"lookupd_tcp_address": "--lookupd-tcp-address",
                "statsd_address": "--statsd-address",
                "auth_http_address": "--auth-http-address"}


class EscapeSurrogates(logging.Filter):
    """The daemons log a client's bad bytes as surrogate escapes, which their own handler
    writes out byte for byte; pytest-xdist cannot send such text from a worker (the core's
    log records are in the test's report), so here they are backslash-escaped."""

    def filter(self, record):
        message = record.getMessage()
        record.msg = message.encode("utf-8", "backslashreplace").decode("utf-8")
        record.args = None
        return True


logging.getLogger("greensq").addFilter(EscapeSurrogates())


def live_greenlets():
    """Every gevent greenlet that is started or scheduled and has not ended."""
    return {obj for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet) and not obj.dead}


class InProcessDaemon:
    """What both daemons share: the HTTP test client, socket-pair connections, close."""

    client_class = None      # the test side of a connection (V2Client, V1Client)

    def __init__(self):
        self.connections = Group()     # the server side of each socket pair
        self.clients = []
        self._greenlets_before = live_greenlets()
        self.core = None
        self.http_client = None

    def accept(self, internal=False):
        """``(our socket, address)`` of a new connection the daemon serves as its TCP
        listener would (the protocol magic is ours to send); ``internal``: one of the
        core's internal connections (its HTTP workers')."""
        ours, theirs = gsocket.socketpair()
        address = ("127.0.0.1", next(_peer_ports))
        protocols = self.core.internal_protocols() if internal else self.core.tcp_protocols()
        self.connections.spawn(serve_connection, theirs, address, protocols)
        return ours, address

    def connect(self, magic=None, timeout=10.0, internal=False):
        """A client (``client_class``) on a new connection; ``magic`` overrides the
        protocol magic it sends first (b"" sends none); ``internal`` as for ``accept``."""
        ours, address = self.accept(internal)
        client = self.client_class(sock=ours, timeout=timeout, magic=magic)
        client.remote_address = "%s:%d" % address    # as the daemon names the connection
        self.clients.append(client)
        return client

    def http(self, method, path, body=None, headers=None):
        """``(status, headers, body bytes)`` of one request, as ``Daemon.http``."""
        result = self.http_client.simulate_request(method, path, body=body, headers=headers)
        return result.status_code, dict(result.headers), result.content

    def close_core(self):
        """Shut the core down (the worker's stop)."""

    def disconnect(self):
        """Close every client; fail unless their connections' greenlets end."""
        for client in self.clients:
            client.close()
        self.clients = []
        if not self.connections.join(timeout=10):
            self.connections.kill()
            raise AssertionError("a connection's greenlet outlived its closed socket")

    def close(self):
        """Stop everything; fail if a greenlet the daemon started is still alive."""
        try:
            self.close_core()
        finally:
            self.disconnect()
        def leftover():
            return live_greenlets() - self._greenlets_before

        try:
            gevent_wait_until(lambda: not leftover(), timeout=5, message="greenlets to end")
        except AssertionError:
            alive = leftover()
            gevent.killall(list(alive))
            raise AssertionError(f"greenlets left running: {alive}") from None


class InProcessNsqd(InProcessDaemon, StatsQueries):
    """nsqd's core with NSQ's flags (``args``) on ``data_path``, or on a temporary
    directory of its own that ``close`` removes."""

    client_class = V2Client

    def __init__(self, *args, data_path=None):
        self.opts = parse_nsqd_options(list(args))
        for dest, flag in REMOTE_FLAGS.items():
            if getattr(self.opts, dest):
                raise ValueError(f"{flag} needs a monkey-patched process: test it in the "
                                 "process tier")
        super().__init__()
        self.own_dir = (tempfile.mkdtemp(prefix="nsqd-", dir=DATA_ROOT)
                        if data_path is None else None)
        self.opts.data_path = self.data_path = str(data_path or self.own_dir)
        self.open()

    def open(self):
        """Build the core from the data directory and start it."""
        self.core = load_nsqd(self.opts)
        self.http_client = TestClient(nsqd_app(self.core))
        self.core.start()

    def close_core(self):
        if self.core is not None and not self.core.exiting:
            self.core.stop_lookup()
            self.core.close()

    def restart(self):
        """Shut down (flushing to disk) and start a new core on the same directory."""
        try:
            self.close_core()
        finally:
            self.disconnect()
        self.open()
        return self

    def close(self):
        try:
            super().close()
        finally:
            if self.own_dir is not None:
                shutil.rmtree(self.own_dir, ignore_errors=True)

    # -- white-box access -------------------------------------------------------------------

    def channel(self, topic, channel):
        """The channel actor (created, as a SUB would)."""
        return self.core.get_topic(topic).get_channel(channel)

    def session(self, client):
        """The daemon's side of ``client``'s connection (its ClientV2), once it has one."""
        return gevent_wait_until(
            lambda: next((c for c in self.core.clients
                          if c.remote_address == client.remote_address), None),
            message=f"the session of {client.remote_address}")

    def subscribe(self, topic, channel, rdy=None, **identify):
        """A connected V2Client subscribed to ``topic:channel`` (after IDENTIFY with
        ``identify``'s fields, if any), returned once the channel has its RDY."""
        client = self.connect()
        if identify:
            client.identify(**identify)
        client.sub(topic, channel, rdy=rdy)
        if rdy is not None:
            self.wait_ready(client, rdy)
        return client

    def wait_ready(self, client, count):
        """Until the channel has seen ``client``'s RDY ``count``."""
        session = self.session(client)
        gevent_wait_until(lambda: session.consumer.ready_count == count,
                          message=f"RDY {count} from {client.remote_address}")


class InProcessNsqlookupd(InProcessDaemon):
    """nsqlookupd's core with NSQ's flags (``args``); it keeps nothing on disk."""

    client_class = V1Client

    def __init__(self, *args):
        super().__init__()
        self.opts = parse_nsqlookupd_options(list(args))
        self.core = NSQLookupd(self.opts)
        self.http_client = TestClient(nsqlookupd_app(self.core))

