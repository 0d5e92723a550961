"""Text that clients and peers control: IDENTIFY fields holding lone UTF-16 surrogates
(``"h\\udfff"``) or bytes that are not UTF-8, sent to nsqd and, by anyone who can reach its
TCP port, to nsqlookupd; and cluster nodes whose /stats carry the same or nest too deep.

Go's JSON decoder turns both kinds into U+FFFD, so every page and document a Go daemon
serves stays valid UTF-8. Here every endpoint that shows such text must answer 200 with
valid UTF-8, show U+FFFD where the bad text was, and log no traceback.
"""

import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from admin_cluster import AdminCluster
from support import FRAME_RESPONSE, V1Client, V2Client

pytestmark = pytest.mark.slow   # starts daemon processes

BAD = "\ufffd"
# JSON bodies as a client writes them: escapes of lone surrogates ...
ESCAPED = (b'{"client_id": "c\\udfff", "hostname": "h\\ud800x", "user_agent": "ua\\udfff/1",'
           b' "feature_negotiation": true}')
# ... and raw bytes that are not UTF-8 (an encoded surrogate, then 0xff).
RAW = b'{"client_id": "r\xed\xbf\xbf", "hostname": "raw\xff", "user_agent": "ua\xff"}'


def identify(client, body):
    client.command("IDENTIFY", body)
    kind, data = client.read_frame()
    assert kind == FRAME_RESPONSE, data
    return data


def valid_utf8(daemon, path):
    """GET ``path``: 200, and its body as text (it must decode as strict UTF-8)."""
    status, _, body = daemon.http("GET", path)
    assert status == 200, (path, status, body[:300])
    return body.decode("utf-8")


def assert_no_traceback(*daemons):
    for daemon in daemons:
        assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]


def hostile_consumers(nsqd, topic="t", channel="ch"):
    """Two subscribed clients: one IDENTIFYed with surrogate escapes, one with raw bytes
    that are not UTF-8 (which Go accepts as well)."""
    clients = []
    for body in (ESCAPED, RAW):
        client = V2Client(nsqd.tcp_port)
        identify(client, body)
        client.sub(topic, channel)
        clients.append(client)
    return clients


def test_nsqd_stats_and_metrics_with_hostile_identify_fields(nsqd):
    clients = hostile_consumers(nsqd)
    text = valid_utf8(nsqd, "/stats")
    assert f"h{BAD}x:" in text and f"ua{BAD}/1" in text and f"raw{BAD}:" in text
    doc = json.loads(valid_utf8(nsqd, "/stats?format=json"))
    seen = {(c["client_id"], c["hostname"], c["user_agent"])
            for c in doc["topics"][0]["channels"][0]["clients"]}
    # One U+FFFD per escape, and per byte of an invalid sequence, as Go decodes them.
    assert seen == {(f"c{BAD}", f"h{BAD}x", f"ua{BAD}/1"),
                    (f"r{BAD * 3}", f"raw{BAD}", f"ua{BAD}")}
    valid_utf8(nsqd, "/metrics")
    assert nsqd.http("GET", "/ping")[2] == b"OK"
    assert_no_traceback(nsqd)
    for client in clients:
        client.close()


