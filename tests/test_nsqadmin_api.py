"""nsqadmin's JSON API over a real greensq cluster: numbers across nodes, actions fanned
out to every nsqd and nsqlookupd, notifications in NSQ's format, admin-only actions, the
same-origin rule, Go's error answers, /config, the live graph data and a node that is
down."""

import gzip
import json
import socket
import time

import pytest

from admin_cluster import ADMIN, ADMIN_HEADERS, FAST_GRAPHS, AdminCluster
from certs import Certs
from support import Daemon, V2Client, nsqadmin_daemon, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes

HOSTILE = "<script>window.pwned=1</script><b>agent</b>"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = AdminCluster(tmp_path_factory.mktemp("nsqadmin-api")).start()
    yield cluster
    cluster.stop()


def _stats_topic(cluster, index, topic):
    return cluster.nsqds[index].topic_stats(topic)


def test_topic_and_channel_numbers_add_up_across_nodes(cluster):
    for index, count in ((0, 3), (1, 2)):
        cluster.create_channel(index, "sums", "ch")
        cluster.publish(index, "sums", count)
    cluster.wait_registered("sums", nodes=2, channel="ch")
    status, topic = cluster.api("GET", "/api/topics/sums")
    assert status == 200, topic
    assert (topic["node"], topic["message_count"], topic["message"]) == ("*", 5, "")
    assert sorted(n["node"] for n in topic["nodes"]) == sorted(
        cluster.node_address(i) for i in range(2))
    [channel] = topic["channels"]
    assert (channel["node"], channel["depth"], channel["message_count"]) == ("*", 5, 5)
    assert sorted(n["depth"] for n in channel["nodes"]) == [2, 3]
    status, topics = cluster.api("GET", "/api/topics")
    assert "sums" in topics["topics"]


def test_channel_lists_clients_with_what_they_said(cluster):
    cluster.create_channel(0, "clients", "readers")
    cluster.wait_registered("clients", nodes=1, channel="readers")
    consumer = V2Client(cluster.nsqds[0].tcp_port)
    consumer.identify(client_id="reader-7", hostname="reader.example", user_agent=HOSTILE)
    consumer.sub("clients", "readers", rdy=4)
    try:
        def ready():
            doc = cluster.api("GET", "/api/topics/clients/readers")[1]
            return doc if doc["clients"] and doc["clients"][0]["ready_count"] == 4 else None

        doc = wait_until(ready, message="the consumer's RDY")
        [client] = doc["clients"]
        assert (client["client_id"], client["hostname"], client["user_agent"]) == (
            "reader-7", "reader.example", HOSTILE)
        assert (client["node"], client["ready_count"]) == (cluster.node_address(0), 4)
        assert doc["client_count"] == 1
    finally:
        consumer.close()


def test_nodes_and_one_node(cluster):
    cluster.publish(1, "on_one_node", 4)
    cluster.wait_registered("on_one_node", nodes=1)
    status, doc = cluster.api("GET", "/api/nodes")
    assert status == 200 and len(doc["nodes"]) == 2
    lookupd = f"127.0.0.1:{cluster.lookupd.http_port}"
    for node in doc["nodes"]:
        assert node["remote_addresses"][0].startswith(lookupd + "/")
        assert node["version"] == "1.3.0" and node["out_of_date"] is False
    node = cluster.node_address(1)
    status, doc = cluster.api("GET", f"/api/nodes/{node}")
    assert status == 200 and doc["node"] == node
    assert "on_one_node" in [t["topic_name"] for t in doc["topics"]]
    assert doc["total_messages"] == sum(t["message_count"] for t in doc["topics"])
    assert cluster.api("GET", "/api/nodes/127.0.0.1:1") == (404, {"message": "NODE_NOT_FOUND"})


