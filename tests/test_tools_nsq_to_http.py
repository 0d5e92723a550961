"""nsq_to_http as a process: the requests a local HTTP server receives (POST bodies and
headers, GET substitution, round-robin), requeue on a 500 answer and on a timeout, and the
--status-every timing lines; and how --mode picks destinations."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tool_checks import create_channel, publish, wait_channel_done

from greensq.services.tools.destinations import Destinations

# go-nsq requeues a failed message after 90 s times its attempts and backs off for 2 s:
# make both short so a redelivery comes at once.
FAST_RETRY = ("--consumer-opt=default_requeue_delay,0s", "--consumer-opt=backoff_multiplier,10ms")


class Recorder(ThreadingHTTPServer):
    """A local HTTP server that records every request. A body (or GET query) containing
    ``fail-once`` gets a 500 the first time, ``hang-once`` no answer the first time
    (until the test ends)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = []
        self.seen = set()
        self.release = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self):
        with self.lock:
            return [r["body"] for r in self.requests]

    def first_time(self, key):
        with self.lock:
            first = key not in self.seen
            self.seen.add(key)
            return first


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server = self.server
        with server.lock:
            server.requests.append({"method": self.command, "path": self.path, "body": body,
                                    "headers": dict(self.headers)})
        key = body or self.path.encode()
        status = 200
        if b"fail-once" in key and server.first_time(key):
            status = 500
        if b"hang-once" in key and server.first_time(key):
            server.release.wait(30)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer


@pytest.fixture
def http_servers():
    started = []

    def start():
        server = Recorder()
        started.append(server)
        return server

    yield start
    for server in started:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_posts_each_message_with_nsqs_headers(nsqd, tool_factory, http_servers):
    server = http_servers()
    bodies = [b"post %d" % i for i in range(5)]
    publish(nsqd, "posts", bodies)
    relay = tool_factory("nsq_to_http", "--topic=posts", f"--nsqd-tcp-address={nsqd.tcp_address}",
                         f"--post={server.url}/in", "--header=X-Test: yes",
                         "--content-type=text/plain")
    wait_channel_done(nsqd, "posts", "nsq_to_http", len(bodies))
    assert relay.stop() == 0, relay.log_text()
    assert sorted(server.bodies()) == bodies
    for request in server.requests:
        assert (request["method"], request["path"]) == ("POST", "/in")
        assert request["headers"]["Content-Type"] == "text/plain"
        assert request["headers"]["User-Agent"] == "nsq_to_http v1.3.0"
        assert request["headers"]["X-Test"] == "yes"


def test_get_puts_the_escaped_body_in_the_url_round_robin(nsqd, tool_factory, http_servers):
    first, second = http_servers(), http_servers()
    bodies = [b"a b&c=%d" % i for i in range(6)]
    publish(nsqd, "gets", bodies)
    relay = tool_factory("nsq_to_http", "--topic=gets", f"--nsqd-tcp-address={nsqd.tcp_address}",
                         f"--get={first.url}/q?data=%s", f"--get={second.url}/q?data=%s",
                         "--mode=round-robin", "--status-every=2")
    wait_channel_done(nsqd, "gets", "nsq_to_http", len(bodies))
    assert relay.stop() == 0, relay.log_text()
    paths = [r["path"] for server in (first, second) for r in server.requests]
    assert sorted(paths) == [f"/q?data=a+b%26c%3D{i}" for i in range(6)]
    assert len(first.requests) == len(second.requests) == 3
    log = relay.log_text()
    assert "Warning: use more than 100 status values for accurate percentiles " \
           "(configured with 2)" in log
    assert re.search(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[aggregate\]: finished 2 - "
                     r"99th: \d+\.\d\dms - 95th: \d+\.\d\dms - avg: \d+\.\d\dms", log), log
    assert re.search(rf"\[{re.escape(first.url)}/q\?data=%s\]: finished 2 - 99th", log), log


def test_a_500_answer_requeues_the_message(nsqd, tool_factory, http_servers):
    server = http_servers()
    publish(nsqd, "errors", [b"ok", b"fail-once"])
    relay = tool_factory("nsq_to_http", "--topic=errors", f"--nsqd-tcp-address={nsqd.tcp_address}",
                         f"--post={server.url}/", *FAST_RETRY)
    stats = wait_channel_done(nsqd, "errors", "nsq_to_http", 2)
    assert relay.stop() == 0, relay.log_text()
    assert stats["requeue_count"] == 1
    assert sorted(server.bodies()) == [b"fail-once", b"fail-once", b"ok"]
    assert "Handler returned error (got status code 500)" in relay.log_text()


def test_a_timeout_requeues_the_message(nsqd, tool_factory, http_servers):
    server = http_servers()
    create_channel(nsqd, "slow", "nsq_to_http")
    publish(nsqd, "slow", [b"hang-once"])
    relay = tool_factory("nsq_to_http", "--topic=slow", f"--nsqd-tcp-address={nsqd.tcp_address}",
                         f"--post={server.url}/", "--http-client-request-timeout=300ms",
                         *FAST_RETRY)
    stats = wait_channel_done(nsqd, "slow", "nsq_to_http", 1)
    assert relay.stop() == 0, relay.log_text()
    assert stats["requeue_count"] == 1
    assert server.bodies() == [b"hang-once", b"hang-once"]
    assert "timed out" in relay.log_text()


def test_hostpool_skips_a_failed_destination_until_its_retry():
    pool = Destinations(["a", "b", "c"], "hostpool")
    assert [pool.pick() for _ in range(3)] == ["a", "b", "c"]
    pool.mark("b", ok=False)
    assert [pool.pick() for _ in range(4)] == ["a", "c", "a", "c"]
    for address in ("a", "c"):
        pool.mark(address, ok=False)
    assert pool.pick() == "a"      # all down: every destination is tried again
    round_robin = Destinations(["a", "b"], "round-robin")
    round_robin.mark("a", ok=False)
    assert [round_robin.pick() for _ in range(3)] == ["b", "a", "b"]
