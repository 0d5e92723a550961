"""An OK means the message is stored: with ``--mem-queue-size=0`` every acknowledged
message is on disk before its OK, so it survives a SIGKILL of the whole daemon or of only
its (core) worker, killed while publishers are mid-stream, with and without HTTP workers.

Publishers record every body whose PUB, MPUB or HTTP ``/pub`` was answered OK; after the
kill and the restart a consumer reads the channel (and the channel-less topic, through a
channel made afterwards) and every acknowledged body must be there. Duplicates are allowed
(reads are at least once across a crash); losses are not.
"""

import os
import signal
import threading

import pytest

from support import (
    FRAME_RESPONSE, HttpPublisher, V2Client, children, consume_expected, wait_until)

ROUNDS = 4
PUBLISHERS = 3
BATCH = 20
FLAGS = ("--mem-queue-size=0", "--sync-every=1")


class Publisher(threading.Thread):
    """Publishes unique bodies (MPUB, with a single PUB every few batches) until its
    connection breaks; ``acked`` holds every body answered OK."""

    def __init__(self, port, topic, tag):
        super().__init__(daemon=True)
        self.client = V2Client(port)
        self.topic, self.tag = topic, tag
        self.acked = []

    def run(self):
        sequence = 0
        try:
            while True:
                count = 1 if sequence % 5 == 0 else BATCH
                bodies = [f"{self.tag}-{sequence + i}".encode() for i in range(count)]
                sequence += count
                reply = (self.client.pub(self.topic, bodies[0]) if count == 1
                         else self.client.mpub(self.topic, bodies))
                if reply != (FRAME_RESPONSE, b"OK"):
                    return
                self.acked.extend(bodies)
        except (OSError, ConnectionError):
            return

    def stop(self):
        self.client.close()


def under_way(publisher):
    """200 bodies acknowledged; 20 for an HTTP publisher, whose every request is fsynced
    alone here."""
    return len(publisher.acked) >= (20 if isinstance(publisher, HttpPublisher) else 200)


def kill_process_group(daemon):
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()


def kill_worker(daemon):
    """SIGKILL the (core) worker, the one with the topics and channels."""
    before = set(children(daemon.proc.pid))
    os.kill(daemon.worker_pid, signal.SIGKILL)
    wait_until(lambda: set(children(daemon.proc.pid)) - before,
               message="the arbiter to start a new worker")


@pytest.mark.parametrize("http_workers", [0, 2], ids=lambda count: f"http-workers={count}")
@pytest.mark.parametrize("kill", [kill_process_group, kill_worker])
def test_every_acknowledged_message_survives_sigkill(nsqd_factory, kill, http_workers):
    daemon = nsqd_factory(*FLAGS, f"--http-workers={http_workers}", new_session=True)
    assert daemon.http("POST", "/topic/create?topic=acked")[0] == 200
    assert daemon.http("POST", "/channel/create?topic=acked&channel=ch")[0] == 200
    assert daemon.http("POST", "/topic/create?topic=held")[0] == 200   # no channel
    acked = {"acked": [], "held": []}
    for round_number in range(ROUNDS):
        publishers = [Publisher(daemon.tcp_port, topic, f"r{round_number}p{i}{topic}")
                      for i in range(PUBLISHERS) for topic in acked]
        publishers += [HttpPublisher(daemon.http_port, topic, f"r{round_number}h{topic}")
                       for topic in acked]
        for publisher in publishers:
            publisher.start()
        wait_until(lambda: all(map(under_way, publishers)), message="publishers well under way")
        kill(daemon)
        if daemon.proc.poll() is not None:
            daemon.start()
        for publisher in publishers:
            publisher.stop()
            publisher.join(10)
            acked[publisher.topic].extend(publisher.acked)
        wait_until(lambda: daemon.http("GET", "/ping")[0] == 200, message="/ping")
    consume_expected(daemon.tcp_port, "acked", "ch", acked["acked"])
    consume_expected(daemon.tcp_port, "held", "late", acked["held"])
