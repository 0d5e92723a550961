"""Durability figures: RSS with a large disk-backed backlog, and publish throughput when
every message goes through the disk queue (``--mem-queue-size=0``).

    python bench/durability.py [--messages 1000000] [--runfor 10]
"""

import argparse
import tempfile

from nsqbench import report, rss_bytes, run_writer

from greensq.http.testing import Daemon, wait_until

SIZE = 200
BATCH = 200


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runfor", type=float, default=10.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        nsqd = Daemon(f"{tmp}/backlog").start()
        idle = rss_bytes(nsqd.worker_pid)
        messages, seconds = run_writer(nsqd.tcp_address, "backlog", SIZE, BATCH,
                                       runfor=3600, count=args.messages)
        report("backlog publish (default --mem-queue-size)", messages, seconds, SIZE)
        wait_until(lambda: nsqd.topic_stats("backlog")["depth"] >= args.messages, timeout=300,
                   interval=0.2, message="the backlog")
        loaded = rss_bytes(nsqd.worker_pid)
        print(f"RSS idle: {idle / 1e6:.1f} MB; with a {args.messages:,}-message backlog of "
              f"{SIZE}-byte messages: {loaded / 1e6:.1f} MB (+{(loaded - idle) / 1e6:.1f} MB)")
        nsqd.stop()

        nsqd = Daemon(f"{tmp}/disk", ["--mem-queue-size=0"]).start()
        messages, seconds = run_writer(nsqd.tcp_address, "disk", SIZE, BATCH, args.runfor)
        report("publish with --mem-queue-size=0", messages, seconds, SIZE)
        nsqd.stop()


if __name__ == "__main__":
    main()
