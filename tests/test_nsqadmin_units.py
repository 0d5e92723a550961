"""nsqadmin's parts on their own: the rolling rate history, reading node documents that
hold ``null`` or lack fields, options and start-up checks, graphite targets and rates,
and the notification document."""

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from go_nsq_fakes import FakeNsqd, load_fixture
from support import nsqadmin_daemon
from greensq.services.nsqadmin.graphite import Graphite, sanitize_key
from greensq.services.nsqadmin.notify import admin_action
from greensq.services.shared import cluster_stats as shapes
from greensq.services.shared.cluster_http import ClusterHTTP, UpstreamError
from greensq.services.shared.goflags import FlagError
from greensq.services.nsqadmin.options import (
    InvalidOptions, normalize_base_path, parse_nsqadmin_options, validate)
from greensq.http.nsqadmin_pages import lookupd_connection
from greensq.services.nsqadmin.rate_history import RateHistory, Sample

A, B = "10.0.0.1:4151", "10.0.0.2:4151"


# -- rate history ------------------------------------------------------------------------

def test_rates_come_from_counter_growth():
    history = RateHistory(10)
    for when, count, depth in ((0, 0, 5), (2, 10, 3), (4, 30, 0), (6, 4, 0)):
        history.record(when, {(A, "t", None): Sample(count, depth)})
    series = history.combined([(A, "t", None)])
    assert series == {"rate": [None, 5.0, 10.0, None], "depth": [5, 3, 0, 0]}   # reset: gap


def test_sums_across_nodes_keep_a_missing_node_out():
    history = RateHistory(10)
    history.record(0, {(A, "t", None): Sample(0, 1), (B, "t", None): Sample(0, 1)})
    history.record(1, {(A, "t", None): Sample(10, 1), (B, "t", None): Sample(5, 2)})
    history.record(2, {(A, "t", None): Sample(20, 1)})                # B did not answer
    history.record(3, {(A, "t", None): Sample(30, 1), (B, "t", None): Sample(20, 4)})
    keys = [(A, "t", None), (B, "t", None)]
    assert history.combined(keys) == {"rate": [None, 15.0, 10.0, 17.5], "depth": [2, 3, 1, 5]}
    assert history.combined(keys, start=2)["rate"] == [10.0, 17.5]


def test_series_are_aligned_bounded_and_forgotten():
    history = RateHistory(3)
    history.record(0, {(A, "old", None): Sample(0, 0)})
    history.record(1, {(A, "old", None): Sample(1, 0), (A, "new", "c"): Sample(0, 7)})
    assert history.combined([(A, "new", "c")])["depth"] == [None, 7]
    for when in (2, 3, 4):
        history.record(when, {(A, "new", "c"): Sample(0, 7)})
    assert len(history.step_times()) == 3
    assert list(history.series) == [(A, "new", "c")]   # "old": no sample for a whole window


def test_channel_finish_requeue_and_timeout_rates():
    """Finished = received - growth of what the channel holds (queued, in flight,
    deferred): requeues and timeouts move messages without finishing them."""
    key = (A, "t", "c")
    history = RateHistory(10)
    steps = [
        # received, depth, in flight, deferred, requeued, timed out
        (0, 0, 0, 0, 0, 0),
        (100, 60, 20, 0, 0, 0),     # 100 in, 80 held: 20 finished
        (100, 40, 10, 10, 10, 5),   # nothing in, 20 fewer held: 20 finished
        (150, 60, 25, 10, 10, 5),   # 50 in, 35 more held: 15 finished
        (150, 61, 25, 10, 10, 5),   # one more held than received (a poll's jitter): 0
        (160, 0, 0, 0, 10, 5),      # emptied (or all finished), 10 in: 106 left
        (5, 5, 0, 0, 0, 0),         # the channel was deleted and created again: a gap
    ]
    for when, numbers in enumerate(steps):
        history.record(when * 2, {key: Sample(*numbers)})
    assert history.combined([key]) == {
        "rate": [None, 50.0, 0, 25.0, 0, 5.0, None],
        "finish": [None, 10.0, 10.0, 7.5, 0, 53.0, None],
        "requeue": [None, 0, 5.0, 0, 0, 0, None],
        "timeout": [None, 0, 2.5, 0, 0, 0, None],
        "depth": [0, 60, 40, 60, 61, 0, 5]}