def test_counter_counts_channel_messages_per_node(cluster):
    cluster.create_channel(0, "counted", "c")
    cluster.publish(0, "counted", 6)
    cluster.wait_registered("counted", nodes=1, channel="c")
    status, doc = cluster.api("GET", "/api/counter")
    entry = doc["stats"][f"counted:c:{cluster.node_address(0)}"]
    assert entry == {"node": cluster.node_address(0), "topic_name": "counted",
                     "channel_name": "c", "message_count": 6}


def test_actions_reach_every_node_and_are_announced(cluster):
    topic = "acted"
    for index in range(2):
        cluster.create_channel(index, topic, "work")
        cluster.publish(index, topic, 3)
    cluster.wait_registered(topic, nodes=2, channel="work")
    auth = {**ADMIN_HEADERS, "Authorization": "Basic Ym9iOnNlY3JldA==",   # bob:secret
            "User-Agent": "ops-script/1.0"}

    def act(method, path, body=None):
        status, doc = cluster.api(method, path, body, auth)
        assert (status, doc) == (200, {"message": ""})

    act("POST", f"/api/topics/{topic}", {"action": "pause"})
    assert all(_stats_topic(cluster, i, topic)["paused"] for i in range(2))
    act("POST", f"/api/topics/{topic}", {"action": "unpause"})
    assert not any(_stats_topic(cluster, i, topic)["paused"] for i in range(2))
    act("POST", f"/api/topics/{topic}/work", {"action": "pause"})
    assert all(cluster.nsqds[i].channel_stats(topic, "work")["paused"] for i in range(2))
    act("POST", f"/api/topics/{topic}/work", {"action": "empty"})
    assert [cluster.nsqds[i].channel_stats(topic, "work")["depth"] for i in range(2)] == [0, 0]
    act("DELETE", f"/api/topics/{topic}/work")
    assert all(cluster.nsqds[i].channel_stats(topic, "work") is None for i in range(2))
    assert "work" not in cluster.lookupd_json(f"/lookup?topic={topic}")["channels"]
    act("DELETE", f"/api/topics/{topic}")
    assert all(_stats_topic(cluster, i, topic) is None for i in range(2))

    actions = ["pause_topic", "unpause_topic", "pause_channel", "empty_channel",
               "delete_channel", "delete_topic"]
    wait_until(lambda: len(cluster.receiver.find(topic=topic)) == len(actions),
               message="every notification")
    received = cluster.receiver.find(topic=topic)
    assert [n["doc"]["action"] for n in received] == actions
    assert {n["content_type"] for n in received} == {"application/json"}
    doc = received[2]["doc"]
    assert list(doc) == ["action", "topic", "channel", "timestamp", "user", "remote_ip",
                         "user_agent", "url", "via"]
    assert (doc["channel"], doc["user"], doc["user_agent"]) == ("work", "bob", "ops-script/1.0")
    assert doc["url"] == f"{cluster.admin_url}/api/topics/{topic}/work"
    assert doc["remote_ip"].startswith("127.0.0.1:")
    assert doc["via"] == socket.gethostname()
    assert abs(doc["timestamp"] - time.time()) < 600
    assert "channel" not in received[0]["doc"] and "node" not in received[0]["doc"]


def test_create_topic_and_channel(cluster):
    status, doc = cluster.api("POST", "/api/topics", {"topic": "made"}, ADMIN_HEADERS)
    assert (status, doc) == (200, {"message": ""})
    assert "made" in cluster.lookupd_json("/topics")["topics"]
    cluster.publish(0, "has_topic", 1)
    cluster.wait_registered("has_topic", nodes=1)
    status, doc = cluster.api("POST", "/api/topics", {"topic": "has_topic", "channel": "new"},
                              ADMIN_HEADERS)
    assert (status, doc) == (200, {"message": ""})
    assert cluster.nsqds[0].channel_stats("has_topic", "new") is not None
    wait_until(lambda: [n["doc"]["action"] for n in cluster.receiver.find(topic="has_topic")]
               == ["create_topic", "create_channel"], message="create notifications")


