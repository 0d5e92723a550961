"""How long a GET /metrics takes with 10,000 channels, and what it does to publishers.

Writes an nsqd.dat with ``--topics`` x ``--channels`` (1,000 x 10), starts nsqd on it,
then scrapes /metrics ``--scrapes`` times while one client keeps sending single PUBs and
timing each round trip. Prints the scrape time (median, max), the size and number of
series, the same for /stats?format=json, and the PUB round trips during the scrapes
against those of a quiet period as long, so the stall (if any) a scrape causes shows.

    python bench/metrics_scrape.py [--topics 1000] [--channels 10] [--scrapes 5] [--e2e]
"""

import argparse
import json
import os
import statistics
import struct
import tempfile
import threading
import time
import urllib.request

from nsqbench import NsqdProcess, connect


def write_metadata(data_path, topics, channels):
    os.makedirs(data_path, exist_ok=True)
    document = {"version": "1.3.0", "topics": [
        {"name": f"topic{t:05d}", "paused": False,
         "channels": [{"name": f"channel{c:03d}", "paused": False} for c in range(channels)]}
        for t in range(topics)]}
    with open(os.path.join(data_path, "nsqd.dat"), "w") as fh:
        json.dump(document, fh)


class PubProbe:
    """Single PUBs, one at a time, each round trip timed: ``[(sent_at, seconds)]``."""

    def __init__(self, address):
        self.sock = connect(address)
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        body = b"x" * 200
        command = b"PUB probe\n" + struct.pack(">i", len(body)) + body
        while not self.stopping.is_set():
            started = time.monotonic()
            self.sock.sendall(command)
            reply = b""
            while len(reply) < 10:
                reply += self.sock.recv(64)
            self.samples.append((started, time.monotonic() - started))

    def window(self, start, end):
        return [rtt for at, rtt in self.samples if start <= at < end]


def timed_get(url):
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
    return time.monotonic() - started, body


def describe(rtts):
    rtts = sorted(rtts)
    if not rtts:
        return "no samples"
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
    return (f"{len(rtts):,} PUBs, median {statistics.median(rtts) * 1000:.2f} ms, "
            f"p99 {p99 * 1000:.2f} ms, max {rtts[-1] * 1000:.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--e2e", action="store_true",
                        help="with --e2e-processing-latency-percentile=0.99,0.5")
    args = parser.parse_args()
    total = args.topics * args.channels
    with tempfile.TemporaryDirectory() as tmp:
        write_metadata(f"{tmp}/data", args.topics, args.channels)
        flags = ["--e2e-processing-latency-percentile=0.99,0.5"] if args.e2e else []
        nsqd = NsqdProcess(f"{tmp}/data", *flags)
        base = f"http://127.0.0.1:{nsqd.http_port}"
        timed_get(f"{base}/metrics")          # warm up (imports, first allocations)
        probe = PubProbe(nsqd.tcp_address)
        probe.thread.start()
        time.sleep(1.0)
        scrape_times, size, series = [], 0, 0
        scraping_started = time.monotonic()
        for _ in range(args.scrapes):
            seconds, body = timed_get(f"{base}/metrics")
            scrape_times.append(seconds)
            size = len(body)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        scraping_ended = time.monotonic()
        quiet_started = time.monotonic()
        time.sleep(scraping_ended - scraping_started)
        quiet_ended = time.monotonic()
        stats_seconds, stats_body = timed_get(f"{base}/stats?format=json&include_clients=false")
        probe.stopping.set()
        probe.thread.join()
        nsqd.stop()
    print(f"nsqd with {args.topics:,} topics x {args.channels} channels = {total:,} channels"
          f"{' (e2e percentiles on)' if args.e2e else ''}")
    print(f"GET /metrics   median {statistics.median(scrape_times):.2f} s, "
          f"max {max(scrape_times):.2f} s, {size / 1e6:.1f} MB, {series:,} series")
    print(f"GET /stats     {stats_seconds:.2f} s, {len(stats_body) / 1e6:.1f} MB (for comparison)")
    print(f"PUB round trips while scraping: "
          f"{describe(probe.window(scraping_started, scraping_ended))}")
    print(f"PUB round trips, quiet:         {describe(probe.window(quiet_started, quiet_ended))}")


if __name__ == "__main__":
    main()
