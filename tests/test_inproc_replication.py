"""Replication between two nsqd cores in this process (README, "Replication"): a primary
with ``--replica-tcp-address`` and its replica, the link a socket pair that the replica
serves as its TCP listener would. What each side's clients and ``/stats`` see: publishes
answered once the copy holds them, the copy following what consumers do, the replica
taking over a silent primary's messages, a primary dropping what its replica took over.
"""

import json
import time

import gevent
import pytest

from certs import Certs
from inprocess import InProcessNsqd
from support import FRAME_ERROR, FRAME_RESPONSE, gevent_wait_until

from greensq.services.nsqd import replica_link

REPLICA = "replica.test:4150"


class Pair:
    """A primary and its replica; ``cut()`` and ``heal()`` the network between them."""

    def __init__(self, monkeypatch, primary_args, replica_args):
        self.reachable = True
        self.replica = InProcessNsqd(*replica_args)
        monkeypatch.setattr(replica_link, "tcp_connect", self._connect)
        self.primary = InProcessNsqd(f"--replica-tcp-address={REPLICA}",
                                     "--replica-failover-timeout=1s", *primary_args)

    def _connect(self, address):
        core = self.replica.core
        if address != REPLICA or not self.reachable or core is None or core.exiting:
            raise ConnectionRefusedError(111, "Connection refused")
        return self.replica.accept()[0]

    @property
    def link(self):
        return self.primary.core.replication.links[0]

    def cut(self):
        self.reachable = False
        sock = self.link.sock
        if sock is not None:
            sock.shutdown(2)

    def heal(self):
        self.reachable = True

    def replica_stats(self):
        return self.primary.stats()["replication"]["replicas"][0]

    def copy_stats(self):
        copies = self.replica.stats().get("replication", {}).get("copies") or [None]
        return copies[0]

    def wait_up(self):
        gevent_wait_until(lambda: self.replica_stats()["state"] == "up", timeout=10,
                          message="the replica up")

    def copied(self):
        return self.copy_stats()["messages"]

    def close(self):
        for daemon in (self.replica, self.primary):
            daemon.close_core()
        for daemon in (self.replica, self.primary):
            daemon.close()


@pytest.fixture(params=["default", "durable"])
def pair(request, monkeypatch):
    mode = ["--durable"] if request.param == "durable" else []
    made = Pair(monkeypatch, mode, mode)
    yield made
    made.close()


@pytest.fixture
def default_pair(monkeypatch):
    made = Pair(monkeypatch, [], [])
    yield made
    made.close()


def stats_of(daemon, topic, channel=None):
    topics = daemon.stats(topic=topic)["topics"] or []
    for entry in topics:
        if channel is None:
            return entry
        for found in entry["channels"]:
            if found["channel_name"] == channel:
                return found
    return None


def test_every_publish_is_answered_once_the_copy_holds_it(pair):
    pair.wait_up()
    client = pair.primary.connect()
    assert client.pub("t", b"one") == (FRAME_RESPONSE, b"OK")
    assert pair.copied() == 1
    assert client.mpub("t", [b"two", b"three"]) == (FRAME_RESPONSE, b"OK")
    assert pair.copied() == 3
    client.command("DPUB t 60000", b"four")
    assert client.read_frame() == (FRAME_RESPONSE, b"OK")
    assert pair.copied() == 4
    assert pair.primary.http("POST", "/pub?topic=t", b"five")[0] == 200
    assert pair.copied() == 5
    assert pair.primary.http("POST", "/mpub?topic=t", b"six\nseven")[0] == 200
    assert pair.copied() == 7
    stats = pair.replica_stats()
    assert stats["state"] == "up" and stats["address"] == REPLICA
    copy = pair.copy_stats()
    assert copy["state"] == "following" and copy["taken_over_count"] == 0


def test_the_copy_follows_deliveries_fins_and_requeues(pair):
    pair.wait_up()
    publisher = pair.primary.connect()
    publisher.mpub("t", [b"a", b"b", b"c", b"d"])
    consumer = pair.primary.subscribe("t", "ch", rdy=4)
    msgs = {msg.body: msg for msg in (consumer.read_message() for _ in range(4))}
    consumer.command(b"FIN " + msgs[b"a"].id)
    consumer.command(b"FIN " + msgs[b"b"].id)
    consumer.command(b"REQ " + msgs[b"c"].id + b" 60000")    # deferred for a minute
    gevent_wait_until(lambda: pair.copied() == 2, message="the copy to lose a and b")
    consumer.command(b"REQ " + msgs[b"d"].id + b" 0")
    consumer.command(b"FIN " + consumer.read_message().id)
    gevent_wait_until(lambda: pair.copied() == 1, message="the copy to lose d")