def v1_identify(client, body):
    client.sock.sendall(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
    return client.read_response()


PEER = (b'{"broadcast_address": "127.0.0.1", "hostname": "h\\udfff\xff",'
        b' "tcp_port": 4150, "http_port": %d, "version": "1.3.0\\ud800\\n[forged] line"}')


def test_nsqlookupd_endpoints_after_a_hostile_identify(lookupd_factory):
    lookupd = lookupd_factory()
    peer = V1Client(lookupd.tcp_port)
    assert json.loads(v1_identify(peer, PEER % 4151))["tcp_port"] == lookupd.tcp_port
    assert peer.command("REGISTER t ch") == b"OK"
    for path in ("/nodes", "/lookup?topic=t", "/channels?topic=t", "/topics", "/debug",
                 "/metrics", "/info"):
        valid_utf8(lookupd, path)
    (producer,) = json.loads(valid_utf8(lookupd, "/nodes"))["producers"]
    assert (producer["hostname"], producer["version"]) == (
        f"h{BAD}{BAD}", f"1.3.0{BAD}\n[forged] line")
    # nsqlookupd logs the version: on one line, the line break escaped.
    assert "1.3.0\ufffd\\n[forged] line" in lookupd.log_text()
    assert not any(line.startswith("[forged]") for line in lookupd.log_text().splitlines())
    # A port that does not fit Go's int fails IDENTIFY, as in Go.
    other = V1Client(lookupd.tcp_port)
    body = (b'{"broadcast_address": "a", "tcp_port": 1, "http_port": 100000000000000000000000,'
            b' "version": "1"}')
    assert v1_identify(other, body) == b"E_BAD_BODY IDENTIFY failed to decode JSON body"
    assert_no_traceback(lookupd)


class FakeNode:
    """An HTTP server that answers every GET with ``body``: a "node" that anyone who can
    reach nsqlookupd's TCP port can announce to nsqadmin."""

    def __init__(self, body):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


FAKE_STATS = (b'{"version": "1.3.0\\udfff", "health": "OK", "start_time": 1, "topics": ['
              b'{"topic_name": "t", "depth": 0, "message_count": 1, "channels": ['
              b'{"channel_name": "ch", "depth": 0, "message_count": 1, "clients": ['
              b'{"client_id": "fake\\udfff", "hostname": "fake\xff", "user_agent": "x\\ud800",'
              b' "remote_address": "10.0.0.1:1", "version": "V2"}]}]}], "producers": []}')
DEEP = b"[" * 5000 + b"]" * 5000


@pytest.fixture
def hostile_cluster(tmp_path):
    cluster = AdminCluster(tmp_path, nsqd_count=1).start()
    fakes = [FakeNode(FAKE_STATS), FakeNode(DEEP)]
    peers = []
    try:
        yield cluster, fakes, peers
    finally:
        for peer in peers:
            peer.close()
        for fake in fakes:
            fake.close()
        cluster.stop()


def test_nsqadmin_pages_with_hostile_clients_and_nodes(hostile_cluster):
    cluster, fakes, peers = hostile_cluster
    peers += hostile_consumers(cluster.nsqds[0])
    # "Nodes" registered by hand: two with hostile /stats, two at addresses no URL holds.
    bodies = [PEER % fake.port for fake in fakes] + [
        PEER.replace(b"127.0.0.1", b"[::1") % 4151, PEER % 70000]
    for body in bodies:
        peer = V1Client(cluster.lookupd.tcp_port)
        v1_identify(peer, body)
        assert peer.command("REGISTER t ch") == b"OK"
        peers.append(peer)
    cluster.wait_registered("t", nodes=1 + len(bodies), channel="ch")
    real_node = cluster.node_address(0)
    fake_node = f"127.0.0.1:{fakes[0].port}"
    pages = ["/", "/topics/t", "/topics/t/ch", "/nodes", f"/nodes/{real_node}",
             f"/nodes/{fake_node}", "/counter", "/lookup", "/api/topics/t/ch", "/api/nodes",
             f"/api/nodes/{fake_node}", "/metrics"]
    for path in pages:
        valid_utf8(cluster.admin, path)
    channel_page = valid_utf8(cluster.admin, "/topics/t/ch")
    assert f"h{BAD}x" in channel_page and f"fake{BAD}" in channel_page
    doc = json.loads(valid_utf8(cluster.admin, "/api/topics/t/ch"))
    assert {f"c{BAD}", f"fake{BAD}"} <= {c["client_id"] for c in doc["clients"]}
    for node in (f"127.0.0.1:{fakes[1].port}", "[::1", "127.0.0.1:70000"):
        assert node in doc["message"]          # named as failing, not shown
    assert_no_traceback(cluster.admin, cluster.lookupd, *cluster.nsqds)