def test_tombstone_a_topic_producer(cluster):
    for index in range(2):
        cluster.publish(index, "tomb", 1)
    cluster.wait_registered("tomb", nodes=2)
    node = cluster.node_address(0)
    status, doc = cluster.api("DELETE", f"/api/nodes/{node}", {"topic": "tomb"}, ADMIN_HEADERS)
    assert (status, doc) == (200, {"message": ""})
    assert _stats_topic(cluster, 0, "tomb") is None
    assert _stats_topic(cluster, 1, "tomb") is not None
    producers = cluster.lookupd_json("/lookup?topic=tomb")["producers"]
    assert [p["http_port"] for p in producers] == [cluster.nsqds[1].http_port]
    wait_until(lambda: cluster.receiver.find(action="tombstone_topic_producer", node=node),
               message="tombstone notification")


def test_actions_are_for_admins_only(cluster):
    cluster.publish(0, "guarded", 1)
    cluster.wait_registered("guarded", nodes=1)
    for headers in ({}, {"X-Forwarded-User": "mallory"}, {"X-Other-User": ADMIN}):
        for method, path, body in (("POST", "/api/topics/guarded", {"action": "pause"}),
                                   ("DELETE", "/api/topics/guarded", None),
                                   ("POST", "/api/topics", {"topic": "sneaky"})):
            assert cluster.api(method, path, body, headers) == (403, {"message": "FORBIDDEN"})
    assert _stats_topic(cluster, 0, "guarded")["paused"] is False
    assert cluster.api("GET", "/api/topics/guarded")[0] == 200     # reading is for everyone


def test_cross_site_requests_are_refused(cluster):
    cluster.publish(0, "origin", 1)
    cluster.wait_registered("origin", nodes=1)
    pause = {"action": "pause"}
    here = cluster.admin_url
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": here.replace("127.0.0.1", "localhost")}):
        status, doc = cluster.api("POST", "/api/topics/origin", pause,
                                  {**ADMIN_HEADERS, **headers})
        assert (status, doc) == (403, {"message": "FORBIDDEN"}), headers
    assert _stats_topic(cluster, 0, "origin")["paused"] is False
    for headers in ({"Origin": here}, {"Referer": f"{here}/topics/origin",
                                       "Sec-Fetch-Site": "same-origin"}):
        status, doc = cluster.api("POST", "/api/topics/origin", {"action": "unpause"},
                                  {**ADMIN_HEADERS, **headers})
        assert (status, doc) == (200, {"message": ""}), headers


@pytest.mark.parametrize("method,path,body,expected", [
    ("POST", "/api/topics/t", "", "EOF"),
    ("POST", "/api/topics/t", "xx", "invalid character 'x' looking for beginning of value"),
    ("POST", "/api/topics/t", '{"action": "explode"}', "INVALID_ACTION"),
    ("POST", "/api/topics/t/c", '{"action": "delete"}', "INVALID_ACTION"),
    ("POST", "/api/topics", '{"topic": "bad topic!"}', "INVALID_TOPIC"),
    ("POST", "/api/topics", '{"topic": "ok", "channel": "bad/ch"}', "INVALID_CHANNEL"),
    ("POST", "/api/topics", '["t"]', "json: cannot unmarshal array into Go value of type struct"),
    ("POST", "/api/topics/t", '{"action": 7}',
     "json: cannot unmarshal number into Go struct field .action of type string"),
    ("DELETE", "/api/nodes/127.0.0.1:1", "nonsense", "INVALID_BODY"),
    ("DELETE", "/api/nodes/127.0.0.1:1", '{"topic": "no way"}', "INVALID_TOPIC"),
])
def test_bad_requests_get_go_errors(cluster, method, path, body, expected):
    assert cluster.api(method, path, body, ADMIN_HEADERS) == (400, {"message": expected})


