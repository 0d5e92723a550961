"""The channel actor, white-box, in the test process (the fast tier): dispatch in
proportion to RDY, in-flight timeouts, deferred messages, REQ and TOUCH, pause, empty, a
consumer leaving. Real V2 clients over socket pairs drive it; the assertions read what the
clients received and the channel's own state (``in_flight``, ``deferred``, its consumers)."""

import pytest

from nsq_cases import UNKNOWN_ID
from support import FRAME_ERROR, FRAME_RESPONSE, gevent_wait_until

OK = (FRAME_RESPONSE, b"OK")


def consumer_of(nsqd, client):
    """The channel's Consumer for ``client``'s subscription."""
    return nsqd.session(client).consumer


def publish(nsqd, topic, *bodies):
    assert nsqd.connect().mpub(topic, list(bodies)) == OK


def handled(client):
    """Until the channel has handled every command ``client`` sent so far: a FIN of an
    unknown ID follows them through the channel's mailbox, and its error comes back."""
    client.command(b"FIN " + UNKNOWN_ID)
    assert client.read_frame() == (
        FRAME_ERROR, b"E_FIN_FAILED FIN %s failed ID not in flight" % UNKNOWN_ID)


def settled(channel, in_flight, depth, message="the channel to settle"):
    gevent_wait_until(lambda: (len(channel.in_flight), channel.depth) == (in_flight, depth),
                      message=f"{message}: in flight {in_flight}, depth {depth}")


def test_dispatch_is_in_proportion_to_free_rdy(inproc_nsqd):
    small = inproc_nsqd.subscribe("t", "ch", rdy=10)
    large = inproc_nsqd.subscribe("t", "ch", rdy=30)
    publish(inproc_nsqd, "t", *(b"m%d" % i for i in range(20)))   # one batch
    # 20 messages over 40 free RDY: a quarter and three quarters.
    assert (consumer_of(inproc_nsqd, small).in_flight_count,
            consumer_of(inproc_nsqd, large).in_flight_count) == (5, 15)
    got = [small.read_message() for _ in range(5)] + [large.read_message() for _ in range(15)]
    assert sorted(m.body for m in got) == sorted(b"m%d" % i for i in range(20))
    assert not inproc_nsqd.channel("t", "ch").depth


def test_rdy_bounds_what_is_in_flight(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=2)
    channel = inproc_nsqd.channel("t", "ch")
    publish(inproc_nsqd, "t", *(b"r%d" % i for i in range(5)))
    first = [client.read_message(), client.read_message()]
    settled(channel, 2, 3)
    client.command(b"FIN " + first[0].id)
    assert client.read_message().body == b"r2"   # a FIN frees one slot: one more comes
    settled(channel, 2, 2)
    assert not client.unread


def test_rdy_0_stops_delivery(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=2)
    channel = inproc_nsqd.channel("t", "ch")
    publish(inproc_nsqd, "t", b"a", b"b", b"c", b"d")
    held = [client.read_message(), client.read_message()]
    client.command("RDY 0")
    for msg in held:
        client.command(b"FIN " + msg.id)
    settled(channel, 0, 2, "both FINs with RDY 0")
    assert client.pub("other", b"x") == OK   # a reply, not a message, comes next
    client.command("RDY 1")
    assert client.read_message().body == b"c"


def test_an_unfinished_message_times_out_and_comes_back(inproc_nsqd_factory):
    nsqd = inproc_nsqd_factory("--msg-timeout=200ms")
    client = nsqd.subscribe("t", "ch", rdy=1)
    channel = nsqd.channel("t", "ch")
    publish(nsqd, "t", b"slow")
    msg = client.read_message()
    again = client.read_message()   # never FINed: redelivered after the timeout
    assert (again.id, again.attempts, again.body) == (msg.id, 2, b"slow")
    assert (channel.timeout_count, len(channel.in_flight)) == (1, 1)
    client.command(b"FIN " + again.id)
    settled(channel, 0, 0)
    assert channel.timeout_count == 1


@pytest.mark.parametrize("max_msg_timeout, moves", [("120s", True), ("60s", False)])
def test_touch_moves_the_deadline_up_to_max_msg_timeout(inproc_nsqd_factory, max_msg_timeout,
                                                        moves):
    nsqd = inproc_nsqd_factory("--msg-timeout=60s", f"--max-msg-timeout={max_msg_timeout}")
    client = nsqd.subscribe("t", "ch", rdy=1)
    channel = nsqd.channel("t", "ch")
    publish(nsqd, "t", b"touched")
    msg = client.read_message()
    held = channel.in_flight[msg.id]
    first_deadline = held.deadline
    client.command(b"TOUCH " + msg.id)
    handled(client)
    assert (held.deadline > first_deadline) is moves
    assert held.deadline <= held.delivered_at + nsqd.opts.max_msg_timeout
    assert channel.timeout_count == 0


