"""How long a GET /metrics takes with 10,000 channels, and how long it holds the hub.

1. Over HTTP: writes an nsqd.dat with ``--topics`` x ``--channels`` (1,000 x 10), starts
   nsqd on it and times ``--scrapes`` GET /metrics (and one GET /stats, for comparison).
2. In this process, on the same topics and channels: the longest stretch a scrape keeps
   the gevent hub from running anything else (a greenlet that wakes every millisecond
   measures the gaps), against rendering /stats' JSON. That is how long a scrape can
   delay a publisher or a consumer.

    python bench/metrics_scrape.py [--topics 1000] [--channels 10] [--scrapes 5] [--e2e]
"""

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request

import gevent
import ujson

from greensq.http.testing import Daemon


def write_metadata(data_path, topics, channels):
    os.makedirs(data_path, exist_ok=True)
    document = {"version": "1.3.0", "topics": [
        {"name": f"topic{t:05d}", "paused": False,
         "channels": [{"name": f"channel{c:03d}", "paused": False} for c in range(channels)]}
        for t in range(topics)]}
    with open(os.path.join(data_path, "nsqd.dat"), "w") as fh:
        json.dump(document, fh)


def timed_get(url):
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
    return time.monotonic() - started, body


def over_http(data_path, flags, scrapes):
    nsqd = Daemon(data_path, flags).start()
    base = f"http://127.0.0.1:{nsqd.http_port}"
    try:
        timed_get(f"{base}/metrics")          # warm up
        times = []
        for _ in range(scrapes):
            seconds, body = timed_get(f"{base}/metrics")
            times.append(seconds)
        stats_seconds, stats_body = timed_get(f"{base}/stats?format=json&include_clients=false")
    finally:
        nsqd.stop()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return times, len(body), series, stats_seconds, len(stats_body)


def longest_hub_stall(work):
    """Run ``work()`` on the hub beside a greenlet that wakes every millisecond; the
    longest gap between its wakeups (seconds) and how long ``work`` took."""
    gaps, running = [0.0], [True]

    def heartbeat():
        last = time.perf_counter()
        while running[0]:
            gevent.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = gevent.spawn(heartbeat)
    gevent.sleep(0.01)
    started = time.perf_counter()
    work()
    took = time.perf_counter() - started
    running[0] = False
    beat.join()
    return max(gaps), took


def in_process(data_path, flags, scrapes):
    from greensq.services.nsqd.metrics import nsqd_metrics
    from greensq.services.nsqd.nsqd import load_nsqd
    from greensq.services.nsqd.options import parse_nsqd_options
    from greensq.services.nsqd.stats import nsqd_stats

    nsqd = load_nsqd(parse_nsqd_options([f"--data-path={data_path}", *flags]))
    metrics = [longest_hub_stall(lambda: nsqd_metrics(nsqd)) for _ in range(scrapes)]
    stats = longest_hub_stall(lambda: ujson.dumps(nsqd_stats(nsqd, include_clients=False)))
    return metrics, stats


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--e2e", action="store_true",
                        help="with --e2e-processing-latency-percentile=0.99,0.5")
    args = parser.parse_args()
    flags = ["--e2e-processing-latency-percentile=0.99,0.5"] if args.e2e else []
    with tempfile.TemporaryDirectory() as tmp:
        write_metadata(f"{tmp}/http", args.topics, args.channels)
        times, size, series, stats_seconds, stats_size = over_http(
            f"{tmp}/http", flags, args.scrapes)
        write_metadata(f"{tmp}/local", args.topics, args.channels)
        metrics, stats = in_process(f"{tmp}/local", flags, args.scrapes)
    print(f"nsqd with {args.topics:,} topics x {args.channels} channels = "
          f"{args.topics * args.channels:,} channels"
          f"{' (e2e percentiles on)' if args.e2e else ''}")
    print(f"GET /metrics   median {statistics.median(times):.3f} s, max {max(times):.3f} s, "
          f"{size / 1e6:.1f} MB, {series:,} series")
    print(f"GET /stats     {stats_seconds:.3f} s, {stats_size / 1e6:.1f} MB (for comparison)")
    print(f"hub held by a /metrics render: at most {max(m[0] for m in metrics) * 1000:.1f} ms "
          f"at a time (render {statistics.median(m[1] for m in metrics):.3f} s)")
    print(f"hub held by a /stats render:   at most {stats[0] * 1000:.1f} ms at a time "
          f"(render {stats[1]:.3f} s)")


if __name__ == "__main__":
    main()