def test_fast_and_slow_channels_of_one_topic_differ_in_finishes():
    fast, slow = (A, "t", "fast"), (A, "t", "slow")
    history = RateHistory(10)
    for when in range(4):
        received = 100 * when     # both receive every message; slow keeps 90 of each 100
        history.record(when, {fast: Sample(received, 0), slow: Sample(received, 90 * when, 10)})
    assert history.combined([fast])["rate"] == history.combined([slow])["rate"]
    assert history.combined([fast])["finish"] == [None, 100.0, 100.0, 100.0]
    assert history.combined([slow])["finish"] == [None, 10.0, 10.0, 10.0]


def test_graphs_start_at_the_first_sample_of_what_they_show():
    history = RateHistory(100)
    for when in range(20):
        history.record(when, {} if when < 15 else {(A, "young", None): Sample(when, 1)})
    assert history.first_step([(A, "young", None)]) == 15
    assert history.first_step([]) == 0
    assert history.step_times(15) == [15, 16, 17, 18, 19]
    assert history.combined([(A, "young", None)], start=15) == {
        "rate": [None, 1.0, 1.0, 1.0, 1.0], "depth": [1, 1, 1, 1, 1]}


def test_lookupd_connections_read_apart():
    assert lookupd_connection("127.0.0.1:4161/127.0.0.1:50123") == (
        "127.0.0.1:4161", "127.0.0.1:50123")
    assert lookupd_connection("[::1]:4161/N/A") == ("[::1]:4161", "N/A")


# -- node documents ----------------------------------------------------------------------

def test_nulls_and_missing_fields_read_as_empty():
    topic = shapes.topic_stats({"topic_name": "t", "channels": None, "depth": 3,
                                "backend_depth": 1, "e2e_processing_latency": None}, A, "h")
    assert (topic["channels"], topic["memory_depth"], topic["e2e_processing_latency"]) == (
        None, 2, None)
    channel = shapes.channel_stats({"channel_name": "c", "clients": None}, A, "h", "t")
    assert channel["clients"] is None and channel["message_count"] == 0
    total = shapes.aggregate_topic("t", [topic])
    assert total["channels"] is None and total["message_count"] == 0
    client = shapes.client_stats({"client_id": "x", "connect_ts": 100}, A, now=160)
    assert client["connected"] == 60_000_000_000 and client["tls"] is False
    assert shapes.items(None) == [] and shapes.items({"a": 1}) == []


def test_lookupd_producers_merge_and_mark_old_versions():
    entry = {"remote_address": "1.2.3.4:5", "hostname": "h", "broadcast_address": "b",
             "tcp_port": 4150, "http_port": 4151, "version": "1.2.0",
             "tombstones": None, "topics": ["z", "a"]}
    newer = dict(entry, broadcast_address="c", version="1.3.0", topics=None)
    merged = shapes.merge_lookupd_producers([
        ("l1:4161", [shapes.producer_from_lookupd(entry), shapes.producer_from_lookupd(newer)]),
        ("l2:4161", [shapes.producer_from_lookupd(entry)])])
    old = next(p for p in merged if p["broadcast_address"] == "b")
    assert old["remote_addresses"] == ["l1:4161/1.2.3.4:5", "l2:4161/1.2.3.4:5"]
    assert old["topics"] == [{"topic": "a", "tombstoned": False},
                             {"topic": "z", "tombstoned": False}]
    assert old["out_of_date"] is True
    assert next(p for p in merged if p["broadcast_address"] == "c")["topics"] is None


def test_old_nsqd_without_addresses_in_info():
    prod = shapes.producer_from_nsqd("[::1]:4151", {"version": "0.3.8"}, {"topics": None})
    assert (prod["broadcast_address"], prod["http_port"], prod["hostname"]) == ("::1", 4151, "::1")
    assert shapes.http_address(prod) == "[::1]:4151"


