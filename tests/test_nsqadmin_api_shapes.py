"""nsqadmin's /api answers compared with Go nsqadmin 1.3's, over the same cluster.

The cluster is the fake Go 1.3 nsqd / nsqlookupd of go_nsq_fakes.py (its documents hold
Go's ``null`` lists, a client with TLS, snappy, deflate, sampling and auth, e-2-e
percentiles, an out-of-date nsqd and a tombstoned topic). go_api.json holds what Go's
nsqadmin answered over that cluster for every route here (recorded by
fixtures/nsqadmin/record_go_api.py), once with ``--lookupd-http-address`` and once with
``--nsqd-http-address`` and one nsqd that is down. greensq's answers must be the same,
status and body, field for field, with two documented exceptions (``go_differences``).
"""

import copy
import json
import re

import pytest

from go_nsq_fakes import FakeGoCluster, load_fixture
from support import free_port, nsqadmin_daemon, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes

MODES = ("lookupd", "nsqd")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cluster = FakeGoCluster().start()
    subs = dict(cluster.substitutions, DEAD=f"127.0.0.1:{free_port()}")
    args = {
        "lookupd": [f"--lookupd-http-address={subs['LOOKUPD']}"],
        "nsqd": [f"--nsqd-http-address={subs['NSQD0']}", f"--nsqd-http-address={subs['NSQD1']}",
                 f"--nsqd-http-address={subs['DEAD']}"],
    }
    admins = {mode: nsqadmin_daemon(args[mode]).start() for mode in MODES}
    yield admins, load_fixture("go_api.json", subs), subs
    for admin in admins.values():
        admin.stop()
    cluster.stop()


def _get(admin, route):
    status, _, body = admin.http("GET", route)
    return status, json.loads(body)


def _without_clock(doc):
    """``connected`` is now - connect_ts: checked for its unit, then left out."""
    if isinstance(doc, dict):
        if "connected" in doc:
            assert doc["connected"] % 1_000_000_000 == 0 and doc["connected"] >= 0, doc
        return {k: _without_clock(v) for k, v in doc.items() if k != "connected"}
    if isinstance(doc, list):
        return [_without_clock(v) for v in doc]
    return doc


# orders/billing lives on both fake nsqd: see test_multi_node_channel_lists_every_node.
MULTI_NODE_CHANNELS = {"billing"}


def comparable(route, doc):
    """``doc`` without the two places where greensq deliberately differs from Go:

    * a channel on several nodes: Go sums it into the first node's own entry (which then
      lists only the other nodes, and shows the sums inside ``nodes[0].channels`` too);
      greensq returns a fresh ``"*"`` entry listing every node;
    * the ``min`` of merged e-2-e percentiles: Go keeps the last node's value, greensq the
      smallest.
    """
    doc = copy.deepcopy(_without_clock(doc))
    if route.endswith("/api/topics/orders"):
        doc["channels"] = [c for c in doc["channels"]
                           if c["channel_name"] not in MULTI_NODE_CHANNELS]
        for node in doc["nodes"]:
            node["channels"] = [c for c in node["channels"]
                                if c["channel_name"] not in MULTI_NODE_CHANNELS]
    for latency in _latencies(doc):
        if latency["host"] == "*":
            for percentile in latency["percentiles"] or []:
                percentile.pop("min")
    return doc


def _latencies(doc):
    if isinstance(doc, dict):
        if "percentiles" in doc and "host" in doc:
            yield doc
        for value in doc.values():
            yield from _latencies(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _latencies(value)


ROUTES = [(mode, route) for mode in MODES
          for route in load_fixture("go_api.json", {"NSQD0_PORT": 0, "NSQD1_PORT": 0})[mode]]


@pytest.mark.parametrize("mode,route", ROUTES)
def test_same_answer_as_go(setup, mode, route):
    admins, expected, subs = setup
    recorded = expected[mode][route.format(**subs)]
    status, doc = _get(admins[mode], route.format(**subs))
    assert status == recorded["status"], doc
    assert comparable(route, doc) == comparable(route, recorded["body"])


def test_multi_node_channel_lists_every_node(setup):
    admins, _, subs = setup
    _, topic = _get(admins["lookupd"], "/api/topics/orders")
    billing = next(c for c in topic["channels"] if c["channel_name"] == "billing")
    assert billing["node"] == "*"
    assert sorted(n["node"] for n in billing["nodes"]) == sorted([subs["NSQD0"], subs["NSQD1"]])
    assert billing["depth"] == sum(n["depth"] for n in billing["nodes"]) == 14
    _, channel = _get(admins["lookupd"], "/api/topics/orders/billing")
    assert [c["client_id"] for c in channel["clients"]] == ["billing-1", "billing-2", "billing-3"]
    alpha = next(n for n in topic["nodes"] if n["hostname"] == "alpha")
    own = next(c for c in alpha["channels"] if c["channel_name"] == "billing")
    assert own["depth"] == 5 and own["nodes"] is None


def test_merged_latency_percentiles(setup):
    admins, _, _ = setup
    _, topic = _get(admins["lookupd"], "/api/topics/orders")
    p99 = next(p for p in topic["e2e_processing_latency"]["percentiles"] if p["quantile"] == 0.99)
    assert (p99["min"], p99["max"]) == (3100000.0, 3100000.0)   # only bravo's topic has them
    _, metrics = _get(admins["lookupd"], "/api/topics/metrics")
    assert metrics["e2e_processing_latency"]["count"] == 1200


def test_warning_names_the_node_that_is_down(setup):
    admins, _, subs = setup
    _, doc = _get(admins["nsqd"], "/api/topics/orders")
    assert re.match(r'WARNING: Get "http://127\.0\.0\.1:\d+/stats\?format=json&topic=orders'
                    r'&include_clients=false": dial tcp .*: connect: connection refused',
                    doc["message"]), doc["message"]
    assert subs["DEAD"] in doc["message"]
    assert doc["message_count"] == 180


def test_graph_history_reads_go_documents(setup):
    admins, _, subs = setup
    for admin in admins.values():
        doc = wait_until(lambda: _get(admin, "/api/graphs/topics/orders")[1]
                         if len(_get(admin, "/api/graphs/topics/orders")[1]["times"]) >= 2
                         else None, message="two samples")
        assert f"node-topic/{subs['NSQD0']}/orders" in doc["series"]
        assert "channel/orders/billing" in doc["series"]
        assert doc["series"]["channel/orders/billing"]["depth"][-1] == 14