def test_unknown_routes_and_methods(cluster):
    assert cluster.api("GET", "/api/nope") == (404, {"message": "NOT_FOUND"})
    assert cluster.api("PUT", "/api/topics/t", "{}", ADMIN_HEADERS) == (
        405, {"message": "METHOD_NOT_ALLOWED"})
    status, doc = cluster.api("GET", "/api/topics/never_seen")
    assert status == 502 and doc["message"].startswith(
        "UPSTREAM_ERROR: failed to query any nsqlookupd: got response 404 Not Found")
    status, _, body = cluster.admin.http("GET", "/ping")
    assert (status, body) == (200, b"OK")


def test_config_read_and_set(cluster):
    assert cluster.api("GET", "/config/log_level") == (200, 2)
    assert cluster.api("GET", "/config/admin_users") == (200, [ADMIN])
    assert cluster.api("GET", "/config/http_client_connect_timeout") == (200, 2_000_000_000)
    assert cluster.api("PUT", "/config/log_level", "debug") == (200, 1)
    assert cluster.api("PUT", "/config/log_level", "info") == (200, 2)
    assert cluster.api("PUT", "/config/log_level", "loud") == (400, {"message": "INVALID_VALUE"})
    lookupds = [f"127.0.0.1:{cluster.lookupd.http_port}"]
    assert cluster.api("PUT", "/config/nsqlookupd_http_addresses", lookupds) == (200, lookupds)
    assert cluster.api("PUT", "/config/nsqlookupd_http_addresses", "") == (
        413, {"message": "INVALID_VALUE"})
    assert cluster.api("PUT", "/config/admin_users", "[]") == (400, {"message": "INVALID_OPTION"})
    assert cluster.api("GET", "/config/nope") == (400, {"message": "INVALID_OPTION"})


def test_graphs_follow_the_messages(cluster):
    cluster.create_channel(1, "flowing", "drain")
    cluster.wait_registered("flowing", nodes=1, channel="drain")
    node = cluster.node_address(1)

    def rising():
        cluster.publish(1, "flowing", 20)
        status, doc = cluster.api("GET", "/api/graphs/topics/flowing")
        series = doc["series"].get(f"node-topic/{node}/flowing")
        return series and any(rate for rate in series["rate"] if rate) and doc

    doc = wait_until(rising, timeout=20, message="a message rate")
    assert doc["interval"] == 0.5
    assert len(doc["times"]) == len(doc["series"]["topic/flowing"]["rate"])
    assert doc["series"]["channel/flowing/drain"]["depth"][-1] > 0
    # A channel's series also has its finish, requeue and timeout rates; a topic's not.
    assert set(doc["series"]["channel/flowing/drain"]) == {
        "rate", "finish", "requeue", "timeout", "depth"}
    assert set(doc["series"]["topic/flowing"]) == {"rate", "depth"}
    # The steps start at the topic's first sample, not at nsqadmin's first poll.
    assert doc["series"]["topic/flowing"]["depth"][0] is not None
    status, topics = cluster.api("GET", "/api/graphs/topics?points=3")
    assert len(topics["times"]) <= 3 and "topic/flowing" in topics["series"]
    status, nodes = cluster.api("GET", "/api/graphs/nodes")
    assert f"node/{node}" in nodes["series"]
    status, one = cluster.api("GET", f"/api/graphs/nodes/{node}")
    assert f"node-channel/{node}/flowing/drain" in one["series"]


def test_pages_escape_and_protect(cluster):
    cluster.create_channel(0, "escaped", "seen")
    cluster.wait_registered("escaped", nodes=1, channel="seen")
    consumer = V2Client(cluster.nsqds[0].tcp_port)
    consumer.identify(client_id="<img src=x onerror=alert(1)>", user_agent=HOSTILE)
    consumer.sub("escaped", "seen", rdy=1)
    try:
        status, headers, body = cluster.admin.http("GET", "/topics/escaped/seen")
        headers = {k.lower(): v for k, v in headers.items()}
        html = body.decode()
        assert status == 200
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;b&gt;agent&lt;/b&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "<script>window" not in html and "<img src=x" not in html
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
    finally:
        consumer.close()


