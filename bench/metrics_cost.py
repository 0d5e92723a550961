"""What statsd, e2e percentiles and /metrics scrapes cost the publish path.

Runs NSQ's scenario (a) (MPUB batches of 200, 200-byte messages, into a backlog) and
scenario (c) (writer and reader together: every message FINished, so e2e latency is
recorded) against a fresh nsqd per run, in rounds that interleave the configurations, so
a machine whose speed drifts affects them alike:

  off       this checkout, default flags (statsd, percentiles and scrapes all off)
  on        this checkout with --statsd-address (a local UDP sink) --statsd-interval=1s,
            --e2e-processing-latency-percentile=0.99,0.95,0.5 and a GET /metrics every
            second during the run
  baseline  another checkout's nsqd, default flags (--baseline-python: the venv of a
            worktree at the commit this branch started from, say)

    python bench/metrics_cost.py [--runfor 5] [--rounds 3] [--baseline-python PATH]

Besides the rates, each run reports the CPU time nsqd's worker spent per message
published in (a): on a shared machine whose speed drifts, CPU per message moves much less
than messages per second, so the cost of turning the features on shows in it first.
Prints each run and the median per configuration, and first what recording e2e latency
costs per FIN batch (LatencyWindow.record, in this process).
"""

import argparse
import socket
import statistics
import tempfile
import threading
import time
import timeit
import urllib.request

from nsqbench import cpu_seconds, run_writer
from scenarios import BATCH, SIZE, in_process, together

from greensq.http.testing import Daemon

ON_FLAGS = ["--statsd-interval=1s", "--e2e-processing-latency-percentile=0.99,0.95,0.5"]


class Sidecar:
    """A UDP sink for statsd and a thread scraping /metrics every second."""

    def __init__(self):
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.sink.getsockname()[1]
        self.packets = self.scrapes = 0
        self.stopping = threading.Event()
        self.threads = []

    def start(self, http_port):
        def drain():
            while not self.stopping.is_set():
                try:
                    self.sink.recv(65536)
                    self.packets += 1
                except socket.timeout:
                    pass

        def scrape():
            url = f"http://127.0.0.1:{http_port}/metrics"
            while not self.stopping.wait(1.0):
                with urllib.request.urlopen(url, timeout=30) as resp:
                    resp.read()
                self.scrapes += 1

        self.threads = [threading.Thread(target=drain), threading.Thread(target=scrape)]
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        self.sink.close()


def run(config, runfor, baseline_python):
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = None
        if config == "on":
            sidecar = Sidecar()
            nsqd = Daemon(f"{tmp}/data", [f"--statsd-address={sidecar.address}", *ON_FLAGS])
            nsqd.start()
            sidecar.start(nsqd.http_port)
        else:
            nsqd = Daemon(f"{tmp}/data",
                          python=baseline_python if config == "baseline" else None).start()
        try:
            worker = nsqd.worker_pid
            cpu_before = cpu_seconds(worker)
            messages, seconds = in_process(run_writer, nsqd.tcp_address, "bench_a", SIZE,
                                           BATCH, runfor)
            writer = messages / seconds
            cpu_per_message = (cpu_seconds(worker) - cpu_before) / messages
            (sent, sent_seconds), (got, got_seconds) = together(nsqd.tcp_address, runfor)
            together_in, together_out = sent / sent_seconds, got / got_seconds
        finally:
            if sidecar is not None:
                sidecar.stop()
            nsqd.stop()
    extra = f"  ({sidecar.packets} statsd packets, {sidecar.scrapes} scrapes)" if sidecar else ""
    print(f"{config:<9} (a) {writer:>9,.0f} msgs/s, {cpu_per_message * 1e6:.2f} us CPU/msg   "
          f"(c) in {together_in:>9,.0f} / out {together_out:>9,.0f} msgs/s{extra}", flush=True)
    return writer, together_in, together_out, cpu_per_message


def record_cost():
    from greensq.services.shared.latency import LatencyWindow
    from greensq.services.shared.message import Message

    window = LatencyWindow(600, [0.99, 0.95, 0.5])
    now = time.time_ns()
    for size in (1, 10, 200):
        for shared, label in ((True, "one timestamp (MPUB)"), (False, "distinct timestamps")):
            msgs = [Message(b"%016x" % i, b"x", now - 5_000_000 - (0 if shared else i * 1000))
                    for i in range(size)]
            reps = max(1, 50_000 // size)
            seconds = timeit.timeit(lambda: window.record(msgs), number=reps) / reps
            print(f"e2e record, FIN batch of {size:>3}, {label:<21}: "
                  f"{seconds * 1e6:6.2f} us per batch, {seconds / size * 1e9:5.0f} ns per FIN")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runfor", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-python", default=None)
    args = parser.parse_args()
    record_cost()
    if args.rounds < 1:
        return
    configs = ["off", "on"] + (["baseline"] if args.baseline_python else [])
    results = {config: [] for config in configs}
    for round_number in range(args.rounds):
        for config in (configs if round_number % 2 == 0 else configs[::-1]):
            results[config].append(run(config, args.runfor, args.baseline_python))
    print()
    off_a, off_cpu = (statistics.median(r[i] for r in results["off"]) for i in (0, 3))
    for config, runs in results.items():
        a, c_in, c_out, cpu = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"median {config:<9} (a) {a:>9,.0f} msgs/s ({(a / off_a - 1) * 100:+.1f}% vs off), "
              f"{cpu * 1e6:.2f} us CPU/msg ({(cpu / off_cpu - 1) * 100:+.1f}%)"
              f"   (c) in {c_in:>9,.0f} / out {c_out:>9,.0f} msgs/s")


if __name__ == "__main__":
    main()
