"""What replication costs and how fast it fails over (README, "Replication"), in one run
on one machine: each publishing scenario against an nsqd alone, then against a primary
with one replica (two nsqd, the replica's own process beside), and the ratio.

  MPUB writer      scenario (a): MPUB batches of 200, 200-byte messages, for --runfor,
                   with the CPU time per message of each nsqd (primary and replica)
  single PUB       scenario (i): 32 publishers, each waiting for its OK
  lag              the replica's lag while the MPUB writer runs: the primary's /stats
                   ``pending_bytes`` and ``oldest_unacknowledged_ms``, sampled every 0.1 s
  failover         a consumer connected to the replica; the primary, holding --backlog
                   unfinished messages, is SIGKILLed: the time until the replica delivers
                   the first of them, and all of them (the failover timeout included)

    python bench/replication.py [--runfor 5] [--client-processes 2] [--backlog 10000]
                                [--failover-timeout 5]
"""

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time

from nsqbench import (
    connect, daemon_cpu_seconds, fin_commands, lockstep_load, message_id, nsq_reply_end,
    pub_frame, run_writer, subscribe)
from scenarios import in_process

from greensq.http.testing import Daemon, wait_until
from greensq.services.shared.frames import FrameDecoder
from greensq.services.shared.wire import HEARTBEAT

SIZE = 200
BATCH = 200
PUBLISHERS = 32
LAG_SAMPLE_INTERVAL = 0.1


def replication_of(nsqd):
    return nsqd.stats().get("replication") or {"replicas": [], "copies": []}


def replica_is_up(primary):
    replicas = replication_of(primary)["replicas"]
    return bool(replicas) and all(replica["state"] == "up" for replica in replicas)


class Nodes:
    """Fresh nsqd processes in a temporary directory: alone, or a primary with a replica."""

    def __init__(self, tmp, failover_timeout):
        self.tmp = tmp
        self.failover_timeout = failover_timeout
        self.started = 0

    def start(self, *flags):
        self.started += 1
        return Daemon(os.path.join(self.tmp, f"data{self.started}"), list(flags)).start()

    @contextlib.contextmanager
    def alone(self):
        nsqd = self.start()
        try:
            yield nsqd
        finally:
            nsqd.stop()

    @contextlib.contextmanager
    def replicated(self):
        """``(primary, replica)``, the replica up."""
        replica = self.start()
        primary = self.start(f"--replica-tcp-address={replica.tcp_address}",
                             f"--replica-failover-timeout={self.failover_timeout}s")
        try:
            wait_until(lambda: replica_is_up(primary), timeout=30, interval=0.05,
                       message="the replica up")
            yield primary, replica
        finally:
            primary.stop()
            replica.stop()


class LagSampler:
    """Samples a primary's replicas' ``pending_bytes`` and ``oldest_unacknowledged_ms``
    from its /stats in a thread, for the length of a ``with`` block."""

    def __init__(self, primary):
        self.primary = primary
        self.pending, self.oldest, self.not_up = [], [], 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    def _run(self):
        while not self.done.wait(LAG_SAMPLE_INTERVAL):
            for replica in replication_of(self.primary)["replicas"]:
                self.pending.append(replica["pending_bytes"])
                self.oldest.append(replica["oldest_unacknowledged_ms"])
                self.not_up += replica["state"] != "up"

    def summary(self):
        if not self.pending:
            return "no sample"
        return (f"pending_bytes median {statistics.median(self.pending) / 1024:,.0f} KiB, "
                f"max {max(self.pending) / 1024:,.0f} KiB; oldest unacknowledged median "
                f"{statistics.median(self.oldest):.1f} ms, max {max(self.oldest):.1f} ms "
                f"({len(self.pending)} samples, {self.not_up} with the replica not up)")


def mpub_rate(nsqd, topic, runfor, *others):
    """Messages/s of the MPUB writer, and the CPU µs per message of ``nsqd`` and of each
    of ``others`` (its replica)."""
    daemons = [nsqd, *others]
    cpu = [daemon_cpu_seconds(daemon) for daemon in daemons]
    messages, seconds = in_process(run_writer, nsqd.tcp_address, topic, SIZE, BATCH, runfor)
    cpu_us = [(daemon_cpu_seconds(daemon) - before) / messages * 1e6
              for daemon, before in zip(daemons, cpu)]
    return messages / seconds, cpu_us


