"""A real cluster for nsqadmin's tests: nsqlookupd, two nsqd registered with it, nsqadmin
over them, and an HTTP endpoint that collects nsqadmin's admin-action notifications.
One cluster serves a whole test module; each test uses its own topic names.

Beside it, ReplicatedPair: a primary nsqd, its replica and nsqadmin over both (README,
"Replication").
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support import Daemon, nsqadmin_daemon, nsqlookupd_daemon, wait_until

ADMIN = "alice"
ADMIN_HEADERS = {"X-Forwarded-User": ADMIN}
# Samples for the live graphs every half second, so tests see them move quickly.
FAST_GRAPHS = {"GREENSQ_NSQADMIN_POLL_INTERVAL": "0.5"}


class NotificationReceiver:
    """Collects the JSON bodies POSTed to it (``documents``)."""

    def __init__(self):
        receiver = self
        self.documents = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.documents.append(
                        {"content_type": self.headers.get("Content-Type"),
                         "doc": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def find(self, **fields):
        """The notifications whose documents have all ``fields``."""
        with self.lock:
            return [n for n in self.documents
                    if all(n["doc"].get(k) == v for k, v in fields.items())]


class AdminCluster:
    def __init__(self, root, admin_args=(), nsqd_count=2):
        self.root = root
        self.admin_args = list(admin_args)
        self.nsqd_count = nsqd_count
        self.lookupd = None
        self.nsqds = []
        self.admin = None
        self.receiver = None

    def start(self):
        self.lookupd = nsqlookupd_daemon(self.root / "lookupd",
                                         ["--broadcast-address=127.0.0.1"]).start()
        for i in range(self.nsqd_count):
            self.nsqds.append(Daemon(self.root / f"nsqd{i}", [
                f"--lookupd-tcp-address=127.0.0.1:{self.lookupd.tcp_port}",
                "--broadcast-address=127.0.0.1"]).start())
        self.receiver = NotificationReceiver().start()
        self.admin = nsqadmin_daemon([
            f"--lookupd-http-address=127.0.0.1:{self.lookupd.http_port}",
            f"--notification-http-endpoint={self.receiver.url}",
            f"--admin-user={ADMIN}", *self.admin_args], env=FAST_GRAPHS).start()
        wait_until(lambda: len(self.lookupd_json("/nodes")["producers"]) == self.nsqd_count,
                   message="every nsqd registered with nsqlookupd")
        return self

    def stop(self):
        for daemon in [self.admin, *self.nsqds, self.lookupd]:
            if daemon is not None:
                daemon.stop()
        if self.receiver is not None:
            self.receiver.stop()

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin.http_port}"

    def node_address(self, index):
        return f"127.0.0.1:{self.nsqds[index].http_port}"

    # -- talking to the daemons ----------------------------------------------------------

    def api(self, method, path, body=None, headers=None):
        """``(status, parsed JSON)`` of one nsqadmin request."""
        data = json.dumps(body) if isinstance(body, (dict, list)) else body
        status, _, raw = self.admin.http(method, path, data, headers)
        return status, json.loads(raw) if raw else None

    def lookupd_json(self, path):
        status, _, raw = self.lookupd.http("GET", path)
        return json.loads(raw) if status == 200 else None

    def publish(self, index, topic, count, body=b"x" * 32):
        status, _, raw = self.nsqds[index].http(
            "POST", f"/mpub?topic={topic}", b"\n".join([body] * count))
        assert status == 200, raw

    def create_channel(self, index, topic, channel):
        """The topic (if new) and the channel on one nsqd."""
        for path in (f"/topic/create?topic={topic}",
                     f"/channel/create?topic={topic}&channel={channel}"):
            status, _, raw = self.nsqds[index].http("POST", path)
            assert status == 200, raw

    def wait_registered(self, topic, nodes, channel=None):
        """Until nsqlookupd lists ``nodes`` producers of the topic (and the channel)."""
        def registered():
            found = self.lookupd_json(f"/lookup?topic={topic}")
            return (found is not None and len(found["producers"]) == nodes
                    and (channel is None or channel in found["channels"]))
        wait_until(registered, message=f"{topic} registered by {nodes} nsqd")


class ReplicatedPair:
    """A primary nsqd with one replica, and nsqadmin given both."""

    def __init__(self, nsqd_factory):
        self.replica = nsqd_factory("--broadcast-address=127.0.0.1")
        self.primary = nsqd_factory("--broadcast-address=127.0.0.1",
                                    "--replica-failover-timeout=2s",
                                    f"--replica-tcp-address={self.replica.tcp_address}")
        self.primary_node = f"127.0.0.1:{self.primary.http_port}"
        self.replica_node = f"127.0.0.1:{self.replica.http_port}"
        self.admin = nsqadmin_daemon([f"--nsqd-http-address={self.primary_node}",
                                      f"--nsqd-http-address={self.replica_node}"],
                                     env=FAST_GRAPHS).start()

    def api(self, path):
        status, _, body = self.admin.http("GET", path)
        assert status == 200, body
        return json.loads(body)

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin.http_port}"

    def page(self, path):
        status, _, body = self.admin.http("GET", path)
        assert status == 200, body
        return body.decode()

    def listed(self):
        """``{node: its replication}`` of /api/nodes (None for a node without)."""
        return {f'{n["broadcast_address"]}:{n["http_port"]}': n.get("replication")
                for n in self.api("/api/nodes")["nodes"] or []}

    def replica_state(self):
        listed = self.listed().get(self.primary_node)
        return listed and listed["replicas"][0]["state"]

    def copy_of_primary(self):
        doc = self.api(f"/api/nodes/{self.replica_node}")
        return doc.get("replication", {}).get("copies", [None])[0]
