"""The basic publish / subscribe path over real sockets."""

from support import FRAME_RESPONSE, V2Client


def test_publish_then_consume(nsqd):
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("smoke", b"hello") == (FRAME_RESPONSE, b"OK")
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("smoke", "ch", rdy=1)
    msg = consumer.read_message()
    assert (msg.body, msg.attempts) == (b"hello", 1)
    consumer.command(b"FIN " + msg.id)
    consumer.command("CLS")
    assert consumer.read_frame() == (FRAME_RESPONSE, b"CLOSE_WAIT")