def test_assets_are_packaged_compressed_and_cached(cluster):
    status, _, html = cluster.admin.http("GET", "/topics")
    script = html.decode().split('<script defer src="', 1)[1].split('"', 1)[0]
    assert script.startswith("/static/nsqadmin.js?v=")
    status, headers, body = cluster.admin.http("GET", script, headers={"Accept-Encoding": "gzip"})
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).startswith(b"// nsqadmin")
    assert "immutable" in headers["cache-control"]
    assert headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert cluster.admin.http("GET", "/static/../setup.cfg")[0] == 404
    assert cluster.admin.http("GET", "/static/missing.js")[0] == 404


def _dead_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_node_that_is_down(cluster):
    """nsqd given directly, one of them down, under a base path: pages and API say which
    node is down and show the rest; /config is refused outside the allowed CIDR."""
    cluster.publish(0, "partly", 2)
    dead = _dead_address()
    admin = nsqadmin_daemon([f"--nsqd-http-address={cluster.node_address(0)}",
                             f"--nsqd-http-address={dead}", "--base-path=/admin",
                             "--allow-config-from-cidr=10.0.0.0/8"], env=FAST_GRAPHS).start()
    try:
        status, _, body = admin.http("GET", "/admin/api/topics/partly")
        doc = json.loads(body)
        assert status == 200 and doc["message_count"] == 2
        assert doc["message"].startswith(f'WARNING: Get "http://{dead}/stats?format=json')
        status, _, body = admin.http("GET", "/admin/nodes")
        html = body.decode()
        assert status == 200 and f"<strong>{dead}</strong> did not answer" in html
        assert f'data-node="{cluster.node_address(0)}"' in html
        assert admin.http("GET", "/admin/config/log_level")[0] == 403
        assert admin.http("GET", "/api/topics")[0] == 404
        status, _, body = admin.http("GET", "/admin/api/graphs/nodes")
        wait_until(lambda: dead in json.loads(admin.http("GET", "/admin/api/graphs/nodes")[2])[
            "down"], message="the poller notices the dead node")
    finally:
        admin.stop()


def test_nodes_that_require_tls(tmp_path):
    """An nsqd with --tls-required answers plain HTTP with 403 and its HTTPS port; nsqadmin
    asks again over HTTPS with its --http-client-tls-* settings, as Go's does."""
    certs = Certs(tmp_path / "certs")
    nsqd = Daemon(tmp_path / "nsqd", [*certs.server_flags("--tls-required=true"),
                                       "--tls-client-auth-policy=require-verify",
                                       f"--tls-root-ca-file={certs.ca}"]).start()
    trusted = nsqadmin_daemon([f"--nsqd-http-address={nsqd.http_address}",
                               f"--http-client-tls-root-ca-file={certs.ca}",
                               f"--http-client-tls-cert={certs.client_cert}",
                               f"--http-client-tls-key={certs.client_key}"]).start()
    untrusted = nsqadmin_daemon([f"--nsqd-http-address={nsqd.http_address}"]).start()
    try:
        status, _, body = trusted.http("GET", "/api/nodes")
        [node] = json.loads(body)["nodes"]
        assert status == 200 and node["http_port"] == nsqd.http_port
        status, _, body = untrusted.http("GET", "/api/nodes")
        message = json.loads(body)["message"]
        assert status == 502 and message.startswith("UPSTREAM_ERROR: failed to query any nsqd: ")
        assert f'"https://{nsqd.http_address.split(":")[0]}:' in message
        assert "tls: failed to verify certificate: " in message
    finally:
        for daemon in (trusted, untrusted, nsqd):
            daemon.stop()
