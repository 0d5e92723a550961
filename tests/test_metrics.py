"""``GET /metrics`` on nsqd, nsqlookupd and nsqadmin, parsed with prometheus_client's own
text parser; the e2e processing latency percentiles in ``/stats`` (JSON and text, Go's
shapes); and ``/stats``' memory figures for a Python process."""

import math
import random
import time

from prometheus_client.parser import text_string_to_metric_families

from support import V2Client, children, nsqadmin_daemon, wait_until
from greensq.services.shared.latency import LatencyWindow, nanoseconds_to_human


def scrape(daemon):
    status, headers, body = daemon.http("GET", "/metrics")
    assert status == 200, body
    headers = {name.lower(): text for name, text in headers.items()}
    assert headers["content-type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def samples(family, **labels):
    """``{sample name: value}`` of the samples whose labels include ``labels``."""
    return {s.name: s.value for s in family.samples
            if all(s.labels.get(k) == v for k, v in labels.items())}


def present(families, name, **labels):
    """The value of the one sample of ``name`` with ``labels``; None while there is none
    (a family a daemon serves only once it has something to show)."""
    found = [s.value for s in families[name].samples
             if all(s.labels.get(k) == v for k, v in labels.items())] if name in families else []
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def value(families, name, **labels):
    found = present(families, name, **labels)
    assert found is not None, (name, labels)
    return found


def test_nsqd_metrics(nsqd_factory):
    nsqd = nsqd_factory("--broadcast-address=metrics.host", "--mem-queue-size=2",
                        "--e2e-processing-latency-percentile=0.99,0.5")
    node = f"metrics.host:{nsqd.http_port}"
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("jobs", [b"abcd"] * 3) == (0, b"OK")
    assert nsqd.http("POST", "/channel/create?topic=jobs&channel=later")[0] == 200
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("jobs", "work", rdy=5)
    assert producer.mpub("jobs", [b"efgh"] * 5) == (0, b"OK")
    first = consumer.read_message()
    consumer.command(b"REQ " + first.id + b" 0")
    received = [consumer.read_message() for _ in range(5)]
    for msg in received[:4]:
        consumer.command(b"FIN " + msg.id)
    wait_until(lambda: nsqd.channel_stats("jobs", "work")["in_flight_count"] == 1,
               message="one message left in flight")

    families = scrape(nsqd)
    topic = {"node": node, "topic": "jobs"}
    assert value(families, "nsq_topic_messages", **topic) == 8
    assert samples(families["nsq_topic_messages"], **topic) == {"nsq_topic_messages_total": 8}
    assert families["nsq_topic_messages"].type == "counter"
    assert value(families, "nsq_topic_message_bytes", **topic) == 32
    assert value(families, "nsq_topic_depth", **topic) == 0
    assert value(families, "nsq_topic_paused", **topic) == 0
    work = {"node": node, "topic": "jobs", "channel": "work"}
    later = {"node": node, "topic": "jobs", "channel": "later"}
    assert value(families, "nsq_channel_messages", **work) == 5
    assert value(families, "nsq_channel_requeued_messages", **work) == 1
    assert value(families, "nsq_channel_in_flight", **work) == 1
    assert value(families, "nsq_channel_clients", **work) == 1
    assert value(families, "nsq_channel_clients", **later) == 0
    assert value(families, "nsq_channel_depth", **later) == 8
    assert value(families, "nsq_channel_backend_depth", **later) == 6    # mem-queue-size 2
    assert families["nsq_channel_depth"].type == "gauge"
    assert value(families, "nsq_nsqd_channels", node=node) == 2
    assert value(families, "nsq_nsqd_healthy", node=node) == 1
    latency = samples(families["nsq_channel_e2e_processing_latency_seconds"], **work)
    assert set(latency) == {"nsq_channel_e2e_processing_latency_seconds"}
    for quantile in ("0.99", "0.5"):
        assert 0 < value(families, "nsq_channel_e2e_processing_latency_seconds",
                         quantile=quantile, **work) < 60
        assert value(families, "nsq_topic_e2e_processing_latency_seconds",
                     quantile=quantile, **topic) > 0
    assert value(families, "process_resident_memory_bytes") > 1_000_000
    assert "python_gc_objects_collected" in families
    # Off by default: no dead-letter or disk-bound series.
    assert "nsq_channel_dead_lettered_messages" not in families or not \
        families["nsq_channel_dead_lettered_messages"].samples
    assert "nsq_topic_refused_messages" not in families
    assert "nsq_nsqd_max_bytes_per_channel" not in families
    consumer.close()
    producer.close()


def test_scrape_without_latency_tracking_has_no_latency_samples(nsqd):
    assert nsqd.http("POST", "/topic/create?topic=quiet")[0] == 200
    families = scrape(nsqd)
    assert families["nsq_topic_e2e_processing_latency_seconds"].samples == []
    assert value(families, "nsq_topic_depth", topic="quiet") == 0


def test_nsqlookupd_metrics(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory()
    nsqd = nsqd_factory(f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}")
    assert nsqd.http("POST", "/topic/create?topic=found")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=found&channel=c")[0] == 200

    def registered():
        families = scrape(lookupd)
        return families if value(families, "nsq_lookupd_channels") == 1 else None

    families = wait_until(registered, message="the channel registered")
    assert value(families, "nsq_lookupd_nodes") == 1
    assert value(families, "nsq_lookupd_topics") == 1
    assert value(families, "nsq_lookupd_topic_producers", topic="found") == 1
    assert value(families, "process_resident_memory_bytes") > 0


def test_nsqadmin_metrics(nsqd_factory):
    nsqd = nsqd_factory("--broadcast-address=127.0.0.1")
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("seen", [b"m"] * 3) == (0, b"OK")
    assert nsqd.http("POST", "/channel/create?topic=seen&channel=c")[0] == 200
    admin = nsqadmin_daemon([f"--nsqd-http-address=127.0.0.1:{nsqd.http_port}"],
                            http_address="127.0.0.1:0",
                            env={"GREENSQ_NSQADMIN_POLL_INTERVAL": "0.2"})
    admin.start()
    try:
        def polled():
            families = scrape(admin)
            return families if families["nsq_channel_depth"].samples else None

        families = wait_until(polled, message="nsqadmin's first poll")
        node = f"127.0.0.1:{nsqd.http_port}"
        assert value(families, "nsq_topic_messages", node=node, topic="seen") == 3
        assert value(families, "nsq_channel_depth", node=node, topic="seen", channel="c") == 3
        assert value(families, "nsq_admin_nodes_down") == 0
        assert value(families, "process_resident_memory_bytes") > 0
    finally:
        admin.stop()
        producer.close()


def test_nsqd_replication_metrics(nsqd_factory):
    """A primary's series of its replica (up, then down once the replica is stopped, up
    again once it is back) and the replica's of the copy (following, then taken over
    once the primary is killed)."""
    replica = nsqd_factory("--broadcast-address=127.0.0.1")
    primary = nsqd_factory("--broadcast-address=127.0.0.1", "--replica-failover-timeout=2s",
                           f"--replica-tcp-address={replica.tcp_address}")
    at_primary = {"node": f"127.0.0.1:{primary.http_port}", "replica": replica.tcp_address}
    of_primary = {"node": f"127.0.0.1:{replica.http_port}",
                  "primary": f"127.0.0.1:{primary.http_port}"}

    def in_state(daemon, name, state, labels):
        """The daemon's families once its state set ``name`` says ``state``."""
        families = scrape(daemon)
        return present(families, name, state=state, **labels) == 1 and families

    def replica_state(state):
        return in_state(primary, "nsq_nsqd_replica_state", state, at_primary)

    def copy_state(state):
        return in_state(replica, "nsq_nsqd_copy_state", state, of_primary)

    families = wait_until(lambda: replica_state("up"), message="the replica up")
    assert value(families, "nsq_nsqd_replica_up", **at_primary) == 1
    assert families["nsq_nsqd_replica_pending_bytes"].type == "gauge"
    states = {s.labels["state"]: s.value for s in families["nsq_nsqd_replica_state"].samples}
    assert states == {"connecting": 0, "reconciling": 0, "syncing": 0, "up": 1, "down": 0}
    assert "nsq_nsqd_copy_state" not in families
    producer = V2Client(primary.tcp_port)
    assert primary.http("POST", "/topic/create?topic=jobs")[0] == 200
    assert primary.http("POST", "/channel/create?topic=jobs&channel=work")[0] == 200
    assert producer.mpub("jobs", [b"abcd"] * 3) == (0, b"OK")
    producer.close()
    families = scrape(primary)
    assert value(families, "nsq_nsqd_replica_pending_bytes", **at_primary) >= 0
    assert value(families, "nsq_nsqd_replica_oldest_unacknowledged_seconds", **at_primary) >= 0
    assert value(families, "nsq_nsqd_replica_lag_seconds", **at_primary) > 0
    families = wait_until(lambda: copy_state("following"), message="the copy following")
    assert value(families, "nsq_nsqd_copy_messages", **of_primary) == 3
    assert value(families, "nsq_nsqd_copy_taken_over_messages", **of_primary) == 0

    replica.stop()
    families = wait_until(lambda: replica_state("down"), message="the replica down")
    assert value(families, "nsq_nsqd_replica_up", **at_primary) == 0
    replica.restart()
    wait_until(lambda: replica_state("up"), timeout=30, message="the replica up again")

    primary.kill()
    families = wait_until(lambda: copy_state("taken_over"), timeout=30,
                          message="the copy taken over")
    assert value(families, "nsq_nsqd_copy_taken_over_messages", **of_primary) == 3
    assert value(families, "nsq_nsqd_copy_silent_seconds", **of_primary) >= 2
    wait_until(lambda: present(scrape(replica), "nsq_channel_depth", node=of_primary["node"],
                               topic="jobs", channel="work") == 3,
               message="the 3 messages in the replica's own channel")


# -- e2e processing latency in /stats ------------------------------------------------------

def test_e2e_percentiles_in_stats(nsqd_factory):
    nsqd = nsqd_factory("--e2e-processing-latency-percentile=0.5",
                        "--e2e-processing-latency-percentile=0.99,1.0")
    assert nsqd.http("POST", "/topic/create?topic=lat")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=lat&channel=idle")[0] == 200
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("lat", "busy", rdy=10)
    producer = V2Client(nsqd.tcp_port)
    published = time.time_ns()
    assert producer.mpub("lat", [b"x"] * 10) == (0, b"OK")
    for _ in range(10):
        consumer.command(b"FIN " + consumer.read_message().id)
    wait_until(lambda: nsqd.channel_stats("lat", "busy")["e2e_processing_latency"]["count"]
               == 10, message="the FINs counted")
    longest = time.time_ns() - published

    topic = nsqd.topic_stats("lat")
    busy, idle = topic["channels"][0], topic["channels"][1]
    # Go's shape: percentiles largest first, whole quantiles written without ".0"
    assert [p["quantile"] for p in busy["e2e_processing_latency"]["percentiles"]] == [
        1, 0.99, 0.5]
    status, _, raw = nsqd.http("GET", "/stats?format=json&topic=lat")
    assert b'"quantile":1,' in raw
    for item in busy["e2e_processing_latency"]["percentiles"]:
        assert 0 < item["value"] <= longest * 1.02
    assert idle["e2e_processing_latency"] == {"count": 0, "percentiles": [
        {"quantile": 1, "value": 0}, {"quantile": 0.99, "value": 0},
        {"quantile": 0.5, "value": 0}]}
    assert topic["e2e_processing_latency"] == busy["e2e_processing_latency"]

    text = nsqd.http("GET", "/stats")[2].decode()
    busy_line = next(line for line in text.splitlines() if "[busy" in line)
    values = busy_line.split("e2e%: ")[1].split(", ")
    assert values == [nanoseconds_to_human(p["value"])
                      for p in busy["e2e_processing_latency"]["percentiles"]]
    idle_line = next(line for line in text.splitlines() if "[idle" in line)
    assert idle_line.endswith("e2e%: 0.0ns, 0.0ns, 0.0ns")
    consumer.close()
    producer.close()


def test_e2e_off_is_nsqs_null_document(nsqd):
    assert nsqd.http("POST", "/channel/create?topic=off&channel=c")[0] == 404
    assert nsqd.http("POST", "/topic/create?topic=off")[0] == 200
    assert nsqd.topic_stats("off")["e2e_processing_latency"] == {
        "count": 0, "percentiles": None}
    line = next(line for line in nsqd.http("GET", "/stats")[2].decode().splitlines()
                if "[off" in line)
    assert line.endswith("e2e%: ")




def test_latency_window_percentiles_are_within_two_percent():
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(15, 1.5)) + 1 for _ in range(20_000)]
    percentiles = [1.0, 0.999, 0.99, 0.95, 0.5, 0.1]
    window = LatencyWindow(600, percentiles)

    class Msg:
        def __init__(self, timestamp):
            self.timestamp = timestamp

    now = 10 ** 18
    for start in range(0, len(latencies), 200):
        window.record([Msg(now - x) for x in latencies[start:start + 200]], now_ns=now)
    result = window.result()
    assert result["count"] == len(latencies)
    ordered = sorted(latencies)
    for item in result["percentiles"]:
        exact = ordered[max(0, math.ceil(item["quantile"] * len(ordered)) - 1)]
        assert abs(item["value"] - exact) <= exact * 0.02, (item, exact)