def test_latency_percentiles_merge():
    one = shapes.e2e_latency({"count": 10, "percentiles": [{"quantile": 0.99, "value": 4.0}]})
    two = shapes.e2e_latency({"count": 30, "percentiles": [{"quantile": 0.99, "value": 8.0}]})
    topics = [dict(shapes.topic_stats({"topic_name": "t"}, node, node),
                   e2e_processing_latency=latency) for node, latency in ((A, one), (B, two))]
    merged = shapes.aggregate_topic("t", topics)["e2e_processing_latency"]
    [p99] = merged["percentiles"]
    assert merged["count"] == 40 and merged["host"] == "*"
    assert (p99["min"], p99["max"], p99["average"], p99["count"]) == (4.0, 8.0, 7.0, 40.0)


# -- options -----------------------------------------------------------------------------

def test_defaults_are_nsq_defaults():
    opts = parse_nsqadmin_options([])
    assert (opts.http_address, opts.base_path, opts.acl_http_header) == (
        "0.0.0.0:4171", "/", "X-Forwarded-User")
    assert (opts.statsd_interval, opts.http_client_connect_timeout,
            opts.http_client_request_timeout) == (60.0, 2.0, 5.0)
    assert (opts.statsd_prefix, opts.statsd_counter_format, opts.statsd_gauge_format) == (
        "nsq.%s", "stats.counters.%s.count", "stats.gauges.%s")
    assert opts.allow_config_from_cidr == "127.0.0.1/8" and opts.admin_user == []


def test_repeated_flags_and_config_file(tmp_path):
    config = tmp_path / "nsqadmin.toml"
    config.write_text('nsqlookupd_http_addresses = ["l1:4161", "l2:4161"]\n'
                      'admin_users = ["alice"]\nstatsd_interval = 10000\nbase_path = "ops/"\n')
    opts = parse_nsqadmin_options([f"--config={config}", "-admin-user", "bob",
                                   "--admin-user=carol"])
    assert opts.lookupd_http_address == ["l1:4161", "l2:4161"]
    assert opts.admin_user == ["bob", "carol"]        # the command line wins
    assert (opts.statsd_interval, opts.base_path) == (10.0, "/ops")
    with pytest.raises(FlagError, match="flag provided but not defined: -tcp-address"):
        parse_nsqadmin_options(["--tcp-address=1"])


@pytest.mark.parametrize("argv,message", [
    ([], "--nsqd-http-address or --lookupd-http-address required"),
    (["--nsqd-http-address=a:1", "--lookupd-http-address=b:2"],
     "use --nsqd-http-address or --lookupd-http-address not both"),
    (["--nsqd-http-address=127.0.0.1:1", "--http-client-tls-cert=c"],
     "--http-client-tls-key must be specified with --http-client-tls-cert"),
    (["--nsqd-http-address=127.0.0.1:1", "--http-client-tls-key=k"],
     "--http-client-tls-cert must be specified with --http-client-tls-key"),
    (["--nsqd-http-address=nocolon"], "failed to resolve --nsqd-http-address (nocolon)"),
    (["--nsqd-http-address=127.0.0.1:1", "--allow-config-from-cidr=300.1.1.1/8"],
     "failed to parse --allow-config-from-cidr (300.1.1.1/8)"),
    (["--nsqd-http-address=127.0.0.1:1", "--proxy-graphite"], "failed to parse --graphite-url"),
])
def test_startup_checks(argv, message):
    with pytest.raises(InvalidOptions) as caught:
        validate(parse_nsqadmin_options(argv))
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("given,normal", [("", "/"), ("/", "/"), ("admin", "/admin"),
                                          ("/admin/", "/admin"), ("//a/./b/../c", "/a/c")])
def test_base_path_is_normalized(given, normal):
    assert normalize_base_path(given) == normal


