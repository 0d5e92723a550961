"""nsqd's and nsqlookupd's JSON, value for value as Go NSQ 1.3 writes it.

nsqadmin, nsq_stat and dashboards pass these documents through, so ``null`` where Go
writes null (``producers`` with none, ``clients`` without include_clients, ``topics`` for
a topic filter that matches nothing), ``[]`` where Go writes an empty list, empty
strings, key sets and Go's zero time all matter. The expected documents were written
from Go nsqd / nsqlookupd 1.3.0 answering the same requests; values that vary between
runs (ports, times, hostnames) are matched by type.
"""

import json

import pytest

from support import V1Client, V2Client, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes


class Any:
    """Equal to any value of the given type (bool excluded from int)."""

    def __init__(self, kind):
        self.kind = kind

    def __eq__(self, other):
        return isinstance(other, self.kind) and not (
            self.kind is int and isinstance(other, bool))

    def __repr__(self):
        return f"<any {self.kind.__name__}>"


INT, STR = Any(int), Any(str)
GO_ZERO_TIME_NS = -6795364578871345152
MEMORY = {key: INT for key in (
    "heap_objects", "heap_idle_bytes", "heap_in_use_bytes", "heap_released_bytes",
    "gc_pause_usec_100", "gc_pause_usec_99", "gc_pause_usec_95", "next_gc_bytes",
    "gc_total_runs")}
NO_LATENCY = {"count": 0, "percentiles": None}
TLS_OFF = {"tls": False, "tls_cipher_suite": "", "tls_version": "",
           "tls_negotiated_protocol": "", "tls_negotiated_protocol_is_mutual": False}


def client(**fields):
    doc = {"client_id": STR, "hostname": STR, "version": "V2", "remote_address": STR,
           "state": 3, "ready_count": 0, "in_flight_count": 0, "message_count": 0,
           "finish_count": 0, "requeue_count": 0, "connect_ts": INT, "sample_rate": 0,
           "deflate": False, "snappy": False, "user_agent": "", **TLS_OFF}
    doc.update(fields)
    return doc


def stats_doc(topics, producers):
    return {"version": "1.3.0", "health": "OK", "start_time": INT, "topics": topics,
            "memory": MEMORY, "producers": producers}


def get(daemon, path):
    status, _, body = daemon.http("GET", path)
    return status, json.loads(body)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """nsqlookupd and an nsqd registered with it (module-wide: the tests only read)."""
    from support import Daemon, nsqlookupd_daemon

    path = tmp_path_factory.mktemp("shapes")
    lookupd = nsqlookupd_daemon(path / "lookupd").start()
    nsqd = Daemon(path / "nsqd", [f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}",
                                  "--broadcast-address=127.0.0.1"]).start()
    yield lookupd, nsqd
    nsqd.stop()
    lookupd.stop()


def test_an_empty_nsqd(cluster):
    _, nsqd = cluster
    empty = stats_doc([], None)
    assert get(nsqd, "/stats?format=json") == (200, empty)
    assert get(nsqd, "/stats?format=json&include_clients=false") == (200, empty)
    assert get(nsqd, "/stats?format=json&topic=") == (200, empty)
    assert get(nsqd, "/stats?format=json&channel=x") == (200, empty)
    assert get(nsqd, "/stats?format=json&topic=nothere") == (200, stats_doc(None, None))
    assert get(nsqd, "/info") == (200, {
        "version": "1.3.0", "broadcast_address": "127.0.0.1", "hostname": STR,
        "http_port": nsqd.http_port, "tcp_port": nsqd.tcp_port, "start_time": INT,
        "max_heartbeat_interval": 60_000_000_000, "max_output_buffer_size": 65536,
        "max_output_buffer_timeout": 30_000_000_000, "max_deflate_level": 6})


def test_an_empty_nsqlookupd(cluster):
    lookupd, _ = cluster
    assert get(lookupd, "/info") == (200, {"version": "1.3.0"})
    assert get(lookupd, "/lookup?topic=nothere") == (404, {"message": "TOPIC_NOT_FOUND"})
    assert get(lookupd, "/channels?topic=nothere") == (200, {"channels": []})
    producer = V1Client(lookupd.tcp_port)
    producer.identify(broadcast_address="10.9.9.9", http_port=4151, hostname="far")
    node = {"remote_address": STR, "hostname": "far", "broadcast_address": "10.9.9.9",
            "tcp_port": 4150, "http_port": 4151, "version": "1.3.0"}
    nodes = get(lookupd, "/nodes")[1]["producers"]
    assert {**node, "tombstones": [], "topics": []} in nodes
    debug = get(lookupd, "/debug")[1]
    assert {"id": STR, "hostname": "far", "broadcast_address": "10.9.9.9",
            "tcp_port": 4150, "http_port": 4151, "version": "1.3.0", "last_update": INT,
            "tombstoned": False, "tombstoned_at": GO_ZERO_TIME_NS} in debug["client::"]
    producer.close()


