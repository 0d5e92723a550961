"""nsqd's statsd push, received by a UDP server in the test: Go nsqd 1.3's metric names,
types, prefix and packing, counters sent as increases, the e2e percentiles and memory
figures, and the flags that shape it (--statsd-prefix, --statsd-udp-packet-size,
--statsd-mem-stats, --statsd-exclude-ephemeral)."""

import re
import socket

import pytest

from support import V2Client, wait_until
from greensq.services.nsqd.statsd import full_prefix, pack

# Go nsqd's statsd.go, in its order: per topic, then per channel, then the memory figures.
TOPIC_METRICS = [("message_count", "c"), ("message_bytes", "c"), ("depth", "g"),
                 ("backend_depth", "g")]
CHANNEL_METRICS = [("message_count", "c"), ("depth", "g"), ("backend_depth", "g"),
                   ("in_flight_count", "g"), ("deferred_count", "g"), ("requeue_count", "c"),
                   ("timeout_count", "c"), ("clients", "g")]
MEM_METRICS = [("heap_objects", "g"), ("heap_idle_bytes", "g"), ("heap_in_use_bytes", "g"),
               ("heap_released_bytes", "g"), ("gc_pause_usec_100", "g"),
               ("gc_pause_usec_99", "g"), ("gc_pause_usec_95", "g"), ("next_gc_bytes", "g"),
               ("gc_runs", "c")]
LINE = re.compile(r"(?P<name>[^:\n]+):(?P<value>-?\d+)\|(?P<kind>[cg])")


