"""Single PUBs that arrive together, stored together (services/nsqd/publish_gathering.py),
in the test process (the fast tier): clients that publish at the same moment each get
their own OK in command order, nothing is lost or reordered within a connection, a batch
a full bounded queue refuses is answered message by message, and the PUBs of one turn
really are stored as one batch."""

import gevent

from nsq_cases import mpub_body, sized
from support import FRAME_ERROR, FRAME_RESPONSE

OK = (FRAME_RESPONSE, b"OK")


def pub(topic, body):
    return b"PUB %s\n" % topic + sized(body)


def drain(nsqd, topic, count):
    """The bodies of ``count`` messages of ``topic``, in the order a consumer gets them."""
    consumer = nsqd.subscribe(topic.decode(), "ch", rdy=count)
    bodies = []
    for _ in range(count):
        message = consumer.read_message()
        bodies.append(message.body)
        consumer.command(b"FIN " + message.id)
    return bodies


def test_concurrent_pubs_are_stored_together_and_answered_each_in_order(inproc_nsqd):
    stored_batches = []
    start_publish = inproc_nsqd.core.start_publish

    def recording(topic_name, bodies, defer_ms=0):     # records, then publishes as ever
        stored_batches.append(len(bodies))
        return start_publish(topic_name, bodies, defer_ms)

    inproc_nsqd.core.start_publish = recording
    clients = [inproc_nsqd.connect() for _ in range(16)]
    for number, client in enumerate(clients):
        client.send(b"".join(pub(b"t", b"c%d-%d" % (number, i)) for i in range(20)))
    for client in clients:
        assert [client.read_frame() for _ in range(20)] == [OK] * 20
    assert sum(stored_batches) == 16 * 20
    assert max(stored_batches) > 1, stored_batches      # gathered, not one call a PUB
    bodies = drain(inproc_nsqd, b"t", 16 * 20)
    for number in range(16):
        mine = [body for body in bodies if body.startswith(b"c%d-" % number)]
        assert mine == [b"c%d-%d" % (number, i) for i in range(20)]


def test_an_mpub_after_gathered_pubs_keeps_the_connection_s_order(inproc_nsqd):
    busy, ordered = inproc_nsqd.connect(), inproc_nsqd.connect()
    busy.send(b"".join(pub(b"other", b"x") for _ in range(10)))
    ordered.send(pub(b"t", b"a") + b"MPUB t\n" + sized(mpub_body([b"b", b"c"]))
                 + pub(b"t", b"d") + b"DPUB t 0\n" + sized(b"e") + pub(b"t", b"f"))
    assert [ordered.read_frame() for _ in range(5)] == [OK] * 5
    assert [busy.read_frame() for _ in range(10)] == [OK] * 10
    assert drain(inproc_nsqd, b"t", 6) == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_a_batch_refused_by_a_full_queue_is_answered_message_by_message(inproc_nsqd_factory):
    # Each message takes 40 bytes of body plus its header and size on disk: one fits in
    # 100 bytes, two do not. Refused whole, the batch is stored again one by one.
    nsqd = inproc_nsqd_factory("--mem-queue-size=0", "--max-bytes-per-topic=100")
    clients = [nsqd.connect() for _ in range(4)]
    for client in clients:
        client.send(pub(b"full", b"x" * 40))
    answers = [client.read_frame() for client in clients]
    assert answers.count(OK) == 1, answers
    refused = [answer for answer in answers if answer != OK]
    assert all(kind == FRAME_ERROR and data.startswith(b"E_PUB_FAILED PUB failed full: no room")
               for kind, data in refused), refused
    assert nsqd.topic_stats("full")["depth"] == 1


def test_answers_a_full_socket_cannot_take_at_once_follow_in_order(inproc_nsqd):
    # Two clients pipeline more PUBs than their sockets hold answers for, reading
    # nothing until they have sent them all: the answers that do not leave at once wait
    # for the writer, in order, and every one arrives.
    count = 30_000
    clients = [inproc_nsqd.connect(timeout=10) for _ in range(2)]
    senders = [gevent.spawn(client.send, b"".join(pub(b"t", b"%d" % i) for i in range(count)))
               for client in clients]
    gevent.joinall(senders, raise_error=True)
    for client in clients:
        assert all(client.read_frame() == OK for _ in range(count))
    assert inproc_nsqd.topic_stats("t")["message_count"] == 2 * count