def test_latency_window_forgets_what_is_older_than_the_window():
    window = LatencyWindow(10, [0.5])

    class Msg:
        timestamp = time.time_ns() - 1_000_000

    window.record([Msg()])
    window._moved_at -= 5 * 10**9          # half a window ago: still counted
    assert window.result()["count"] == 1
    window._moved_at -= 10 * 10**9         # more than a whole window ago: gone
    assert window.result()["count"] == 0
    window.record([Msg()])
    assert window.result()["count"] == 1


# -- memory figures ----------------------------------------------------------------------

def test_memory_figures_describe_the_python_process(nsqd):
    memory = nsqd.stats()["memory"]
    assert list(memory) == ["heap_objects", "heap_idle_bytes", "heap_in_use_bytes",
                            "heap_released_bytes", "gc_pause_usec_100", "gc_pause_usec_99",
                            "gc_pause_usec_95", "next_gc_bytes", "gc_total_runs"]
    (worker,) = children(nsqd.proc.pid)
    with open(f"/proc/{worker}/status") as fh:
        rss_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    assert 0.5 < memory["heap_in_use_bytes"] / (rss_kib * 1024) < 2
    assert memory["heap_objects"] > 10_000
    assert memory["gc_total_runs"] > 0
    assert memory["gc_pause_usec_100"] >= memory["gc_pause_usec_99"] >= \
        memory["gc_pause_usec_95"] >= 0