def test_a_topic_with_a_consumer_and_a_producer(cluster):
    lookupd, nsqd = cluster
    assert nsqd.http("POST", "/channel/create?topic=shaped&channel=c1")[0] == 404
    assert nsqd.http("POST", "/topic/create?topic=shaped")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=shaped&channel=c1")[0] == 200
    consumer = V2Client(nsqd.tcp_port)
    consumer.identify(client_id="cid", hostname="h", user_agent="ua/1")
    consumer.sub("shaped", "c1", rdy=1)
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("shaped", b"hello") == (0, b"OK")
    consumer.read_message()
    wait_until(lambda: nsqd.channel_stats("shaped", "c1")["in_flight_count"] == 1,
               message="the message in flight")

    channel = {"channel_name": "c1", "depth": 0, "backend_depth": 0, "in_flight_count": 1,
               "deferred_count": 0, "message_count": 1, "requeue_count": 0,
               "timeout_count": 0, "client_count": 1,
               "clients": [client(client_id="cid", hostname="h", user_agent="ua/1",
                                  ready_count=1, in_flight_count=1, message_count=1)],
               "paused": False, "e2e_processing_latency": NO_LATENCY}
    topic = {"topic_name": "shaped", "channels": [channel], "depth": 0, "backend_depth": 0,
             "message_count": 1, "message_bytes": 5, "paused": False,
             "e2e_processing_latency": NO_LATENCY}
    publisher = client(state=0, pub_counts=[{"topic": "shaped", "count": 1}])
    assert get(nsqd, "/stats?format=json&topic=shaped") == (200, stats_doc([topic], [publisher]))
    assert get(nsqd, "/stats?format=json&topic=shaped&channel=c1") == (
        200, stats_doc([topic], [publisher]))
    assert get(nsqd, "/stats?format=json&topic=shaped&channel=nope") == (
        200, stats_doc([], [publisher]))
    without_clients = {**topic, "channels": [{**channel, "clients": None}]}
    assert get(nsqd, "/stats?format=json&topic=shaped&include_clients=false") == (
        200, stats_doc([without_clients], None))
    no_memory = stats_doc([topic], [publisher])
    del no_memory["memory"]
    assert get(nsqd, "/stats?format=json&topic=shaped&include_mem=false") == (200, no_memory)

    registered = wait_until(lambda: get(lookupd, "/lookup?topic=shaped")[1].get("channels"),
                            message="the channel registered with nsqlookupd")
    assert registered == ["c1"]
    assert get(lookupd, "/lookup?topic=shaped") == (200, {"channels": ["c1"], "producers": [{
        "remote_address": STR, "hostname": STR, "broadcast_address": "127.0.0.1",
        "tcp_port": nsqd.tcp_port, "http_port": nsqd.http_port, "version": "1.3.0"}]})
    node = f"127.0.0.1:{nsqd.http_port}"
    assert lookupd.http("POST", f"/topic/tombstone?topic=shaped&node={node}")[0] == 200
    assert get(lookupd, "/lookup?topic=shaped") == (200, {"channels": ["c1"], "producers": []})
    topics_entry = get(lookupd, "/debug")[1]["topic:shaped:"][0]
    assert topics_entry["tombstoned"] is True and topics_entry["tombstoned_at"] > 0
    consumer.close()
    producer.close()


def test_a_topic_known_only_to_nsqlookupd(cluster):
    lookupd, _ = cluster
    assert lookupd.http("POST", "/topic/create?topic=lonely")[0] == 200
    assert get(lookupd, "/lookup?topic=lonely") == (200, {"channels": [], "producers": []})
    assert lookupd.http("POST", "/channel/create?topic=lonely&channel=c")[0] == 200
    assert get(lookupd, "/lookup?topic=lonely") == (200, {"channels": ["c"], "producers": []})
    assert "lonely" in get(lookupd, "/topics")[1]["topics"]