@pytest.mark.parametrize("delay_ms", [0, 200])
def test_req_requeues_now_or_after_its_delay(inproc_nsqd, delay_ms):
    client = inproc_nsqd.subscribe("t", "ch", rdy=1)
    channel = inproc_nsqd.channel("t", "ch")
    publish(inproc_nsqd, "t", b"again")
    msg = client.read_message()
    client.command(b"REQ %s %d" % (msg.id, delay_ms))
    if delay_ms:
        gevent_wait_until(lambda: channel.deferred, message="deferred")
        assert (len(channel.in_flight), channel.depth) == (0, 0)
    again = client.read_message()
    assert (again.id, again.attempts, again.body) == (msg.id, 2, b"again")
    assert (channel.requeue_count, consumer_of(inproc_nsqd, client).requeue_count,
            len(channel.deferred)) == (1, 1, 0)


def test_dpub_is_deferred_then_delivered(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=1)
    channel = inproc_nsqd.channel("t", "ch")
    producer = inproc_nsqd.connect()
    producer.command("DPUB t 200", b"deferred")
    assert producer.read_frame() == OK
    assert (len(channel.deferred), channel.depth, len(channel.in_flight)) == (1, 0, 0)
    msg = client.read_message()
    assert (msg.body, msg.attempts, channel.deferred) == (b"deferred", 1, [])


def test_pause_holds_and_unpause_delivers(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=5)
    channel = inproc_nsqd.channel("t", "ch")
    channel.ask(channel.on_pause)
    publish(inproc_nsqd, "t", b"a", b"b")
    assert (channel.depth, len(channel.in_flight)) == (2, 0)
    channel.ask(channel.on_unpause)
    assert [client.read_message().body for _ in range(2)] == [b"a", b"b"]


def test_empty_drops_queued_in_flight_and_deferred(inproc_nsqd):
    client = inproc_nsqd.subscribe("t", "ch", rdy=1)
    channel = inproc_nsqd.channel("t", "ch")
    publish(inproc_nsqd, "t", b"flying", b"queued")
    msg = client.read_message()
    producer = inproc_nsqd.connect()
    producer.command("DPUB t 60000", b"deferred")
    assert producer.read_frame() == OK
    assert (len(channel.in_flight), channel.depth, len(channel.deferred)) == (1, 1, 1)
    channel.ask(channel.on_empty)
    assert (len(channel.in_flight), channel.depth, len(channel.deferred)) == (0, 0, 0)
    assert consumer_of(inproc_nsqd, client).in_flight_count == 0
    client.command(b"FIN " + msg.id)   # no longer in flight
    assert client.read_frame() == (
        FRAME_ERROR, b"E_FIN_FAILED FIN %s failed ID not in flight" % msg.id)


def test_a_consumer_leaving_requeues_its_in_flight_messages(inproc_nsqd):
    leaving = inproc_nsqd.subscribe("t", "ch", rdy=2)
    channel = inproc_nsqd.channel("t", "ch")
    publish(inproc_nsqd, "t", b"one", b"two")
    taken = [leaving.read_message(), leaving.read_message()]
    leaving.close()
    settled(channel, 0, 2, "the leaver's messages requeued")
    staying = inproc_nsqd.subscribe("t", "ch", rdy=2)
    again = [staying.read_message(), staying.read_message()]
    assert sorted((m.id, m.attempts) for m in again) == sorted((m.id, 2) for m in taken)
    assert len(channel.consumers) == 1


def test_every_channel_gets_its_own_copy(inproc_nsqd):
    one = inproc_nsqd.subscribe("t", "one", rdy=10)
    two = inproc_nsqd.subscribe("t", "two", rdy=10)
    bodies = [b"m%d" % i for i in range(5)]
    publish(inproc_nsqd, "t", *bodies)
    got_one = [one.read_message() for _ in bodies]
    got_two = [two.read_message() for _ in bodies]
    assert [m.body for m in got_one] == [m.body for m in got_two] == bodies
    first, second = (inproc_nsqd.channel("t", name) for name in ("one", "two"))
    assert all(first.in_flight[m.id] is not second.in_flight[m.id] for m in got_one)


def test_memory_overflows_to_the_disk_queue_and_keeps_the_order(inproc_nsqd_factory):
    nsqd = inproc_nsqd_factory("--mem-queue-size=2")
    channel = nsqd.channel("t", "ch")
    publish(nsqd, "t", *(b"%d" % i for i in range(6)))
    assert (channel.depth, channel.backend_depth) == (6, 4)
    client = nsqd.subscribe("t", "ch", rdy=6)
    assert sorted(client.read_message().body for _ in range(6)) == [b"%d" % i for i in range(6)]
