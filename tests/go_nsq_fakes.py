"""Stand-ins for Go NSQ 1.3's nsqd and nsqlookupd HTTP APIs, serving recorded documents.

nsqadmin must read what Go's daemons write (``null`` where Go leaves a slice nil, fields
greensq's nsqd does not have, e-2-e percentiles), and the tests may not depend on Go's
binaries. These threads answer the read endpoints nsqadmin uses exactly as Go's daemons
do, from a fixture (``fixtures/nsqadmin/go_cluster.json``): nsqd's ``/info`` and
``/stats`` (with Go's topic, channel and ``include_clients`` filtering), and nsqlookupd's
``/nodes``, ``/topics``, ``/lookup`` and ``/channels``. ``{NSQD0}``-style placeholders in
the fixture stand for the fakes' own ``host:port`` and ``{NSQD0_PORT}`` for their ports.
"""

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures" / "nsqadmin"


def load_fixture(name, substitutions):
    """A fixture JSON file with its ``{NAME}`` placeholders filled in."""
    text = (FIXTURES / name).read_text()
    for key, value in substitutions.items():
        text = text.replace("{" + key + "}", str(value))
    return json.loads(text)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        status, doc = self.server.fake.answer(parts.path, query)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("X-NSQ-Content-Type", "nsq; version=1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeNode:
    """One fake daemon on a free loopback port; ``documents`` is set before use."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.documents = {}
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path, query):
        raise NotImplementedError


class FakeNsqd(FakeNode):
    """Go nsqd 1.3's ``/info`` and ``/stats?format=json``."""

    def answer(self, path, query):
        if path == "/info":
            return 200, self.documents["info"]
        if path == "/stats":
            return 200, self._stats(query.get("topic", ""), query.get("channel", ""),
                                    query.get("include_clients") not in ("false", "0"))
        return 404, {"message": "NOT_FOUND"}

    def _stats(self, topic, channel, include_clients):
        stats = copy.deepcopy(self.documents["stats"])
        topics = stats["topics"] or []
        if topic:
            topics = [t for t in topics if t["topic_name"] == topic] or None
        for entry in topics or []:
            if channel:
                entry["channels"] = [c for c in entry["channels"] if c["channel_name"] == channel]
            for chan in entry["channels"]:
                if not include_clients:
                    chan["clients"] = None
        if topics is not None and channel:
            topics = [t for t in topics if t["channels"]]
        stats["topics"] = topics
        if not include_clients:
            stats["producers"] = None
        return stats


class FakeLookupd(FakeNode):
    """Go nsqlookupd 1.3's discovery endpoints over a fixed registration."""

    def answer(self, path, query):
        producers = self.documents["producers"]
        channels = self.documents["channels"]
        if path == "/nodes":
            return 200, {"producers": producers}
        if path == "/topics":
            return 200, {"topics": sorted(channels)}
        if path in ("/lookup", "/channels"):
            topic = query.get("topic")
            if topic is None:
                return 400, {"message": "MISSING_ARG_TOPIC"}
            if path == "/channels":
                return 200, {"channels": channels.get(topic, [])}
            if topic not in channels:
                return 404, {"message": "TOPIC_NOT_FOUND"}
            having = [{k: v for k, v in p.items() if k not in ("tombstones", "topics")}
                      for p in producers if topic in p["topics"]
                      and not p["tombstones"][p["topics"].index(topic)]]
            return 200, {"channels": channels[topic], "producers": having}
        return 404, {"message": "NOT_FOUND"}


class FakeGoCluster:
    """Two fake Go nsqd and one fake nsqlookupd, filled from ``go_cluster.json``."""

    def __init__(self):
        self.nsqds = [FakeNsqd(), FakeNsqd()]
        self.lookupd = FakeLookupd()
        self.substitutions = {}
        for i, node in enumerate(self.nsqds):
            self.substitutions[f"NSQD{i}"] = node.address
            self.substitutions[f"NSQD{i}_PORT"] = node.port
        self.substitutions["LOOKUPD"] = self.lookupd.address
        fixture = load_fixture("go_cluster.json", self.substitutions)
        for node, documents in zip(self.nsqds, fixture["nsqd"]):
            node.documents = documents
        self.lookupd.documents = fixture["lookupd"]

    def start(self):
        for node in [*self.nsqds, self.lookupd]:
            node.start()
        return self

    def stop(self):
        for node in [*self.nsqds, self.lookupd]:
            node.stop()
