"""The same behaviours of greensq.client's two flavours, the gevent client and the asyncio
client (greensq.client.aio), each test run against both (tests/client_drivers.py), and
against greensq's nsqd and Go's nsqd 1.3.0 (when $GREENSQ_GO_NSQD names one, see
shared/tools/build-go-nsq; skipped otherwise): publishing and its typed errors, FIN,
REQ with growing delays and give-up, messages answered later, backoff, RDY over several
nsqd and its redistribution, concurrency, reconnection, graceful close, heartbeats, TLS,
snappy and deflate, lookupd discovery. The gevent client's own tests
(test_client_consumer.py ...) stay as they were, the bar its refactoring had to pass."""

import pytest

from certs import Certs
from client_drivers import DRIVERS

from greensq.client import BadChannelError, BadMessageError, BadTopicError


@pytest.fixture(params=sorted(DRIVERS))
def driver(request):
    driver = DRIVERS[request.param]()
    yield driver
    driver.shutdown()


@pytest.fixture(params=["greensq", "go"])
def start_nsqd(request, nsqd_factory):
    """Start an nsqd with extra flags: greensq's, or Go's."""
    if request.param == "go":
        return request.getfixturevalue("go_nsqd_factory")
    return nsqd_factory


@pytest.fixture
def clients(driver):
    """Producers and consumers to close after the test (through the driver)."""
    made = []
    yield made
    for client in made:
        try:
            driver.close(client)
        except Exception:   # closed by the test already, or its nsqd is gone
            pass


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


class CommandLog:
    """An ``on_command`` hook: every command line sent, as ``(nsqd address, line)``."""

    def __init__(self):
        self.lines = []

    def __call__(self, conn, data):
        for line in bytes(data).split(b"\n"):
            if line:
                self.lines.append((conn.address, line))

    def verbs(self, verb):
        return [line for _, line in self.lines if line.split(b" ")[0] == verb.encode()]

    def rdy(self):
        return [int(line.split(b" ")[1]) for line in self.verbs("RDY")]


def prepare(nsqd, topic, channel="ch"):
    nsqd.http("POST", f"/topic/create?topic={topic}")
    nsqd.http("POST", f"/channel/create?topic={topic}&channel={channel}")


def publish(driver, clients, nsqd, topic, bodies):
    producer = driver.producer([nsqd.tcp_address])
    clients.append(producer)
    assert driver.publish(producer, "multi_publish", topic, list(bodies)) == b"OK"


def consume(driver, clients, nsqd, topic, func, gate=None, **options):
    consumer = driver.consumer(topic, "ch", driver.handler(func, gate),
                               nsqd_tcp_addresses=[nsqd.tcp_address], **options)
    clients.append(consumer)
    return driver.start(consumer)


# -- publishing ---------------------------------------------------------------------------

