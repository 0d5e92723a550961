"""to_nsq as a process: stdin records to every nsqd given, --delimiter, and --rate (checked
on nsqd's own message timestamps)."""

from support import V2Client


def read_topic(daemon, topic, count):
    client = V2Client(daemon.tcp_port)
    try:
        client.sub(topic, "check", rdy=count + 1)
        return [client.read_message() for _ in range(count)]
    finally:
        client.close()


def test_publishes_each_line_to_every_nsqd(nsqd_factory, tool_factory):
    daemons = [nsqd_factory(), nsqd_factory()]
    publisher = tool_factory("to_nsq", "--topic=lines",
                             *[f"--nsqd-tcp-address={d.tcp_address}" for d in daemons],
                             stdin=b"one\ntwo\n\nthree")
    assert publisher.wait() == 0, publisher.log_text()
    for daemon in daemons:
        assert daemon.topic_stats("lines")["message_count"] == 3
        assert [m.body for m in read_topic(daemon, "lines", 3)] == [b"one", b"two", b"three"]


def test_delimiter_and_rate_limit(nsqd, tool_factory):
    records = [b"r%02d" % i for i in range(41)]
    publisher = tool_factory("to_nsq", "--topic=rated", f"--nsqd-tcp-address={nsqd.tcp_address}",
                             "--delimiter=,", "--rate=20", stdin=b",".join(records) + b"\n")
    assert publisher.wait() == 0, publisher.log_text()
    assert "Throttling messages rate to max:20/second" in publisher.log_text()
    messages = read_topic(nsqd, "rated", len(records))
    assert [m.body for m in messages] == records
    # 20 a second, with at most a second's worth (20) saved up: 41 records span more
    # than a second however long the start took.
    spread = (messages[-1].timestamp - messages[0].timestamp) / 1e9
    assert spread >= 1.0, spread