def single_pub_rate(nsqd, topic, runfor, client_processes):
    replies, seconds, _ = lockstep_load(nsqd.tcp_address, pub_frame(topic, SIZE),
                                        nsq_reply_end, PUBLISHERS, client_processes, runfor,
                                        magic=b"  V2")
    return replies / seconds


def compare(label, without, with_replica):
    print(f"{label}: alone {without:,.0f} msgs/s, with one replica {with_replica:,.0f} "
          f"msgs/s ({with_replica / without:.2f} of the speed alone)", flush=True)


def failover(nodes, backlog):
    """Seconds from the primary's SIGKILL to the replica's first delivery of its
    messages, and to the last; and how many the consumer received."""
    with nodes.replicated() as (primary, replica):
        for path in ("/topic/create?topic=failover",
                     "/channel/create?topic=failover&channel=ch"):
            assert primary.http("POST", path)[0] == 200, path
        in_process(run_writer, primary.tcp_address, "failover", SIZE, BATCH, 3600, backlog)
        wait_until(lambda: sum(copy["messages"] for copy in replication_of(replica)["copies"])
                   >= backlog, timeout=60, interval=0.05, message="the copy complete")
        sock = connect(replica.tcp_address)
        frames = FrameDecoder(message_id)
        subscribe(sock, frames, "failover", "ch", 2500)
        sock.settimeout(0.2)
        primary.kill()
        killed = time.monotonic()
        received, first, last = 0, None, None
        deadline = killed + nodes.failover_timeout + 60
        while received < backlog and time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("the replica closed the consumer's connection")
            frames.feed(data)
            ids, responses, _ = frames.decode()
            if ids:
                last = time.monotonic()
                first = first or last
                received += len(ids)
            replies = (fin_commands(ids) if ids else b"") + (
                b"NOP\n" if HEARTBEAT in responses else b"")
            if replies:
                sock.sendall(replies)
        sock.close()
    if first is None:
        return None, None, 0
    return first - killed, last - killed, received


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runfor", type=float, default=5.0, help="seconds per measure")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="processes the single-PUB publishers are spread over")
    parser.add_argument("--backlog", type=int, default=10_000,
                        help="unfinished messages on the primary when it is killed")
    parser.add_argument("--failover-timeout", type=float, default=5.0,
                        help="the primary's --replica-failover-timeout, seconds")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(tmp, args.failover_timeout)
        with nodes.alone() as nsqd:
            mpub_alone, cpu_alone = mpub_rate(nsqd, "bench_a", args.runfor)
            pub_alone = single_pub_rate(nsqd, "bench_i", args.runfor, args.client_processes)
        with nodes.replicated() as (primary, replica):
            with LagSampler(primary) as lag:
                mpub_replicated, cpu_replicated = mpub_rate(primary, "bench_a", args.runfor,
                                                            replica)
            pub_replicated = single_pub_rate(primary, "bench_i", args.runfor,
                                             args.client_processes)
        compare(f"MPUB writer ({BATCH} x {SIZE} B)", mpub_alone, mpub_replicated)
        print(f"CPU per MPUB message: nsqd alone {cpu_alone[0]:.1f} µs; primary "
              f"{cpu_replicated[0]:.1f} µs + replica {cpu_replicated[1]:.1f} µs", flush=True)
        compare(f"single PUB ({PUBLISHERS} publishers waiting for OK)", pub_alone,
                pub_replicated)
        print(f"replication lag under the MPUB writer: {lag.summary()}", flush=True)
        first, last, received = failover(nodes, args.backlog)
        if received < args.backlog:
            raise SystemExit(f"failover: the replica delivered {received:,} of the "
                             f"{args.backlog:,} messages")
        print(f"failover (--replica-failover-timeout={args.failover_timeout:g}s): first "
              f"message from the replica {first:.2f} s after the primary's SIGKILL, "
              f"all {received:,} by {last:.2f} s", flush=True)


if __name__ == "__main__":
    main()
