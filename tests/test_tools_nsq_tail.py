"""nsq_tail as a process: its stdout, the ephemeral channel it reads on, -n, what happens
to the messages past the last one wanted, and TLS set with go-nsq's option names."""

import re

from certs import Certs
from support import wait_until
from tool_checks import create_channel, publish


def test_prints_messages_of_several_topics_on_an_ephemeral_channel(nsqd, tool_factory):
    tail = tool_factory("nsq_tail", "--topic=left", "--topic=right", "--print-topic", "-n", "4",
                        f"--nsqd-tcp-address={nsqd.tcp_address}")

    def ephemeral_channels():
        names = [c["channel_name"] for topic in ("left", "right")
                 for c in (nsqd.topic_stats(topic) or {}).get("channels", [])]
        return len(names) == 2 and names

    channels = wait_until(ephemeral_channels, message="both topics subscribed")
    assert all(re.fullmatch(r"tail\d{6}#ephemeral", name) for name in channels), channels
    publish(nsqd, "left", [b"l1", b"l2"])
    publish(nsqd, "right", [b"r1", b"r2"])
    assert tail.wait() == 0, tail.log_text()
    assert sorted(tail.stdout_lines()) == ["left | l1", "left | l2", "right | r1", "right | r2"]
    assert "Adding consumer for topic: left" in tail.log_text()


def test_count_stops_after_n_and_leaves_the_rest_queued(nsqd, tool_factory):
    create_channel(nsqd, "many", "watch")
    publish(nsqd, "many", [b"m%d" % i for i in range(10)])
    tail = tool_factory("nsq_tail", "--topic=many", "--channel=watch", "--count=3",
                        f"--nsqd-tcp-address={nsqd.tcp_address}")
    assert tail.wait() == 0, tail.log_text()
    assert tail.stdout_lines() == ["m0", "m1", "m2"]
    stats = wait_until(lambda: (s := nsqd.channel_stats("many", "watch"))["client_count"] == 0
                       and s, message="nsq_tail gone")
    assert (stats["depth"], stats["in_flight_count"]) == (7, 0)


def test_tls_set_with_go_nsq_option_names(nsqd_factory, tool_factory, tmp_path):
    certs = Certs(tmp_path)
    nsqd = nsqd_factory(*certs.server_flags("--tls-required=true"))
    tls = ("tls_v1,true", f"tls_root_ca_file,{certs.ca}", "tls_min_version,tls1.2")
    publisher = tool_factory("to_nsq", "--topic=secure", f"--nsqd-tcp-address={nsqd.tcp_address}",
                             *[f"--producer-opt={o}" for o in tls], stdin=b"one\ntwo\n")
    assert publisher.wait() == 0, publisher.log_text()
    tail = tool_factory("nsq_tail", "--topic=secure", "-n", "2",
                        f"--nsqd-tcp-address={nsqd.tcp_address}",
                        *[f"--consumer-opt={o}" for o in tls])
    assert tail.wait() == 0, tail.log_text()
    assert tail.stdout_lines() == ["one", "two"]
