"""Replicated nsqd on hosts made on this machine (tests/replication_lab.py: network
namespaces on a bridge, as the deploy tests make them): three nsqd hosts in a ring, each
the replica of the one before (h1 -> h2 -> h3 -> h1), one nsqlookupd host, publishers on
TCP (PUB, MPUB) and HTTP to every nsqd and consumers through nsqlookupd
(tests/replication_traffic.py). A whole host dies, two hosts are cut off from each
other, a replica restarts: no acknowledged message is lost, and the duplicates stay
within README's bound ("Replication"). Each test prints what it measured.

Without root, namespaces or iptables they are skipped.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from replication_lab import (LOOKUPD_HTTP, LOOKUPD_TCP, NSQD_TCP, HostDaemon, NetworkLab,
                             missing_requirements)
from support import cannot_run, wait_until

from greensq.http.testing import NSQLOOKUPD_MODULE

pytestmark = pytest.mark.slow

TRAFFIC = Path(__file__).with_name("replication_traffic.py")
TOPIC, CHANNEL = "orders", "billing"
NSQD_HOSTS = ("h1", "h2", "h3")


class Cluster:
    """nsqlookupd on ``lookup``, nsqd on h1, h2, h3, each the replica of the one before."""

    def __init__(self, lab, workdir, flags=()):
        self.lab = lab
        self.lookup = lab["lookup"]
        self.lookupd = HostDaemon(self.lookup, None, module=NSQLOOKUPD_MODULE,
                                  tcp_port=LOOKUPD_TCP, http_port=LOOKUPD_HTTP)
        self.nsqd = {}
        self.traffics = []
        for index, name in enumerate(NSQD_HOSTS):
            host = lab[name]
            replica = lab[NSQD_HOSTS[(index + 1) % len(NSQD_HOSTS)]]
            self.nsqd[name] = HostDaemon(host, Path(workdir) / name, [
                f"--broadcast-address={host.address}",
                f"--lookupd-tcp-address={self.lookup.address}:{LOOKUPD_TCP}",
                f"--replica-tcp-address={replica.address}:{NSQD_TCP}", *flags])

    def start(self):
        self.lookupd.start()
        for daemon in self.nsqd.values():
            daemon.start()
        for name in NSQD_HOSTS:
            self.wait_replica_up(name)

    def replica(self, name):
        """How nsqd ``name`` sees its replica (its /stats)."""
        return self.nsqd[name].stats()["replication"]["replicas"][0]

    def wait_replica_up(self, name, timeout=30):
        wait_until(lambda: self.replica(name)["state"] == "up", timeout, 0.1,
                   f"{name}'s replica up")

    def copy_on(self, replica, primary):
        """The copy nsqd ``replica`` keeps of ``primary``'s messages (its /stats)."""
        address = self.lab[primary].address
        for copy in self.nsqd[replica].stats().get("replication", {}).get("copies", []):
            if copy["primary"].startswith(address + ":"):
                return copy
        return None

    def hold_back(self, name, count):
        """Pause the consumers' channel on nsqd ``name`` until ``count`` messages wait
        there (it stays paused: the host is about to die)."""
        daemon = self.nsqd[name]
        daemon.http("POST", f"/channel/pause?topic={TOPIC}&channel={CHANNEL}")
        wait_until(lambda: daemon.channel_stats(TOPIC, CHANNEL)["depth"] >= count, 30, 0.1,
                   f"{count} messages held on {name}")

    def traffic(self, interval=0.01, drain_timeout=60):
        """Publishers to every nsqd, a consumer through nsqlookupd (stopped with the
        cluster)."""
        self.traffics.append(Traffic({
            "hosts": {name: self.lab[name].address for name in NSQD_HOSTS},
            "lookupd": [f"{self.lookup.address}:{LOOKUPD_HTTP}"],
            "topic": TOPIC, "channel": CHANNEL, "interval": interval, "batch": 5,
            "drain_timeout": drain_timeout}))
        return self.traffics[-1].start()

    def resume(self, name):
        self.nsqd[name].http("POST", f"/channel/unpause?topic={TOPIC}&channel={CHANNEL}")

    def stop(self):
        for traffic in self.traffics:
            traffic.kill()
        for daemon in [*self.nsqd.values(), self.lookupd]:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()