def test_a_silent_primary_is_taken_over_with_attempts_and_deferrals(pair):
    pair.wait_up()
    publisher = pair.primary.connect()
    publisher.mpub("t", [b"finished", b"deferred", b"in-flight", b"queued"])
    consumer = pair.primary.subscribe("t", "ch", rdy=3)
    taken = {msg.body: msg for msg in (consumer.read_message() for _ in range(3))}
    consumer.command(b"RDY 0")
    consumer.command(b"FIN " + taken[b"finished"].id)
    consumer.command(b"REQ " + taken[b"deferred"].id + b" 60000")
    gevent_wait_until(lambda: pair.copied() == 3, message="the copy to follow")
    pair.cut()                      # the primary's host goes silent
    gevent_wait_until(lambda: pair.copy_stats()["state"] == "taken_over", timeout=10,
                      message="the takeover")
    assert pair.copy_stats()["taken_over_count"] == 3
    channel = stats_of(pair.replica, "t", "ch")
    assert (channel["depth"], channel["deferred_count"]) == (2, 1)
    receiver = pair.replica.subscribe("t", "ch", rdy=10)
    received = {msg.body: msg.attempts for msg in (receiver.read_message() for _ in range(2))}
    # Delivered once by the primary and once more here; the other for the first time.
    assert received == {b"in-flight": 2, b"queued": 1}


def test_taken_over_messages_get_new_ids_beside_the_replicas_own(default_pair):
    """Both nsqds may make the same IDs (the same --node-id, as hosts of one name get by
    default): a taken-over message must not share its ID with one of the replica's own
    in the same channel, or a FIN of one finishes the other's delivery."""
    pair = default_pair
    pair.wait_up()
    ahead = time.time_ns() + 3600 * 10**9      # an ID an hour ahead: the next ones follow it
    assert len({daemon.core.ids.next_id(ahead) for daemon in (pair.primary, pair.replica)}) == 1
    pair.primary.connect().pub("t", b"theirs")
    assert pair.replica.connect().pub("t", b"mine") == (FRAME_RESPONSE, b"OK")
    pair.primary.channel("t", "ch")
    gevent_wait_until(lambda: pair.copied() == 1, message="the copy")
    pair.replica.channel("t", "ch")
    pair.cut()
    gevent_wait_until(lambda: pair.copy_stats()["state"] == "taken_over", timeout=10,
                      message="the takeover")
    receiver = pair.replica.subscribe("t", "ch", rdy=10)
    received = [receiver.read_message() for _ in range(2)]
    assert sorted(msg.body for msg in received) == [b"mine", b"theirs"]
    assert received[0].id != received[1].id
    for msg in received:
        receiver.command(b"FIN " + msg.id)
    gevent_wait_until(lambda: stats_of(pair.replica, "t", "ch")["in_flight_count"] == 0,
                      message="both finished")


def test_a_backlog_past_both_memories_is_copied_as_encoded_and_taken_over(monkeypatch):
    # Past the primary's --mem-queue-size a batch goes to its disk and to the replica
    # encoded once; past the copy's memory (its --mem-queue-size, 2,500 messages at
    # least) the replica writes the records as they came. The takeover delivers them all.
    pair = Pair(monkeypatch, ["--mem-queue-size=100"], ["--mem-queue-size=100"])
    try:
        pair.wait_up()
        client = pair.primary.connect()
        bodies = [b"m%d" % i for i in range(3000)]
        for start in range(0, len(bodies), 200):
            assert client.mpub("t", bodies[start:start + 200]) == (FRAME_RESPONSE, b"OK")
        assert stats_of(pair.primary, "t")["backend_depth"] == 2900
        assert pair.copied() == 3000
        pair.cut()
        gevent_wait_until(lambda: pair.copy_stats()["state"] == "taken_over", timeout=10,
                          message="the takeover")
        receiver = pair.replica.subscribe("t", "ch", rdy=500)
        got = []
        for _ in range(len(bodies)):
            msg = receiver.read_message()
            receiver.command(b"FIN " + msg.id)
            got.append(msg.body)
        assert sorted(got) == sorted(bodies)
    finally:
        pair.close()