class StatsdServer:
    """A UDP socket standing in for statsd; keeps every packet received."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.packets = []

    def receive(self):
        try:
            self.packets.append(self.sock.recv(65536))
        except socket.timeout:
            pass
        return self.packets

    def pushes(self, prefix):
        """Every push received, as a list of ``(name without prefix, value, kind)``; a
        push ends with ``mem.gc_runs`` (or, without memory stats, with what came before
        the next push's first topic line)."""
        pushes, current = [], []
        for packet in self.packets:
            assert packet.endswith(b"\n"), packet
            for line in packet.decode().splitlines():
                match = LINE.fullmatch(line)
                assert match, line
                name = match["name"]
                assert name.startswith(prefix), (name, prefix)
                current.append((name[len(prefix):], int(match["value"]), match["kind"]))
                if name.endswith("mem.gc_runs"):
                    pushes.append(current)
                    current = []
        return pushes, current

    def wait_for_pushes(self, prefix, count, timeout=20):
        """Every complete push, once ``count`` more than now have arrived."""
        wanted = len(self.pushes(prefix)[0]) + count

        def enough():
            self.receive()
            return len(self.pushes(prefix)[0]) >= wanted
        wait_until(enough, timeout=timeout, interval=0, message=f"{count} statsd pushes")
        return self.pushes(prefix)[0]

    def close(self):
        self.sock.close()


@pytest.fixture
def statsd():
    server = StatsdServer()
    yield server
    server.close()


def statsd_nsqd(nsqd_factory, statsd, *args):
    return nsqd_factory(f"--statsd-address={statsd.address}", "--statsd-interval=1s",
                        "--broadcast-address=test.host", *args)


def prefix_of(nsqd):
    return f"nsq.test_host_{nsqd.http_port}."


def expected_names(topic, channels, percentiles=()):
    names = [(f"topic.{topic}.{name}", kind) for name, kind in TOPIC_METRICS]
    names += [(f"topic.{topic}.e2e_processing_latency_{p}", "g") for p in percentiles]
    for channel in channels:
        base = f"topic.{topic}.channel.{channel}"
        names += [(f"{base}.{name}", kind) for name, kind in CHANNEL_METRICS]
        names += [(f"{base}.e2e_processing_latency_{p}", "g") for p in percentiles]
    return names + [(f"mem.{name}", kind) for name, kind in MEM_METRICS]


def consume(nsqd, topic, channel, count):
    client = V2Client(nsqd.tcp_port)
    client.sub(topic, channel, rdy=count)
    for _ in range(count):
        msg = client.read_message()
        client.command(b"FIN " + msg.id)
    client.command("NOP")
    return client


def test_go_names_types_and_packets(nsqd_factory, statsd):
    nsqd = statsd_nsqd(nsqd_factory, statsd,
                       "--e2e-processing-latency-percentile=0.5,0.99",
                       "--e2e-processing-latency-percentile=1.0")
    assert nsqd.http("POST", "/channel/create?topic=orders&channel=idle")[0] == 404
    assert nsqd.http("POST", "/topic/create?topic=orders")[0] == 200
    for channel in ("billing", "idle"):
        assert nsqd.http("POST", f"/channel/create?topic=orders&channel={channel}")[0] == 200
    producer = V2Client(nsqd.tcp_port)
    assert producer.mpub("orders", [b"x" * 10] * 4) == (0, b"OK")
    consumer = consume(nsqd, "orders", "billing", 4)
    wait_until(lambda: nsqd.channel_stats("orders", "billing")["e2e_processing_latency"]
               ["count"] == 4, message="the FINs counted")

    prefix = prefix_of(nsqd)
    pushes = statsd.wait_for_pushes(prefix, 2)
    for packet in statsd.packets:
        assert len(packet) <= 508
    # NSQ's percentile flags are sorted, largest first: 1.0, 0.99, 0.5
    names = expected_names("orders", ["billing", "idle"], percentiles=(100, 99, 50))
    for push in pushes[-2:]:
        assert [(name, kind) for name, _, kind in push] == names
    values = [{name: value for name, value, _ in push} for push in pushes]
    last = values[-1]
    # Counters are increases since the previous push; gauges are current values.
    assert sum(v.get("topic.orders.message_count", 0) for v in values) == 4
    assert sum(v.get("topic.orders.message_bytes", 0) for v in values) == 40
    assert last["topic.orders.message_count"] == 0
    assert sum(v.get("topic.orders.channel.idle.message_count", 0) for v in values) == 4
    assert last["topic.orders.channel.idle.depth"] == 4
    assert last["topic.orders.channel.billing.depth"] == 0
    assert last["topic.orders.channel.billing.clients"] == 1
    assert last["topic.orders.channel.billing.e2e_processing_latency_99"] > 0
    assert last["topic.orders.e2e_processing_latency_50"] > 0
    assert last["topic.orders.channel.idle.e2e_processing_latency_99"] == 0
    assert last["mem.heap_in_use_bytes"] > 1_000_000        # the RSS of a Python process
    assert nsqd.wait_for_log(r"STATSD: pushing stats to " + re.escape(statsd.address))
    consumer.close()
    producer.close()


def test_packet_size_prefix_and_no_mem_stats(nsqd_factory, statsd):
    nsqd = statsd_nsqd(nsqd_factory, statsd, "--statsd-udp-packet-size=100",
                       "--statsd-prefix=app.%s.nsqd", "--statsd-mem-stats=false")
    assert nsqd.http("POST", "/channel/create?topic=t&channel=c")[0] == 404
    assert nsqd.http("POST", "/topic/create?topic=t")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=t&channel=c")[0] == 200
    prefix = f"app.test_host_{nsqd.http_port}.nsqd."
    line_count = len(expected_names("t", ["c"])) - len(MEM_METRICS)

    def two_pushes():
        statsd.receive()
        lines = [line for p in statsd.packets for line in p.decode().splitlines()]
        return len(lines) >= 2 * line_count

    wait_until(two_pushes, timeout=20, interval=0, message="two pushes")
    lines = [line for packet in statsd.packets for line in packet.decode().splitlines()]
    assert all(line.startswith(prefix) for line in lines)
    assert not any(".mem." in line for line in lines)
    for packet in statsd.packets:
        packed = packet.decode().splitlines(keepends=True)
        # Whole lines only, as many as fit in 100 bytes (a longer line goes alone).
        assert len(packet) <= 100 or len(packed) == 1
    assert [line.split(":")[0][len(prefix):] for line in lines[:line_count]] == [
        name for name, _ in expected_names("t", ["c"])[:line_count]]


def test_exclude_ephemeral(nsqd_factory, statsd):
    nsqd = statsd_nsqd(nsqd_factory, statsd, "--statsd-exclude-ephemeral")
    assert nsqd.http("POST", "/topic/create?topic=kept")[0] == 200
    assert nsqd.http("POST", "/channel/create?topic=kept&channel=durable")[0] == 200
    ephemeral_consumer = V2Client(nsqd.tcp_port)
    ephemeral_consumer.sub("kept", "tail#ephemeral")
    other_consumer = V2Client(nsqd.tcp_port)
    other_consumer.sub("gone#ephemeral", "c")
    wait_until(lambda: nsqd.channel_stats("kept", "tail#ephemeral"), message="the channel")
    pushes = statsd.wait_for_pushes(prefix_of(nsqd), 1)
    names = [name for name, _, _ in pushes[-1]]
    assert "topic.kept.channel.durable.depth" in names
    assert not any("ephemeral" in name for name in names), names
    ephemeral_consumer.close()
    other_consumer.close()


def test_prefix_as_go_builds_it():
    assert full_prefix("nsq.%s", "host.example", 4151) == "nsq.host_example_4151."
    assert full_prefix("nsq.%s.", "10.0.0.1", 4151) == "nsq.10_0_0_1_4151."
    assert full_prefix("nsq.%s", "::1", 4151) == "nsq.[__1]_4151."
    assert full_prefix("static", "h", 1) == "static."
    assert full_prefix("", "h", 1) == ""


def test_packing_as_gos_boundary_buffered_writer():
    lines = [b"a" * 40 + b"\n", b"b" * 40 + b"\n", b"c" * 200 + b"\n", b"d\n"]
    assert pack(lines, 100) == [lines[0] + lines[1], lines[2], lines[3]]
    assert pack(lines, 0) == [b"".join(lines)]     # Go's bufio default of 4096 bytes
    assert pack([], 508) == []


def test_statsd_down_does_not_hurt(nsqd_factory):
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % closed.getsockname()[1]
    closed.close()          # nobody listens: sends fail with ECONNREFUSED
    nsqd = nsqd_factory(f"--statsd-address={address}", "--statsd-interval=1s")
    wait_until(lambda: nsqd.log_text().count("STATSD: pushing stats to") >= 2,
               message="two pushes")
    assert nsqd.http("GET", "/ping")[0] == 200
    assert nsqd.stop() == 0
    assert "Traceback" not in nsqd.log_text()