class Traffic:
    """tests/replication_traffic.py running; ``status`` is its latest line."""

    def __init__(self, config):
        self.config = config
        self.proc = None
        self.status = {"acked": 0, "received": 0, "failed": 0}
        self.report = None
        self.output = []

    def start(self):
        self.proc = subprocess.Popen([sys.executable, str(TRAFFIC), json.dumps(self.config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=lambda: self.output.extend(self.proc.stderr),
                         daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            document = json.loads(line)
            if document.get("done"):
                self.report = document
            else:
                self.status = document

    def wait_for(self, received, timeout=60):
        start = self.status["received"]
        wait_until(lambda: self.status["received"] >= start + received, timeout, 0.1,
                   f"{received} more deliveries (status {self.status})")

    def finish(self, timeout=120):
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout)
        self.reader.join(timeout)      # the report, its last line, may still be read
        assert self.report is not None, "".join(self.output[-40:])
        return Report(self.report)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Report:
    """What the traffic saw: acknowledged bodies, every delivery."""

    def __init__(self, document):
        self.acked = document["acked_at"]
        self.deliveries = document["deliveries"]
        self.failed = document["failed_by_host"]
        self.counts = {}
        for body, _, _ in self.deliveries:
            self.counts[body] = self.counts.get(body, 0) + 1

    def missing(self):
        return sorted(body for body in self.acked if body not in self.counts)

    def duplicates(self, prefix="", excluding=()):
        return sum(count - 1 for body, count in self.counts.items()
                   if body.startswith(prefix) and body not in excluding)

    def first_delivery(self, prefix, address, after):
        """When a body starting with ``prefix`` first came from ``address`` after ``after``."""
        times = [at for body, at, source in self.deliveries
                 if body.startswith(prefix) and source == address and at > after]
        return min(times) if times else None

    def max_ack_gap(self, prefix, start, end):
        """The longest time between two acknowledgements of ``prefix`` bodies, per way of
        publishing, within [start, end]."""
        gaps = []
        for way in ("pub", "mpub", "http"):
            times = sorted(at for body, at in self.acked.items()
                           if body.startswith(f"{prefix}-{way}-") and start <= at <= end)
            gaps += [later - earlier for earlier, later in zip(times, times[1:])]
            if times:
                gaps += [times[0] - start, end - times[-1]]
        return max(gaps, default=end - start)

    def summary(self):
        return (f"{len(self.acked)} acknowledged, {len(self.deliveries)} deliveries, "
                f"{self.duplicates()} duplicates, failed publishes {self.failed}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The hosts, shared by the module's tests: each test runs its own daemons with data
    directories of its own, and leaves every link up and every host reachable."""
    reason = missing_requirements()
    if reason:
        cannot_run(f"replication host tests: {reason}")
    with NetworkLab(tmp_path_factory.mktemp("lab"), ["lookup", *NSQD_HOSTS]) as made:
        yield made


@pytest.fixture
def running(lab, tmp_path):
    """Start a cluster with the given nsqd flags; whatever happened, every daemon and
    the traffic are stopped and the hosts healed afterwards."""
    made = []

    def start(flags=()):
        cluster = Cluster(lab, tmp_path / "data", flags)
        made.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in made:
        cluster.stop()
    lab.heal()


def phase(name, since):
    print(f"  [{time.monotonic() - since:6.1f} s] {name}")


@pytest.mark.parametrize("back", ["after_takeover", "at_once"])
@pytest.mark.parametrize("mode", ["default", "durable"])
def test_a_whole_host_dies_and_comes_back(lab, running, mode, back):
    """h1 dies; it comes back once h2 has taken its copy over, or at once (a crashed
    primary's return is a takeover then and there: its copy holds what it lost)."""
    # A small memory queue: what h1 holds back is on disk when it dies, so that its
    # return, even in the default mode, has messages to deliver again if it forgets
    # what h2 took over.
    cluster = running(["--durable"] if mode == "durable" else ["--mem-queue-size=50"])
    t0 = time.monotonic()
    traffic = cluster.traffic()
    traffic.wait_for(300)
    cluster.hold_back("h1", 200)     # h1 dies with messages queued, not only in flight
    phase("200 held on h1", t0)
    killed_at = time.time()
    lab.kill_host(lab["h1"])
    dead_at = time.time()      # no OK of the h1 that died after this
    if back == "after_takeover":
        wait_until(lambda: (cluster.copy_on("h2", "h1") or {}).get("state") == "taken_over",
                   30, 0.1, "h2 to take over h1's messages")
        phase("h2 took over", t0)
        traffic.wait_for(300)
    lab.revive_host(lab["h1"])
    cluster.nsqd["h1"].start()
    back_at = time.time()
    phase("h1 back", t0)
    cluster.resume("h1")
    cluster.wait_replica_up("h1")
    cluster.wait_replica_up("h3")
    phase("replicas up", t0)
    traffic.wait_for(300)
    report = traffic.finish()
    phase("drained", t0)
    h1, h2 = (f"{lab[name].address}:{NSQD_TCP}" for name in ("h1", "h2"))
    taken = {body for body, _, source in report.deliveries
             if source == h2 and body.startswith("h1-")}    # h2 has no others of h1's
    # Duplicates that are not the replica's: a publish whose OK died with h1, sent again
    # by the client to h1 back (acknowledged after the kill, yet in h2's copy); and in the
    # default mode, what h1's disk queues replay from their last synced read position.
    resent = {body for body in taken if report.acked.get(body, 0) > dead_at}
    before = {body for body, at, source in report.deliveries if source == h1 and at < killed_at}
    replayed = {body for body, at, source in report.deliveries
                if source == h1 and at > back_at and body in before}
    by_replica = report.duplicates("h1-", excluding=resent | replayed)
    first = report.first_delivery("h1-", h2, killed_at)
    print(f"\n{mode}, back {back}: {report.summary()}; h2 took over {len(taken)} of h1's "
          f"messages, first delivered {first - killed_at:.2f} s after the kill; duplicates "
          f"of h1's messages {report.duplicates('h1-')}: {by_replica} by the takeover, "
          f"{len(resent)} published again, {len(replayed)} replayed by h1's disk queues")
    assert not report.missing(), f"acknowledged, never delivered: {report.missing()[:20]}"
    assert by_replica <= len(taken)
    again = [body for body, at, source in report.deliveries
             if source == h1 and at > back_at and body in taken - resent]
    assert not again, f"h1 delivered again what h2 took over: {again[:20]}"
    if mode == "durable":
        assert not replayed, f"h1 delivered again what it had finished: {sorted(replayed)[:20]}"


FAST_FAILOVER = "--replica-failover-timeout=2s"


def test_a_primary_cut_off_from_its_replica_for_30_seconds(lab, running):
    cluster = running([FAST_FAILOVER])
    t0 = time.monotonic()
    traffic = cluster.traffic()
    traffic.wait_for(300)
    cluster.hold_back("h1", 200)     # h2's copy holds them when it takes over
    lab.cut(lab["h1"], lab["h2"])
    cut_at = time.monotonic()
    phase("cut", t0)
    wait_until(lambda: (cluster.copy_on("h2", "h1") or {}).get("state") == "taken_over",
               30, 0.1, "h2 to take over h1's copy")
    phase("h2 took over", t0)
    bound = cluster.copy_on("h2", "h1")["taken_over_count"]
    wait_until(lambda: time.monotonic() - cut_at >= 30, 40, 0.5, "30 s of partition")
    lab.restore(lab["h1"], lab["h2"])
    restored_at = time.time()
    phase("restored", t0)
    cluster.wait_replica_up("h1")
    cluster.resume("h1")
    phase("h1's replica up", t0)
    traffic.wait_for(300)
    report = traffic.finish()
    phase("drained", t0)
    h1, h2 = (f"{lab[name].address}:{NSQD_TCP}" for name in ("h1", "h2"))
    from_h2 = {body for body, _, source in report.deliveries
               if source == h2 and body.startswith("h1-")}
    again = [body for body, at, source in report.deliveries
             if source == h1 and at > restored_at and body in from_h2]
    print(f"\npartition: {report.summary()}; h2 took over {bound} of h1's messages; "
          f"duplicates of h1's messages {report.duplicates('h1-')}")
    assert not report.missing(), f"acknowledged, never delivered: {report.missing()[:20]}"
    assert report.duplicates("h1-") <= bound
    # h1 held them back all along: once it hears what h2 took over, it drops them.
    assert not again, f"h1 delivered again what h2 took over: {again[:20]}"


def test_a_replica_restarted_under_load_is_brought_up_to_date(lab, running):
    # A small memory queue: part of what h1 accepts alone goes to disk, and reaches the
    # replica as the disk part of h1's state.
    cluster = running([FAST_FAILOVER, "--mem-queue-size=100"])
    t0 = time.monotonic()
    traffic = cluster.traffic()
    traffic.wait_for(300)
    down_at = time.time()
    lab.kill_host(lab["h2"])                    # h1's replica, silent from now on
    wait_until(lambda: cluster.replica("h1")["state"] == "down", 10, 0.05,
               "h1 to see its replica down")
    phase("h1's replica down", t0)
    cluster.hold_back("h1", 300)                # on h1 only, until its replica is back
    phase("300 held on h1", t0)
    lab.revive_host(lab["h2"])
    cluster.nsqd["h2"].start()
    cluster.wait_replica_up("h1")
    up_at = time.time()
    phase("h1's replica up", t0)
    traffic.wait_for(200)
    wait_until(lambda: cluster.copy_on("h2", "h1")["state"] == "following", 10, 0.1,
               "h2's copy of h1 complete")
    lab.kill_host(lab["h1"])                    # the copy it caught up must hold
    wait_until(lambda: cluster.copy_on("h2", "h1")["state"] == "taken_over", 30, 0.1,
               "h2 to take over")
    phase("h2 took over h1", t0)
    traffic.wait_for(300)
    report = traffic.finish()
    phase("drained", t0)
    gap = report.max_ack_gap("h1", down_at, up_at)
    print(f"\nreplica restart: {report.summary()}; longest wait for an OK from h1 while "
          f"its replica was down and catching up: {gap:.3f} s")
    assert not report.missing(), f"acknowledged, never delivered: {report.missing()[:20]}"
    assert gap < 2.0 + 2.0      # the failover timeout, and a generous margin