def test_publish_multi_publish_and_deferred_publish(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    prepare(nsqd, "pubs")
    producer = driver.producer([nsqd.tcp_address])
    clients.append(producer)
    assert driver.publish(producer, "publish", "pubs", b"one") == b"OK"
    assert driver.publish(producer, "multi_publish", "pubs", [b"two", b"three"]) == b"OK"
    assert driver.publish(producer, "deferred_publish", "pubs", b"later", 60000) == b"OK"
    channel = nsqd.channel_stats("pubs", "ch")
    assert (channel["depth"], channel["deferred_count"]) == (3, 1)


def test_pipelined_publishes_are_answered_in_order_on_one_connection(driver, start_nsqd,
                                                                     clients):
    nsqd = start_nsqd()
    producer = driver.producer([nsqd.tcp_address])
    clients.append(producer)
    in_flight, answers = driver.publish_pipelined(producer, "pipe",
                                                  [b"m%d" % i for i in range(500)])
    assert in_flight == 500       # all sent before any answer was read
    assert answers == [b"OK"] * 500
    assert nsqd.topic_stats("pipe")["message_count"] == 500


def test_refused_publishes_raise_typed_errors_and_the_producer_goes_on(driver, start_nsqd,
                                                                       clients):
    nsqd = start_nsqd("--max-msg-size=100")
    producer = driver.producer([nsqd.tcp_address])
    clients.append(producer)
    with pytest.raises(BadTopicError) as bad_topic:
        driver.publish(producer, "publish", "bad$topic", b"x")
    assert bad_topic.value.code == "E_BAD_TOPIC" and bad_topic.value.fatal
    with pytest.raises(BadMessageError) as empty:
        driver.publish(producer, "publish", "t", b"")
    assert "size 0" in empty.value.description
    with pytest.raises(BadMessageError) as too_big:
        driver.publish(producer, "publish", "t", b"x" * 101)
    assert "too big 101 > 100" in too_big.value.description
    assert driver.publish(producer, "publish", "t", b"fine") == b"OK"
    assert nsqd.topic_stats("t")["message_count"] == 1


# -- consuming ----------------------------------------------------------------------------

def test_handler_return_finishes_every_message(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    got = []
    publish(driver, clients, nsqd, "basic", [b"m%d" % i for i in range(50)])
    consumer = consume(driver, clients, nsqd, "basic", lambda m: got.append(m.body),
                       max_in_flight=10)
    driver.wait_until(lambda: len(got) == 50, message="50 messages")
    assert sorted(got) == sorted(b"m%d" % i for i in range(50))
    channel = driver.wait_until(
        lambda: (c := nsqd.channel_stats("basic", "ch"))["clients"][0]["finish_count"] == 50
        and c, message="50 FINs")
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (0, 0, 0)
    assert channel["clients"][0]["ready_count"] == 10
    assert consumer.stats["finished"] == 50


def test_failures_requeue_with_growing_delays_then_give_up(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    log = CommandLog()
    attempts, given_up = [], []

    def fail(message):
        attempts.append(message.attempts)
        raise RuntimeError("always fails")

    publish(driver, clients, nsqd, "poison", [b"poison"])
    consumer = consume(driver, clients, nsqd, "poison", fail, max_attempts=2,
                       requeue_delay=0.05, backoff=0.01, on_command=log,
                       on_give_up=lambda m: given_up.append((m.body, m.attempts)))
    driver.wait_until(lambda: given_up, message="give-up")
    assert attempts == [1, 2]
    assert given_up == [(b"poison", 3)]
    assert [int(line.split(b" ")[2]) for line in log.verbs("REQ")] == [50, 100]
    driver.wait_until(lambda: (c := nsqd.channel_stats("poison", "ch"))["in_flight_count"]
                      == 0 and c["depth"] == 0, message="the given-up message FINed")
    assert consumer.stats["given_up"] == 1 and consumer.stats["handler_errors"] == 2


def test_async_messages_are_touched_requeued_and_finished_later(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    held = []
    log = CommandLog()

    def hold(message):
        message.enable_async()
        held.append(message)

    publish(driver, clients, nsqd, "async", [b"a"])
    consume(driver, clients, nsqd, "async", hold, on_command=log)
    first = driver.wait_until(lambda: held and held[0], message="delivery")
    assert nsqd.channel_stats("async", "ch")["in_flight_count"] == 1   # not answered yet
    driver.call(first.touch)
    driver.call(lambda: first.requeue(delay=0, backoff=False))
    with pytest.raises(RuntimeError):
        driver.call(first.finish)
    second = driver.wait_until(lambda: len(held) == 2 and held[1], message="redelivery")
    assert (second.id, second.attempts) == (first.id, 2)
    driver.call(second.finish)
    driver.wait_until(lambda: nsqd.channel_stats("async", "ch")["in_flight_count"] == 0,
                      message="FIN")
    channel = nsqd.channel_stats("async", "ch")
    assert (channel["depth"], channel["requeue_count"], channel["timeout_count"]) == (0, 1, 0)
    assert log.verbs("TOUCH") == [b"TOUCH " + first.id]


def test_a_failure_backs_off_with_rdy_0_then_tests_with_rdy_1(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    log = CommandLog()
    got = []

    def handler(message):
        got.append(message.body)
        if message.body == b"fail":
            raise RuntimeError("fail")

    prepare(nsqd, "backoff")
    consumer = consume(driver, clients, nsqd, "backoff", handler, max_in_flight=5,
                       requeue_delay=60, backoff=0.05, on_command=log)
    driver.wait_until(lambda: log.rdy() == [5], message="RDY 5")
    publish(driver, clients, nsqd, "backoff", [b"fail"])
    driver.wait_until(lambda: log.rdy() == [5, 0, 1], message="RDY 0 then RDY 1")
    assert consumer.in_backoff
    driver.wait_until(lambda: nsqd.channel_stats("backoff", "ch")["clients"][0]["ready_count"]
                      == 1, message="ready_count 1 on nsqd")
    publish(driver, clients, nsqd, "backoff", [b"ok"])
    driver.wait_until(lambda: log.rdy() == [5, 0, 1, 5], message="full RDY again")
    assert not consumer.in_backoff
    assert got == [b"fail", b"ok"]
    client = driver.wait_until(
        lambda: (c := nsqd.channel_stats("backoff", "ch")["clients"][0])["ready_count"] == 5
        and c, message="ready_count 5 on nsqd")
    assert client["requeue_count"] == 1


def test_max_backoff_0_turns_backoff_off(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    log = CommandLog()

    def fail(message):
        raise RuntimeError("fail")

    prepare(nsqd, "nobackoff")
    consumer = consume(driver, clients, nsqd, "nobackoff", fail, max_in_flight=5,
                       requeue_delay=60, max_backoff=0, on_command=log)
    publish(driver, clients, nsqd, "nobackoff", [b"fail"])
    # The RDY 0 of a backoff would be sent with the REQ, in the same turn.
    driver.wait_until(lambda: log.verbs("REQ"), message="REQ")
    assert log.rdy() == [5]
    assert not consumer.in_backoff


def test_max_in_flight_is_spread_over_every_nsqd(driver, start_nsqd, clients):
    nsqds = [start_nsqd(), start_nsqd()]
    for nsqd in nsqds:
        prepare(nsqd, "spread")
    consumer = driver.consumer("spread", "ch", driver.handler(lambda m: None),
                               nsqd_tcp_addresses=[n.tcp_address for n in nsqds],
                               max_in_flight=9)
    clients.append(consumer)
    driver.start(consumer)
    ready = driver.wait_until(
        lambda: sorted(n.channel_stats("spread", "ch")["clients"][0]["ready_count"]
                       for n in nsqds) == [4, 5] or None, message="RDY 4 and 5")
    assert ready


def test_graceful_close_lets_running_handlers_finish_and_takes_no_more(driver, start_nsqd,
                                                                       clients):
    nsqd = start_nsqd()
    log = CommandLog()
    started = []
    gate = driver.gate()
    publish(driver, clients, nsqd, "closing", [b"first"])
    consumer = driver.consumer("closing", "ch", driver.handler(started.append, gate),
                               nsqd_tcp_addresses=[nsqd.tcp_address], max_in_flight=10,
                               on_command=log)
    driver.start(consumer)
    driver.wait_until(lambda: started, message="the handler to start")
    closing = driver.close_later(consumer)
    driver.wait_until(lambda: log.verbs("CLS"), message="CLS")
    driver.wait_until(lambda: nsqd.channel_stats("closing", "ch")["clients"][0]["ready_count"]
                      == 0, message="RDY 0 after CLS")
    publish(driver, clients, nsqd, "closing", [b"second"])
    assert not driver.finished(closing, timeout=0)    # still waiting for the handler
    gate.set()
    assert driver.finished(closing, timeout=10)
    assert [m.body for m in started] == [b"first"]
    channel = driver.wait_until(lambda: (c := nsqd.channel_stats("closing", "ch"))
                                ["client_count"] == 0 and c, message="disconnect")
    # The first message was finished (not requeued by the disconnect); the second waits.
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (1, 0, 0)


def test_close_requeues_at_once_the_messages_no_handler_has_started(driver, start_nsqd,
                                                                    clients):
    nsqd = start_nsqd()
    started = []
    gate = driver.gate()
    publish(driver, clients, nsqd, "queued", [b"m%d" % i for i in range(3)])
    consumer = driver.consumer("queued", "ch", driver.handler(started.append, gate),
                               nsqd_tcp_addresses=[nsqd.tcp_address], max_in_flight=10,
                               concurrency=1)
    driver.start(consumer)
    driver.wait_until(lambda: started and consumer.unhandled == 3,
                      message="one handler running, two messages waiting their turn")
    closing = driver.close_later(consumer)
    # The two waiting are back in the channel before the running handler is done.
    driver.wait_until(lambda: nsqd.channel_stats("queued", "ch")["requeue_count"] == 2,
                      message="two requeued")
    assert not driver.finished(closing, timeout=0)
    gate.set()
    assert driver.finished(closing, timeout=10)
    assert len(started) == 1
    channel = driver.wait_until(lambda: (c := nsqd.channel_stats("queued", "ch"))
                                ["client_count"] == 0 and c, message="disconnect")
    assert (channel["depth"], channel["in_flight_count"], channel["requeue_count"]) == (2, 0, 2)
    assert consumer.stats["finished"] == 1 and consumer.stats["requeued"] == 2


def test_heartbeats_are_answered_and_the_connection_stays_up(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    log = CommandLog()
    producer = driver.producer([nsqd.tcp_address], heartbeat_interval=1.0, on_command=log)
    clients.append(producer)
    assert driver.publish(producer, "publish", "hb", b"one") == b"OK"
    connection = producer.connection
    driver.wait_until(lambda: len(log.verbs("NOP")) >= 2, timeout=10, message="two NOPs")
    assert producer.connection is connection and not connection.closed
    assert driver.publish(producer, "publish", "hb", b"two") == b"OK"


def test_a_bad_channel_name_raises_its_typed_error_at_start(driver, start_nsqd):
    nsqd = start_nsqd()
    consumer = driver.consumer("t", "bad$channel", driver.handler(lambda m: None),
                               nsqd_tcp_addresses=[nsqd.tcp_address])
    with pytest.raises(BadChannelError):
        driver.start(consumer)


def test_finish_all_answers_a_batch_with_one_write(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    held, writes = [], []

    def hold(message):
        message.enable_async()
        held.append(message)

    publish(driver, clients, nsqd, "batch", [b"m%d" % i for i in range(20)])
    consumer = consume(driver, clients, nsqd, "batch", hold, max_in_flight=50,
                       on_command=lambda conn, data: writes.append(bytes(data)))
    driver.wait_until(lambda: len(held) == 20, message="20 held")
    driver.call(consumer.finish_all, held)
    fins = [w for w in writes if w.startswith(b"FIN ")]
    assert len(fins) == 1 and fins[0] == b"".join(b"FIN " + m.id + b"\n" for m in held)
    driver.wait_until(lambda: nsqd.channel_stats("batch", "ch")["clients"][0]["finish_count"]
                      == 20, message="20 FINs")
    assert consumer.stats["finished"] == 20


def test_concurrency_caps_the_handlers_running_at_once(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    started = []
    gate = driver.gate()
    publish(driver, clients, nsqd, "capped", [b"m%d" % i for i in range(5)])
    consumer = consume(driver, clients, nsqd, "capped", started.append, gate=gate,
                       max_in_flight=10, concurrency=2)
    driver.wait_until(lambda: consumer.stats["received"] == 5 and len(started) == 2,
                      message="5 received, 2 running")
    # A round trip to nsqd gives more handlers every chance to start.
    publish(driver, clients, nsqd, "capped", [b"late"])
    driver.wait_until(lambda: consumer.stats["received"] == 6, message="one more")
    assert (len(started), consumer.unhandled) == (2, 6)
    gate.set()
    driver.wait_until(lambda: consumer.stats["finished"] == 6, message="all finished")
    assert consumer.unhandled == 0


def test_max_in_flight_1_over_three_nsqd_drains_them_all(driver, start_nsqd, clients):
    nsqds = [start_nsqd() for _ in range(3)]
    for index, nsqd in enumerate(nsqds):
        publish(driver, clients, nsqd, "redist", [b"%d-%d" % (index, i) for i in range(2)])
    log = CommandLog()
    got = []
    consumer = driver.consumer("redist", "ch", driver.handler(lambda m: got.append(m.body)),
                               nsqd_tcp_addresses=[n.tcp_address for n in nsqds],
                               max_in_flight=1, rdy_redistribute_interval=0.02,
                               low_rdy_idle_timeout=0.05, on_command=log)
    clients.append(consumer)
    driver.start(consumer)
    driver.wait_until(lambda: len(got) == 6, timeout=20, message="all six messages")
    assert sorted(got) == [b"0-0", b"0-1", b"1-0", b"1-1", b"2-0", b"2-1"]
    granted = {}    # never more than max_in_flight RDY at once, over all connections
    for address, line in list(log.lines):
        if line.startswith(b"RDY "):
            granted[address] = int(line.split(b" ")[1])
            assert sum(granted.values()) <= 1, log.lines
    assert len({address for address, line in log.lines if line.startswith(b"FIN ")}) == 3


def test_the_consumer_reconnects_after_an_nsqd_restart(driver, start_nsqd, clients):
    nsqd = start_nsqd()
    got = []
    prepare(nsqd, "phoenix")
    consumer = consume(driver, clients, nsqd, "phoenix", lambda m: got.append(m.body),
                       reconnect_interval=0.05)
    first = consumer.connections[nsqd.tcp_address]
    nsqd.restart()
    driver.wait_until(lambda: (c := consumer.connections.get(nsqd.tcp_address))
                      and c is not first, timeout=20, message="a new connection")
    publish(driver, clients, nsqd, "phoenix", [b"after restart"])
    driver.wait_until(lambda: got == [b"after restart"], message="delivery after restart")


# -- transports ---------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tls", "snappy", "deflate", "tls+snappy"])
def test_transport_upgrades_carry_publishes_and_messages(driver, start_nsqd, clients, certs,
                                                         transport):
    flags, options = [], {}
    if "tls" in transport:
        flags = list(certs.server_flags())
        options.update(tls_v1=True, tls_ca_file=certs.ca)
    if "snappy" in transport:
        flags.append("--snappy=true")
        options["snappy"] = True
    if transport == "deflate":
        flags.append("--deflate=true")
        options.update(deflate=True, deflate_level=3)
    nsqd = start_nsqd(*flags)
    bodies = [b"m%d" % i + b"x" * (i * 100) for i in range(30)]   # past one TLS record
    producer = driver.producer([nsqd.tcp_address], **options)
    clients.append(producer)
    assert driver.publish(producer, "multi_publish", "up", bodies[:10]) == b"OK"
    for body in bodies[10:]:
        assert driver.publish(producer, "publish", "up", body) == b"OK"
    settings = producer.connection.settings
    assert settings.get("tls_v1", False) == ("tls" in transport)
    assert settings.get("snappy", False) == ("snappy" in transport)
    assert settings.get("deflate", False) == (transport == "deflate")
    got = []
    consume(driver, clients, nsqd, "up", lambda m: got.append(m.body), max_in_flight=7,
            **options)
    driver.wait_until(lambda: len(got) == 30, message="30 messages")
    assert sorted(got) == sorted(bodies)
    channel = driver.wait_until(lambda: (c := nsqd.channel_stats("up", "ch"))
                                ["in_flight_count"] == 0 and c, message="every FIN")
    assert channel["clients"][0]["finish_count"] == 30


# -- discovery ----------------------------------------------------------------------------

def test_lookupd_discovery_connects_new_nsqd_and_drops_vanished_ones(driver, start_nsqd,
                                                                     lookupd_factory,
                                                                     clients):
    lookupd = lookupd_factory()
    flags = (f"--lookupd-tcp-address={lookupd.tcp_address}", "--broadcast-address=127.0.0.1")
    first = start_nsqd(*flags)
    publish(driver, clients, first, "found", [b"from first"])
    got = []
    consumer = driver.consumer("found", "ch", driver.handler(lambda m: got.append(m.body)),
                               lookupd_http_addresses=[lookupd.http_address],
                               lookupd_poll_interval=0.05, max_in_flight=10)
    clients.append(consumer)
    driver.start(consumer)
    driver.wait_until(lambda: got == [b"from first"], timeout=20, message="the first nsqd")
    second = start_nsqd(*flags)
    publish(driver, clients, second, "found", [b"from second"])
    driver.wait_until(lambda: len(got) == 2, timeout=20, message="the second nsqd")
    assert set(consumer.connections) == {first.tcp_address, second.tcp_address}
    # Tombstoned, the second nsqd is no longer listed by /lookup: the consumer closes its
    # connection (after CLS), though that nsqd is still up.
    lookupd.http("POST", f"/topic/tombstone?topic=found&node=127.0.0.1:{second.http_port}")
    driver.wait_until(lambda: set(consumer.connections) == {first.tcp_address},
                      message="the vanished nsqd to be dropped")
    driver.wait_until(lambda: second.channel_stats("found", "ch")["client_count"] == 0,
                      message="the connection to the second nsqd closed")
    assert first.channel_stats("found", "ch")["client_count"] == 1


def test_lookupd_is_asked_again_soon_while_it_lists_no_nsqd(driver, start_nsqd,
                                                            lookupd_factory, clients):
    lookupd = lookupd_factory()
    nsqd = start_nsqd(f"--lookupd-tcp-address={lookupd.tcp_address}",
                      "--broadcast-address=127.0.0.1")
    got = []
    consumer = driver.consumer("late", "ch", driver.handler(lambda m: got.append(m.body)),
                               lookupd_http_addresses=[lookupd.http_address])
    clients.append(consumer)
    driver.start(consumer)
    assert consumer.connections == {}
    publish(driver, clients, nsqd, "late", [b"first"])
    driver.wait_until(lambda: got == [b"first"], timeout=20,
                      message="the consumer to find the new topic through lookupd")
