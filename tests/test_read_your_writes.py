"""An answered HTTP action is done: the very next request, on any connection, sees it.

Each check acts on one keep-alive connection and reads ``/stats`` (or nsqlookupd's
``/lookup``, or ``nsqd.dat``) on another right after the answer, many times over:
publishes, topic and channel create / delete / empty / pause / unpause, a channel
emptied while it holds in-flight and deferred messages, tombstones, config. nsqd's
checks run with and without HTTP workers (``--http-workers``), where the two
connections may reach different processes.
"""

import http.client
import json

import pytest

from support import V1Client, V2Client, wait_until

REPEAT = 20


class Http:
    """One keep-alive HTTP connection to a daemon."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method, path, body=None):
        self.conn.request(method, path, body)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def post(self, path, body=b""):
        status, data = self.request("POST", path, body)
        assert status == 200, (path, status, data)
        return data

    def json(self, path):
        status, data = self.request("GET", path)
        assert status == 200, (path, status, data)
        return json.loads(data)


def stats(reader, topic=None):
    doc = reader.json("/stats?format=json" + (f"&topic={topic}" if topic else ""))
    return {t["topic_name"]: t for t in doc["topics"] or []}


def channel(reader, topic, name):
    return next(c for c in stats(reader, topic)[topic]["channels"]
                if c["channel_name"] == name)


def metadata(data_path):
    with open(f"{data_path}/nsqd.dat") as fh:
        doc = json.load(fh)
    return {t["name"]: ({c["name"]: c["paused"] for c in t["channels"]}, t["paused"])
            for t in doc["topics"]}


@pytest.fixture(params=[0, 2], ids=lambda count: f"http-workers={count}")
def nsqd(nsqd_factory, request):
    """nsqd serving HTTP itself, and with HTTP workers in front of its core."""
    return nsqd_factory(f"--http-workers={request.param}")


@pytest.fixture
def pair(nsqd):
    """A writer and a reader connection to one nsqd."""
    return Http(nsqd.http_port), Http(nsqd.http_port)


def test_publish_is_in_the_channel_depth_at_once(nsqd, pair):
    writer, reader = pair
    writer.post("/topic/create?topic=ryw")
    writer.post("/channel/create?topic=ryw&channel=ch")
    tcp = V2Client(nsqd.tcp_port)
    for i in range(1, REPEAT + 1):
        if i % 3 == 0:
            assert tcp.pub("ryw", b"tcp") == (0, b"OK")
        elif i % 3 == 1:
            writer.post("/pub?topic=ryw", b"http")
        else:
            writer.post("/mpub?topic=ryw", b"one")
        entry = stats(reader, "ryw")["ryw"]
        assert entry["message_count"] == i
        assert entry["channels"][0]["depth"] == i


def test_topic_and_channel_actions_are_visible_at_once(nsqd, pair):
    writer, reader = pair
    for i in range(REPEAT):
        topic = f"actions{i}"
        writer.post(f"/topic/create?topic={topic}")
        assert topic in stats(reader)
        assert metadata(nsqd.data_path)[topic] == ({}, False)
        writer.post(f"/channel/create?topic={topic}&channel=ch")
        assert channel(reader, topic, "ch")["paused"] is False
        writer.post(f"/channel/pause?topic={topic}&channel=ch")
        assert channel(reader, topic, "ch")["paused"] is True
        writer.post(f"/topic/pause?topic={topic}")
        assert stats(reader, topic)[topic]["paused"] is True
        assert metadata(nsqd.data_path)[topic] == ({"ch": True}, True)
        writer.post(f"/topic/unpause?topic={topic}")
        writer.post(f"/channel/unpause?topic={topic}&channel=ch")
        assert stats(reader, topic)[topic]["paused"] is False
        assert channel(reader, topic, "ch")["paused"] is False
        assert metadata(nsqd.data_path)[topic] == ({"ch": False}, False)
        writer.post(f"/pub?topic={topic}", b"m")
        writer.post(f"/topic/empty?topic={topic}")
        writer.post(f"/channel/empty?topic={topic}&channel=ch")
        assert channel(reader, topic, "ch")["depth"] == 0
        writer.post(f"/channel/delete?topic={topic}&channel=ch")
        assert stats(reader, topic)[topic]["channels"] == []
        assert metadata(nsqd.data_path)[topic] == ({}, False)
        writer.post(f"/topic/delete?topic={topic}")
        assert topic not in stats(reader)
        assert topic not in metadata(nsqd.data_path)


def test_channel_empty_clears_in_flight_and_deferred_before_answering(nsqd, pair):
    writer, reader = pair
    writer.post("/topic/create?topic=emptied")
    writer.post("/channel/create?topic=emptied&channel=ch")
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("emptied", "ch", rdy=10)
    for _ in range(REPEAT):
        writer.post("/mpub?topic=emptied", b"a\nb\nc\nd\ne")
        held = [consumer.read_message() for _ in range(5)]
        for msg in held[:3]:
            consumer.command(b"REQ " + msg.id + b" 60000")   # deferred
        writer.post("/pub?topic=emptied&defer=60000", b"later")
        consumer.command("NOP")
        # The REQs are on their way; /stats shows them once handled.
        wait_until(lambda: channel(reader, "emptied", "ch")["deferred_count"] == 4,
                   interval=0, message="the REQs handled")
        writer.post("/channel/empty?topic=emptied&channel=ch")
        entry = channel(reader, "emptied", "ch")
        assert (entry["depth"], entry["in_flight_count"], entry["deferred_count"]) == (0, 0, 0)


def test_nsqlookupd_actions_are_visible_at_once(lookupd_factory):
    lookupd = lookupd_factory()
    writer, reader = Http(lookupd.http_port), Http(lookupd.http_port)
    for i in range(REPEAT):
        writer.post(f"/channel/create?topic=lt{i}&channel=c")
        assert f"lt{i}" in reader.json("/topics")["topics"]
        assert reader.json(f"/channels?topic=lt{i}")["channels"] == ["c"]
        writer.post(f"/channel/delete?topic=lt{i}&channel=c")
        assert reader.json(f"/channels?topic=lt{i}")["channels"] in ([], None)
        writer.post(f"/topic/delete?topic=lt{i}")
        assert f"lt{i}" not in (reader.json("/topics")["topics"] or [])
    producer = V1Client(lookupd.tcp_port)
    producer.identify(broadcast_address="10.0.0.1", http_port=4151)
    for i in range(REPEAT):
        assert producer.command(f"REGISTER tomb{i}") == b"OK"
        assert len(reader.json(f"/lookup?topic=tomb{i}")["producers"]) == 1
        writer.post(f"/topic/tombstone?topic=tomb{i}&node=10.0.0.1:4151")
        assert not reader.json(f"/lookup?topic=tomb{i}")["producers"]
        node = reader.json("/nodes")["producers"][0]
        assert node["tombstones"][node["topics"].index(f"tomb{i}")] is True


def test_config_change_is_visible_at_once(nsqd, pair):
    writer, reader = pair
    for level in ["debug", "warn", "info"] * (REPEAT // 3):
        assert writer.request("PUT", "/config/log_level", level.encode())[0] == 200
        assert reader.json("/config/log_level") == {"debug": 1, "info": 2, "warn": 3}[level]
