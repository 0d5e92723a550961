"""greensq.client.Consumer against real greensq nsqd (and nsqlookupd): FIN/REQ, async
messages, give-up, RDY distribution and redistribution, backoff, reconnect, lookupd
discovery and graceful close. The consumer runs in this process on gevent sockets; waits
poll with ``gevent_wait_until`` so its greenlets keep running."""

from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest
from gevent.event import Event

from support import gevent_wait_until, nsqlookupd_daemon

from greensq.client import BadChannelError, Consumer, Producer


def tcp(daemon):
    return f"127.0.0.1:{daemon.tcp_port}"


class CommandLog:
    """An ``on_command`` hook: every command line sent, as ``(nsqd address, line)``."""

    def __init__(self):
        self.lines = []

    def __call__(self, conn, data):
        for line in bytes(data).split(b"\n"):
            if line[:3] in (b"RDY", b"FIN", b"REQ", b"TOU", b"CLS", b"SUB", b"NOP"):
                self.lines.append((conn.address, line))

    def verbs(self, verb):
        return [(a, line) for a, line in self.lines if line.split(b" ")[0] == verb.encode()]

    def rdy(self):
        return [int(line.split(b" ")[1]) for _, line in self.verbs("RDY")]


def start_nsqds(nsqd_factory, tmp_path, count):
    """``count`` nsqd started side by side (in threads: each start waits for its log)."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: nsqd_factory(data_path=tmp_path / f"nsqd{i}"),
                             range(count)))


def publish(daemon, topic, bodies):
    with Producer([tcp(daemon)]) as producer:
        producer.multi_publish(topic, list(bodies))


def prepare(daemon, topic, channel="ch"):
    daemon.http("POST", f"/topic/create?topic={topic}")
    daemon.http("POST", f"/channel/create?topic={topic}&channel={channel}")


@pytest.fixture
def consumers():
    started = []
    yield started
    for consumer in started:
        consumer.close(timeout=2)


def test_handler_return_finishes_every_message(nsqd, consumers):
    got = []
    publish(nsqd, "basic", [b"m%d" % i for i in range(50)])
    consumer = Consumer("basic", "ch", lambda m: got.append(m.body),
                        nsqd_tcp_addresses=[tcp(nsqd)], max_in_flight=10).start()
    consumers.append(consumer)
    gevent_wait_until(lambda: len(got) == 50, message="50 messages")
    assert sorted(got) == sorted(b"m%d" % i for i in range(50))
    channel = gevent_wait_until(
        lambda: (c := nsqd.channel_stats("basic", "ch"))["clients"][0]["finish_count"] == 50
        and c, message="50 FINs")
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (0, 0, 0)
    assert consumer.stats["finished"] == 50


def test_bad_channel_name_raises_typed_error_at_start(nsqd):
    consumer = Consumer("t", "bad$channel", lambda m: None, nsqd_tcp_addresses=[tcp(nsqd)])
    with pytest.raises(BadChannelError):
        consumer.start()


def test_exception_requeues_with_a_delay_growing_with_attempts(nsqd, consumers):
    log = CommandLog()
    attempts = []

    def handler(message):
        attempts.append(message.attempts)
        if message.attempts < 3:
            raise RuntimeError("not yet")

    publish(nsqd, "retry", [b"x"])
    consumers.append(Consumer("retry", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                              requeue_delay=0.05, backoff=0.01, on_command=log).start())
    gevent_wait_until(lambda: log.verbs("FIN"), message="the final FIN")
    assert attempts == [1, 2, 3]
    delays = [int(line.split(b" ")[2]) for _, line in log.verbs("REQ")]
    assert delays == [50, 100]


def test_give_up_after_max_attempts(nsqd, consumers):
    given_up, handled = [], []

    def handler(message):
        handled.append(message.attempts)
        raise RuntimeError("always fails")

    publish(nsqd, "poison", [b"poison"])
    consumer = Consumer("poison", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                        max_attempts=2, requeue_delay=0, backoff=0.01,
                        on_give_up=lambda m: given_up.append((m.body, m.attempts))).start()
    consumers.append(consumer)
    gevent_wait_until(lambda: given_up, message="give-up")
    assert handled == [1, 2]
    assert given_up == [(b"poison", 3)]
    gevent_wait_until(lambda: nsqd.channel_stats("poison", "ch")["in_flight_count"] == 0
                      and nsqd.channel_stats("poison", "ch")["depth"] == 0, message="FIN")
    assert consumer.stats["given_up"] == 1


def test_async_messages_touch_requeue_and_finish(nsqd, consumers):
    held = []
    publish(nsqd, "async", [b"a"])

    def handler(message):
        message.enable_async()
        held.append(message)

    log = CommandLog()
    consumers.append(Consumer("async", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                              on_command=log).start())
    first = gevent_wait_until(lambda: held and held[0], message="delivery")
    # Not answered on return: the message stays in flight.
    assert nsqd.channel_stats("async", "ch")["in_flight_count"] == 1
    first.touch()
    first.requeue(delay=0, backoff=False)
    with pytest.raises(RuntimeError):
        first.finish()
    second = gevent_wait_until(lambda: len(held) == 2 and held[1], message="redelivery")
    assert (second.id, second.attempts) == (first.id, 2)
    second.finish()
    gevent_wait_until(lambda: nsqd.channel_stats("async", "ch")["in_flight_count"] == 0,
                      message="FIN")
    channel = nsqd.channel_stats("async", "ch")
    assert (channel["depth"], channel["requeue_count"], channel["timeout_count"]) == (0, 1, 0)
    assert [v for _, v in log.verbs("TOUCH")] == [b"TOUCH " + first.id]


def test_backoff_sends_rdy_0_then_a_single_rdy_1_then_full_rdy(nsqd, consumers):
    log = CommandLog()
    got = []

    def handler(message):
        got.append(message.body)
        if message.body == b"fail":
            raise RuntimeError("fail")

    prepare(nsqd, "backoff")
    consumer = Consumer("backoff", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                        max_in_flight=5, requeue_delay=60, backoff=0.05, on_command=log)
    consumers.append(consumer.start())
    gevent_wait_until(lambda: log.rdy() == [5], message="RDY 5")
    publish(nsqd, "backoff", [b"fail"])
    gevent_wait_until(lambda: log.rdy() == [5, 0, 1], message="RDY 0 then RDY 1")
    assert consumer.in_backoff
    client = nsqd.channel_stats("backoff", "ch")["clients"][0]
    gevent_wait_until(lambda: nsqd.channel_stats("backoff", "ch")["clients"][0]["ready_count"]
                      == 1, message="ready_count 1 on nsqd")
    publish(nsqd, "backoff", [b"ok"])
    gevent_wait_until(lambda: log.rdy() == [5, 0, 1, 5], message="full RDY again")
    assert not consumer.in_backoff
    assert got == [b"fail", b"ok"]
    gevent_wait_until(lambda: nsqd.channel_stats("backoff", "ch")["clients"][0]["ready_count"]
                      == 5, message="ready_count 5 on nsqd")
    assert client["requeue_count"] == 1


def test_finish_all_answers_a_batch_with_one_write(nsqd, consumers):
    held, writes = [], []

    def hold(message):
        message.enable_async()
        held.append(message)

    publish(nsqd, "batch", [b"m%d" % i for i in range(20)])
    consumer = Consumer("batch", "ch", hold, nsqd_tcp_addresses=[tcp(nsqd)], max_in_flight=50,
                        on_command=lambda conn, data: writes.append(bytes(data)))
    consumers.append(consumer.start())
    gevent_wait_until(lambda: len(held) == 20, message="20 held")
    consumer.finish_all(held)
    fins = [w for w in writes if w.startswith(b"FIN ")]
    assert len(fins) == 1 and fins[0] == b"".join(b"FIN " + m.id + b"\n" for m in held)
    channel = gevent_wait_until(
        lambda: (c := nsqd.channel_stats("batch", "ch"))["clients"][0]["finish_count"] == 20
        and c, message="20 FINs")
    assert channel["in_flight_count"] == 0 and consumer.stats["finished"] == 20
    with pytest.raises(RuntimeError):
        consumer.finish_all(held[:1])


def test_max_backoff_0_turns_backoff_off(nsqd, consumers):
    log = CommandLog()

    def handler(message):
        raise RuntimeError("fail")

    prepare(nsqd, "nobackoff")
    consumer = Consumer("nobackoff", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                        max_in_flight=5, requeue_delay=60, max_backoff=0, on_command=log)
    consumers.append(consumer.start())
    publish(nsqd, "nobackoff", [b"fail"])
    # The RDY 0 of a backoff would be sent right after the REQ, in the same greenlet.
    gevent_wait_until(lambda: log.verbs("REQ"), message="REQ")
    assert log.rdy() == [5]
    assert not consumer.in_backoff


def test_concurrency_caps_the_handlers_running_at_once(nsqd, consumers):
    running, most, release = [0], [0], Event()

    def handler(message):
        running[0] += 1
        most[0] = max(most[0], running[0])
        release.wait()
        running[0] -= 1

    publish(nsqd, "capped", [b"m%d" % i for i in range(5)])
    consumer = Consumer("capped", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                        max_in_flight=10, concurrency=2)
    consumers.append(consumer.start())
    gevent_wait_until(lambda: consumer.stats["received"] == 5 and running[0] == 2,
                      message="5 received, 2 running")
    # A round trip to nsqd (many hub turns) gives more handlers every chance to start.
    publish(nsqd, "capped", [b"late"])
    gevent_wait_until(lambda: consumer.stats["received"] == 6, message="one more")
    assert (running[0], most[0], consumer.unhandled) == (2, 2, 6)
    release.set()
    gevent_wait_until(lambda: consumer.stats["finished"] == 6, message="all finished")
    assert consumer.unhandled == 0


def test_consecutive_failures_double_the_backoff(nsqd, consumers):
    consumer = Consumer("t", "ch", lambda m: None, nsqd_tcp_addresses=[tcp(nsqd)],
                        backoff=0.5, max_backoff=3)
    assert [consumer.backoff_duration(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]


def test_max_in_flight_is_split_over_connections(nsqd_factory, tmp_path, consumers):
    daemons = start_nsqds(nsqd_factory, tmp_path, 3)
    for daemon in daemons:
        prepare(daemon, "split")
    consumers.append(Consumer("split", "ch", lambda m: None, max_in_flight=10,
                              nsqd_tcp_addresses=[tcp(d) for d in daemons]).start())

    def ready_counts():
        counts = []
        for daemon in daemons:
            clients = daemon.channel_stats("split", "ch")["clients"]
            counts.append(clients[0]["ready_count"] if clients else None)
        return counts

    # 10 over three connections: 4 + 3 + 3 once all three are subscribed.
    gevent_wait_until(lambda: sorted(ready_counts(), key=str) == [3, 3, 4],
                      message="RDY 4/3/3 over three nsqd")


def test_max_in_flight_1_over_three_nsqd_drains_them_all(nsqd_factory, tmp_path, consumers):
    daemons = start_nsqds(nsqd_factory, tmp_path, 3)
    for index, daemon in enumerate(daemons):
        publish(daemon, "redist", [b"%d-%d" % (index, i) for i in range(2)])
    log = CommandLog()
    got = []
    consumers.append(Consumer("redist", "ch", lambda m: got.append(m.body), max_in_flight=1,
                              nsqd_tcp_addresses=[tcp(d) for d in daemons],
                              rdy_redistribute_interval=0.02, low_rdy_idle_timeout=0.05,
                              on_command=log).start())
    gevent_wait_until(lambda: len(got) == 6, message="all six messages")
    assert sorted(got) == [b"0-0", b"0-1", b"1-0", b"1-1", b"2-0", b"2-1"]
    # Never more than max_in_flight RDY granted at once, over all connections.
    granted = {}
    for address, line in log.verbs("RDY"):
        granted[address] = int(line.split(b" ")[1])
        assert sum(granted.values()) <= 1, log.lines
    assert len({address for address, _ in log.verbs("FIN")}) == 3


def test_consumer_reconnects_after_an_nsqd_restart(nsqd, consumers):
    got = []
    prepare(nsqd, "phoenix")
    consumer = Consumer("phoenix", "ch", lambda m: got.append(m.body),
                        nsqd_tcp_addresses=[tcp(nsqd)], reconnect_interval=0.05).start()
    consumers.append(consumer)
    gevent_wait_until(lambda: nsqd.channel_stats("phoenix", "ch")["client_count"] == 1,
                      message="subscribed")
    first = consumer.connections[tcp(nsqd)]
    nsqd.restart()
    gevent_wait_until(lambda: (c := consumer.connections.get(tcp(nsqd))) and c is not first,
                      message="a new connection")
    publish(nsqd, "phoenix", [b"after restart"])
    gevent_wait_until(lambda: got == [b"after restart"], message="delivery after restart")


def test_graceful_close_lets_handlers_finish_and_takes_no_more(nsqd):
    release = Event()
    started = []

    def handler(message):
        started.append(message.body)
        release.wait()

    log = CommandLog()
    publish(nsqd, "closing", [b"first"])
    consumer = Consumer("closing", "ch", handler, nsqd_tcp_addresses=[tcp(nsqd)],
                        max_in_flight=10, on_command=log).start()
    gevent_wait_until(lambda: started, message="the handler to start")
    closer = gevent.spawn(consumer.close)
    gevent_wait_until(lambda: log.verbs("CLS"), message="CLS")
    gevent_wait_until(lambda: nsqd.channel_stats("closing", "ch")["clients"][0]["ready_count"]
                      == 0, message="RDY 0 after CLS")
    publish(nsqd, "closing", [b"second"])
    assert not closer.dead          # still waiting for the handler
    release.set()
    closer.get(timeout=5)
    assert started == [b"first"]
    channel = gevent_wait_until(lambda: (c := nsqd.channel_stats("closing", "ch"))
                                ["client_count"] == 0 and c, message="disconnect")
    # The first message was finished (not requeued by the disconnect); the second waits.
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (1, 0, 0)
    assert consumer.join(0)


def test_lookupd_discovery_connects_new_nsqd_and_drops_vanished_ones(tmp_path, nsqd_factory,
                                                                     consumers):
    lookupd = nsqlookupd_daemon(tmp_path / "lookupd").start()
    try:
        flags = (f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}",
                 "--broadcast-address=127.0.0.1")
        first = nsqd_factory(*flags)
        publish(first, "found", [b"from first"])
        got = []
        consumer = Consumer("found", "ch", lambda m: got.append(m.body),
                            lookupd_http_addresses=[f"127.0.0.1:{lookupd.http_port}"],
                            lookupd_poll_interval=0.05, max_in_flight=10)
        consumers.append(consumer.start())
        gevent_wait_until(lambda: got == [b"from first"], message="the first nsqd")
        second = nsqd_factory(*flags)
        publish(second, "found", [b"from second"])
        gevent_wait_until(lambda: len(got) == 2, message="the second nsqd")
        assert set(consumer.connections) == {tcp(first), tcp(second)}
        # Tombstoned, the second nsqd is no longer listed by /lookup: the consumer closes
        # its connection (after CLS), though that nsqd is still up.
        lookupd.http("POST", f"/topic/tombstone?topic=found&node=127.0.0.1:{second.http_port}")
        gevent_wait_until(lambda: set(consumer.connections) == {tcp(first)},
                          message="the vanished nsqd to be dropped")
        gevent_wait_until(lambda: second.channel_stats("found", "ch")["client_count"] == 0,
                          message="the connection to the second nsqd closed")
        assert first.channel_stats("found", "ch")["client_count"] == 1
    finally:
        lookupd.stop()


def test_lookupd_is_asked_again_soon_while_it_lists_no_nsqd(tmp_path, nsqd_factory, consumers):
    """A consumer started before its topic's nsqd registered it (the topic is created a
    moment later) finds it within seconds, not after a whole poll interval (60 s)."""
    lookupd = nsqlookupd_daemon(tmp_path / "lookupd").start()
    try:
        nsqd = nsqd_factory(f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}",
                            "--broadcast-address=127.0.0.1")
        got = []
        consumer = Consumer("late", "ch", lambda m: got.append(m.body),
                            lookupd_http_addresses=[f"127.0.0.1:{lookupd.http_port}"])
        consumers.append(consumer.start())
        assert consumer.connections == {}
        publish(nsqd, "late", [b"first"])
        gevent_wait_until(lambda: got == [b"first"], timeout=20,
                          message="the consumer to find the new topic through lookupd")
    finally:
        lookupd.stop()
