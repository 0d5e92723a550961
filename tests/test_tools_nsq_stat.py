"""nsq_stat as a process: its table (NSQ's columns and layout, header repetition, rows
summed over the nsqd lookupd lists) and its fatal errors."""

import re

from tool_checks import create_channel, publish

from greensq.services.tools.nsq_stat import NsqStat

HEADER = [
    "------rate------+----------------depth----------------+--------------metadata---------------",
    "ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients",
]
ROW = re.compile(r"^ +\d+ +\d+ \| +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) \| +(\d+) +(\d+) +(\d+) +(\d+)$")


def test_prints_the_channel_table_summed_over_the_topics_nsqd(nsqd_factory, lookupd_factory,
                                                               tool_factory):
    lookupd = lookupd_factory()
    daemons = [nsqd_factory(f"--lookupd-tcp-address={lookupd.tcp_address}",
                            "--broadcast-address=127.0.0.1") for _ in range(2)]
    for count, daemon in zip((3, 4), daemons):
        create_channel(daemon, "stats", "ch")
        publish(daemon, "stats", [b"x"] * count)
    stat = tool_factory("nsq_stat", "--topic=stats", "--channel=ch", "--interval=100ms",
                        "--count=3", "--status-every=2",
                        f"--lookupd-http-address={lookupd.http_address}")
    assert stat.wait() == 0, stat.log_text()
    lines = stat.stdout_lines()
    assert lines[:2] == HEADER and lines[3:5] == HEADER and len(lines) == 7, lines
    for row in (lines[2], lines[5], lines[6]):
        # total mem disk inflt def | req t-o msgs clients
        assert ROW.match(row).groups() == ("7", "7", "0", "0", "0", "0", "0", "7", "0"), row


def test_rates_are_the_changes_over_the_interval():
    zero = dict.fromkeys(("depth", "memory_depth", "backend_depth", "in_flight_count",
                          "deferred_count", "requeue_count", "timeout_count", "message_count",
                          "client_count"), 0)
    before = zero | {"message_count": 100, "depth": 40}
    after = zero | {"message_count": 300, "depth": 60, "memory_depth": 45, "backend_depth": 15,
                    "client_count": 2}
    # 200 in over 2 s; the depth grew by 20, so 180 went out.
    assert NsqStat.row(before, after, 2.0) == (
        "    100      90 |      60      45      15     0     0 |       0       0"
        "          300       2\n")


def test_an_unknown_channel_is_fatal(nsqd_factory, tool_factory):
    nsqd = nsqd_factory("--broadcast-address=127.0.0.1")
    create_channel(nsqd, "rates", "ch")
    missing = tool_factory("nsq_stat", "--topic=rates", "--channel=nope",
                           f"--nsqd-http-address={nsqd.http_address}")
    assert missing.wait() == 1
    assert "ERROR: failed to find channel(nope) in stats metadata for topic(rates)" \
        in missing.log_text()
    assert missing.stdout_lines() == []