def _run(*args):
    return subprocess.run([sys.executable, "-m", "greensq.http.nsqadmin_launcher", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.slow   # runs nsqadmin
def test_command_line():
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.startswith("nsqadmin v1.3.0 (built w/greensq-")
    done = _run("--http-address=127.0.0.1:0")
    assert done.returncode == 1
    assert re.fullmatch(r"\[nsqadmin\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} FATAL: "
                        "failed to instantiate nsqadmin - "
                        "--nsqd-http-address or --lookupd-http-address required\n", done.stderr)
    assert _run("--bogus").returncode == 2


# -- graphite ----------------------------------------------------------------------------

def test_graphite_targets_follow_statsd_keys():
    graphite = Graphite(parse_nsqadmin_options(["--graphite-url=http://g:8080"]))
    assert graphite.target("topic", "*", "orders") == \
        "sumSeries(stats.counters.nsq.*.topic.orders.message_count.count)"
    assert graphite.target("channel", "10.0.0.1:4151", "t", "c/d e", "depth") == \
        "sumSeries(stats.gauges.nsq.10_0_0_1_4151.topic.t.channel.c-d_e.depth)"
    assert graphite.target("node", "h:1", metric="gc_runs") == \
        "stats.counters.nsq.h_1.mem.gc_runs.count"
    assert sanitize_key("a b/c!#") == "a_b-c"
    urls = graphite.graphs("topic", "*", "orders")
    assert urls["sparkline"].startswith("http://g:8080/render?")
    assert "summarize%28scale%28sumSeries" in urls["rate"] and "colorList=red" in urls["depth"]
    assert "summarize%28sumSeries" in urls["sparkline"]


class _Graphite(BaseHTTPRequestHandler):
    value = 15.0

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/render?") and "format=json" in self.path:
            body = json.dumps([{"target": "x", "datapoints": [[self.value, 1]]}]).encode()
            kind = "application/json"
        else:
            body, kind = b"\x89PNG image for " + self.path.encode(), "image/png"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_graphite():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Graphite)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.slow   # runs nsqadmin
def test_graphite_rate_proxy_and_pages(fake_graphite):
    nsqd = FakeNsqd()
    nsqd.documents = load_fixture("go_cluster.json", {"NSQD0_PORT": nsqd.port,
                                                      "NSQD1_PORT": 0})["nsqd"][0]
    nsqd.start()
    admin = nsqadmin_daemon([f"--nsqd-http-address={nsqd.address}",
                             f"--graphite-url={fake_graphite}", "--proxy-graphite",
                             "--statsd-interval=10s"]).start()
    try:
        status, _, body = admin.http("GET", "/api/graphite?metric=rate&target=sumSeries(x)")
        assert (status, json.loads(body)) == (200, {"rate": "1.50"})
        assert admin.http("GET", "/api/graphite?metric=depth&target=x")[0] == 400
        status, headers, body = admin.http("GET", "/render?target=y&width=8")
        assert status == 200 and body == b"\x89PNG image for /render?target=y&width=8"
        status, _, body = admin.http("GET", "/topics")
        html = body.decode()
        assert '<img src="/render?' in html and "data-graphite-target=" in html
        status, _, body = admin.http("GET", "/topics/orders")
        assert "graphite: rate" in body.decode()
    finally:
        admin.stop()
        nsqd.stop()


# -- notifications and the client -----------------------------------------------------------

def test_admin_action_document():
    doc = admin_action("create_topic", "t", user="", remote_ip="1.2.3.4:5", user_agent="ua",
                       url="http://h/api/topics", via="host", timestamp=7)
    assert list(doc) == ["action", "topic", "timestamp", "remote_ip", "user_agent", "url", "via"]
    doc = admin_action("tombstone_topic_producer", "t", node="n:1", user="bob", via="host")
    assert (doc["node"], doc["user"]) == ("n:1", "bob") and "channel" not in doc


def test_client_errors_read_like_go():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ClusterHTTP(0.5, 1.0)
    with pytest.raises(UpstreamError) as caught:
        client.get_json(f"127.0.0.1:{port}", "/stats?format=json")
    assert str(caught.value) == (f'Get "http://127.0.0.1:{port}/stats?format=json": '
                                 f"dial tcp 127.0.0.1:{port}: connect: connection refused")
    assert caught.value.address == f"127.0.0.1:{port}"