def test_a_replica_that_cannot_be_reached_is_down_and_caught_up_when_back(monkeypatch):
    pair = Pair(monkeypatch, ["--mem-queue-size=2"], ["--mem-queue-size=2"])
    try:
        pair.wait_up()
        pair.cut()
        gevent_wait_until(lambda: pair.replica_stats()["state"] == "down",
                          message="the replica down")
        client = pair.primary.connect()
        bodies = [b"m%d" % i for i in range(50)]
        for start in range(0, 50, 10):
            assert client.mpub("t", bodies[start:start + 10]) == (FRAME_RESPONSE, b"OK")
        consumer = pair.primary.subscribe("t", "ch", rdy=5)
        seen = [consumer.read_message() for _ in range(5)]
        consumer.command(b"FIN " + seen[0].id)
        assert pair.replica_stats()["last_error"]
        on_disk = (stats_of(pair.primary, "t")["backend_depth"]
                   + stats_of(pair.primary, "t", "ch")["backend_depth"])
        assert on_disk > 10     # the state to send has a disk part
        pair.heal()
        pair.wait_up()
        gevent_wait_until(lambda: pair.copied() == 49, message="the copy caught up")
        pair.cut()
        gevent_wait_until(lambda: pair.copy_stats()["state"] == "taken_over", timeout=10,
                          message="the takeover")
        receiver = pair.replica.subscribe("t", "ch", rdy=100)
        got = sorted(receiver.read_message().body for _ in range(49))
        assert got == sorted(set(bodies) - {seen[0].body})
    finally:
        pair.close()


def test_after_a_partition_the_primary_drops_what_its_replica_took_over(pair):
    pair.wait_up()
    client = pair.primary.connect()
    client.mpub("t", [b"before-1", b"before-2"])
    pair.primary.channel("t", "ch")
    gevent_wait_until(lambda: pair.copied() == 2, message="the copy")
    monkey_retry = replica_link.RETRY_INTERVAL
    replica_link.RETRY_INTERVAL = 3.0    # the link stays cut until the takeover
    try:
        pair.cut()
        gevent_wait_until(lambda: pair.copy_stats()["state"] == "taken_over", timeout=10,
                          message="the takeover")
        assert client.pub("t", b"during") == (FRAME_RESPONSE, b"OK")   # alone
        pair.heal()
        pair.wait_up()
    finally:
        replica_link.RETRY_INTERVAL = monkey_retry
    assert stats_of(pair.primary, "t", "ch")["depth"] == 1
    consumer = pair.primary.subscribe("t", "ch", rdy=10)
    assert consumer.read_message().body == b"during"
    assert pair.copy_stats()["taken_over_count"] == 0    # the primary came back


def test_ephemeral_topics_and_channels_have_no_copy(default_pair):
    pair = default_pair
    pair.wait_up()
    client = pair.primary.connect()
    pair.primary.subscribe("t", "live#ephemeral", rdy=0)
    client.pub("t", b"x")
    client.pub("t2#ephemeral", b"y")
    assert pair.copied() == 0


def test_a_topics_backlog_moves_to_its_channels_in_the_copy(default_pair):
    pair = default_pair
    pair.wait_up()
    client = pair.primary.connect()
    client.mpub("t", [b"one", b"two"])
    assert pair.copied() == 2
    pair.primary.channel("t", "a")
    pair.primary.channel("t", "b")
    gevent_wait_until(lambda: stats_of(pair.primary, "t")["depth"] == 0, message="drained")
    gevent_wait_until(lambda: pair.copied() == 4, message="two copies, one per channel")
    pair.primary.http("POST", "/channel/empty?topic=t&channel=a")
    gevent_wait_until(lambda: pair.copied() == 2, message="a emptied")
    pair.primary.http("POST", "/channel/delete?topic=t&channel=b")
    gevent_wait_until(lambda: pair.copied() == 0, message="b deleted")


def test_a_replica_requiring_tls_of_its_clients_refuses_replication(monkeypatch, tmp_path):
    certs = Certs(tmp_path)
    pair = Pair(monkeypatch, [], ["--tls-required=true", f"--tls-cert={certs.server_cert}",
                                  f"--tls-key={certs.server_key}"])
    try:
        gevent_wait_until(lambda: "refused" in pair.replica_stats()["last_error"],
                          message="the refusal")
        assert pair.replica_stats()["state"] == "down"
        assert pair.primary.connect().pub("t", b"alone") == (FRAME_RESPONSE, b"OK")
    finally:
        pair.close()


def test_stats_text_and_json_show_replication(default_pair):
    pair = default_pair
    pair.wait_up()
    status, _, body = pair.primary.http("GET", "/stats?format=text")
    assert status == 200 and b"Replicas:" in body and REPLICA.encode() in body
    status, _, body = pair.replica.http("GET", "/stats?format=json")
    copies = json.loads(body)["replication"]["copies"]
    assert copies[0]["state"] == "following"
    status, _, body = pair.replica.http("GET", "/stats?format=text")
    assert b"Copies (as a replica):" in body


def test_without_replication_stats_are_unchanged(inproc_nsqd):
    assert "replication" not in inproc_nsqd.stats()
    client = inproc_nsqd.connect()
    client.command("FOO")
    assert client.read_frame()[0] == FRAME_ERROR
    gevent.sleep(0)
