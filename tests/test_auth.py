"""NSQ's auth protocol: nsqd with ``--auth-http-address`` asks an auth server (here a tiny
HTTP server on a thread of the pytest process) about each client's AUTH secret, then checks
every SUB / PUB / MPUB / DPUB against the grants it returned, asking again once the TTL ran
out. Exercised over raw V2, greensq.client, and pynsq / gnsq in a subprocess.
"""

import json
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support import (
    FRAME_ERROR, FRAME_MESSAGE, FRAME_RESPONSE, V2Client, free_port, run_client_script,
    wait_until)

SCRIPT = Path(__file__).with_name("auth_clients.py")

ALL = {"topic": ".*", "channels": [".*"], "permissions": ["subscribe", "publish"]}


def grant(topic=".*", channels=(".*",), permissions=("subscribe", "publish")):
    return {"topic": topic, "channels": list(channels), "permissions": list(permissions)}


def answer(*grants, ttl=3600, identity="alice", identity_url="https://example.test/u/alice"):
    return {"ttl": ttl, "identity": identity, "identity_url": identity_url,
            "authorizations": list(grants)}


class AuthServer:
    """An auth server: ``secrets`` maps a secret to ``(status, JSON-able body)``; unknown
    secrets get 403. ``requests`` records the path and query of every request."""

    def __init__(self):
        self.secrets = {}
        self.requests = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                with server._lock:
                    server.requests.append({"path": url.path, "query": query,
                                            "accept": self.headers.get("Accept")})
                    status, body = server.secrets.get(
                        query.get("secret"), (403, {"message": "FORBIDDEN"}))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set(self, secret, body, status=200):
        with self._lock:
            self.secrets[secret] = (status, body)

    def count(self, secret=None):
        with self._lock:
            return sum(1 for r in self.requests
                       if secret is None or r["query"].get("secret") == secret)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def auth_server():
    server = AuthServer()
    yield server
    server.close()


@pytest.fixture
def auth_nsqd(nsqd_factory, auth_server):
    return nsqd_factory(f"--auth-http-address={auth_server.address}")


def connect(nsqd):
    client = V2Client(nsqd.tcp_port)
    info = client.identify(feature_negotiation=True)
    return client, info


def auth(client, secret):
    client.command("AUTH", secret.encode() if isinstance(secret, str) else secret)
    return client.read_frame()


def authed(nsqd, secret):
    client, _ = connect(nsqd)
    kind, data = auth(client, secret)
    assert kind == FRAME_RESPONSE, data
    return client


def mpub_payload(bodies):
    return struct.pack(">i", len(bodies)) + b"".join(
        struct.pack(">i", len(b)) + b for b in bodies)


def send_cmd(client, verb, topic, channel="ch"):
    """Send one permission-checked command; its answer frame."""
    if verb == "PUB":
        client.command(f"PUB {topic}", b"body")
    elif verb == "MPUB":
        client.command(f"MPUB {topic}", mpub_payload([b"a", b"b"]))
    elif verb == "DPUB":
        client.command(f"DPUB {topic} 0", b"body")
    else:
        client.command(f"SUB {topic} {channel}")
    return client.read_frame()


def assert_fatal(client, frame, text):
    assert frame == (FRAME_ERROR, text.encode()), frame
    assert client.is_closed()


# -- IDENTIFY and AUTH ---------------------------------------------------------------------

def test_identify_says_auth_required_only_with_an_auth_server(auth_nsqd, nsqd):
    client, info = connect(auth_nsqd)
    assert info["auth_required"] is True
    client, info = connect(nsqd)
    assert info["auth_required"] is False


def test_commands_before_auth_get_e_auth_first(auth_nsqd, auth_server):
    for verb in ("PUB", "MPUB", "DPUB", "SUB"):
        client, _ = connect(auth_nsqd)
        assert_fatal(client, send_cmd(client, verb, "t"),
                     f"E_AUTH_FIRST AUTH required before {verb}")
    assert auth_server.count() == 0
    assert auth_nsqd.topic_stats("t") is None   # MPUB is checked before the topic is made


def test_auth_success_returns_identity_and_permission_count(auth_nsqd, auth_server):
    auth_server.set("s3cret", answer(ALL, grant("x", ["y"], ["publish"])))
    client, _ = connect(auth_nsqd)
    kind, data = auth(client, "s3cret")
    assert kind == FRAME_RESPONSE
    assert json.loads(data) == {"identity": "alice",
                                "identity_url": "https://example.test/u/alice",
                                "permission_count": 2}
    assert b"\\/" not in data      # Go's JSON does not escape slashes
    (request,) = auth_server.requests
    assert request["path"] == "/auth"
    assert request["query"] == {"remote_ip": "127.0.0.1", "tls": "false", "secret": "s3cret",
                                "common_name": ""}
    assert request["accept"] == "application/vnd.nsq; version=1.0"
    # Authorised: PUB and SUB now work on this connection.
    assert send_cmd(client, "PUB", "t") == (FRAME_RESPONSE, b"OK")
    assert send_cmd(client, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    assert auth_server.count() == 1      # the answer is cached for its TTL


def test_secret_is_sent_url_encoded(auth_nsqd, auth_server):
    secret = "a b&c=d/é"
    auth_server.set(secret, answer(ALL))
    authed(auth_nsqd, secret)
    assert auth_server.requests[0]["query"]["secret"] == secret


def test_auth_twice_and_auth_after_sub_are_rejected(auth_nsqd, auth_server):
    auth_server.set("s", answer(ALL))
    client = authed(auth_nsqd, "s")
    assert_fatal(client, auth(client, "s"), "E_INVALID AUTH already set")

    client = authed(auth_nsqd, "s")
    assert send_cmd(client, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    assert_fatal(client, auth(client, "s"), "E_INVALID cannot AUTH in current state")

    client, _ = connect(auth_nsqd)
    client.command("AUTH extra", b"s")
    assert_fatal(client, client.read_frame(), "E_INVALID AUTH invalid number of parameters")


def test_auth_without_auth_server_is_disabled(nsqd):
    client, info = connect(nsqd)
    assert_fatal(client, auth(client, "anything"), "E_AUTH_DISABLED AUTH disabled")
    # and without auth nothing is checked
    client, _ = connect(nsqd)
    assert send_cmd(client, "PUB", "t") == (FRAME_RESPONSE, b"OK")


# -- what the grants allow -----------------------------------------------------------------

def test_publish_allowed_and_denied_by_topic_regex_and_permission(auth_nsqd, auth_server):
    auth_server.set("pub", answer(grant("^orders", [".*"], ["publish"])))
    for verb in ("PUB", "MPUB", "DPUB"):
        client = authed(auth_nsqd, "pub")
        assert send_cmd(client, verb, "orders_eu") == (FRAME_RESPONSE, b"OK")
        assert_fatal(client, send_cmd(client, verb, "eu_orders"),
                     f'E_UNAUTHORIZED AUTH failed for {verb} on "eu_orders" ""')
    # publish-only: subscribing to an allowed topic is denied
    client = authed(auth_nsqd, "pub")
    assert_fatal(client, send_cmd(client, "SUB", "orders", "ch"),
                 'E_UNAUTHORIZED AUTH failed for SUB on "orders" "ch"')
    assert auth_nsqd.topic_stats("orders_eu")["message_count"] == 4
    assert auth_nsqd.topic_stats("eu_orders") is None   # denied before the topic is made


def test_subscribe_allowed_and_denied_by_channel_regex(auth_nsqd, auth_server):
    auth_server.set("sub", answer(grant("^events$", ["^archive", "^audit$"], ["subscribe"])))
    for channel in ("archive", "archive_2", "audit"):
        client = authed(auth_nsqd, "sub")
        assert send_cmd(client, "SUB", "events", channel) == (FRAME_RESPONSE, b"OK")
    for topic, channel in (("events", "audit_2"), ("events", "metrics"), ("events2", "audit")):
        client = authed(auth_nsqd, "sub")
        assert_fatal(client, send_cmd(client, "SUB", topic, channel),
                     f'E_UNAUTHORIZED AUTH failed for SUB on "{topic}" "{channel}"')
    # subscribe-only: no publishing
    client = authed(auth_nsqd, "sub")
    assert_fatal(client, send_cmd(client, "PUB", "events"),
                 'E_UNAUTHORIZED AUTH failed for PUB on "events" ""')


def test_patterns_are_unanchored_and_publish_needs_a_channel_matching_empty(
        auth_nsqd, auth_server):
    # "ok" matches anywhere in the topic name, as Go's MatchString does.
    auth_server.set("loose", answer(grant("ok", [".*"], ["publish"])))
    client = authed(auth_nsqd, "loose")
    assert send_cmd(client, "PUB", "not_ok_at_all") == (FRAME_RESPONSE, b"OK")
    # A publish is checked against channel "": "^ch$" does not match it.
    auth_server.set("strict", answer(grant(".*", ["^ch$"], ["publish", "subscribe"])))
    client = authed(auth_nsqd, "strict")
    assert_fatal(client, send_cmd(client, "PUB", "t"),
                 'E_UNAUTHORIZED AUTH failed for PUB on "t" ""')
    client = authed(auth_nsqd, "strict")
    assert send_cmd(client, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")


def test_checks_follow_nsq_order(auth_nsqd, auth_server):
    """Name validation comes before the auth check; a PUB's body is read first."""
    client, _ = connect(auth_nsqd)
    client.command("SUB bad! ch")
    assert_fatal(client, client.read_frame(), 'E_BAD_TOPIC SUB topic name "bad!" is not valid')
    client, _ = connect(auth_nsqd)
    client.command("PUB t", b"")
    assert_fatal(client, client.read_frame(), "E_BAD_MESSAGE PUB invalid message body size 0")


# -- failures --------------------------------------------------------------------------------

UNUSABLE = {   # secret: (status, body, what the client gets)
    "403": (403, {"message": "FORBIDDEN"}, "E_AUTH_FAILED AUTH failed"),
    "500": (500, b"oops", "E_AUTH_FAILED AUTH failed"),
    "bad-json": (200, b"not json", "E_AUTH_FAILED AUTH failed"),
    "ttl0": (200, answer(ALL, ttl=0), "E_AUTH_FAILED AUTH failed"),
    "ttl-string": (200, dict(answer(ALL), ttl="60"), "E_AUTH_FAILED AUTH failed"),
    "bad-permission": (200, answer(grant(permissions=["publish", "admin"])),
                       "E_AUTH_FAILED AUTH failed"),
    "bad-regex": (200, answer(grant(topic="(")), "E_AUTH_FAILED AUTH failed"),
    "no-grants": (200, answer(), "E_UNAUTHORIZED AUTH no authorizations found"),
    # What Go cannot decode: nesting past the decoder's limit, a ttl beyond 64 bits.
    "deep": (200, b"[" * 5000 + b"]" * 5000, "E_AUTH_FAILED AUTH failed"),
    "ttl-1e23": (200, answer(ALL, ttl=10**23), "E_AUTH_FAILED AUTH failed"),
    "ttl-2^63": (200, answer(ALL, ttl=2**63), "E_AUTH_FAILED AUTH failed"),
    "ttl-float": (200, b'{"ttl": 1e3, "authorizations": []}', "E_AUTH_FAILED AUTH failed"),
    # Patterns Python's re cannot compile for other reasons than a syntax error.
    "regex-deep": (200, answer(grant(topic="(" * 5000 + ")" * 5000)),
                   "E_AUTH_FAILED AUTH failed"),
    "regex-huge-repeat": (200, answer(grant(topic="a{99999999999}")),
                          "E_AUTH_FAILED AUTH failed"),
}


def test_rejected_or_unusable_answers(auth_nsqd, auth_server):
    for secret, (status, body, error) in UNUSABLE.items():
        auth_server.set(secret, body, status)
        client, _ = connect(auth_nsqd)
        frame = auth(client, secret)
        assert frame == (FRAME_ERROR, error.encode()), (secret, frame)
        assert client.is_closed(), secret
        assert auth_server.count(secret) == 1, secret
    # Each failure is one log line; nsqd goes on serving.
    assert "Traceback" not in auth_nsqd.log_text(), auth_nsqd.log_text()[-3000:]
    auth_server.set("good", answer(ALL))
    assert send_cmd(authed(auth_nsqd, "good"), "PUB", "t") == (FRAME_RESPONSE, b"OK")


def test_an_answer_with_text_that_is_not_unicode_is_taken_as_go_takes_it(
        auth_nsqd, auth_server):
    """Lone surrogates (escaped) and bytes that are not UTF-8 in identity fields: Go
    decodes them as U+FFFD and AUTH succeeds; so here, and /stats shows U+FFFD."""
    grants = json.dumps([ALL])
    auth_server.set("escaped", answer(ALL, identity="h\udfff", identity_url="u\ud800A"))
    auth_server.set("raw", b'{"ttl": 60, "identity": "r\xff", "authorizations": %s}'
                    % grants.encode())
    client, _ = connect(auth_nsqd)
    kind, data = auth(client, "escaped")
    assert (kind, json.loads(data.decode("utf-8"))) == (FRAME_RESPONSE, {
        "identity": "h\ufffd", "identity_url": "u\ufffdA", "permission_count": 1})
    assert send_cmd(client, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    other, _ = connect(auth_nsqd)
    kind, data = auth(other, "raw")
    assert json.loads(data.decode("utf-8"))["identity"] == "r\ufffd"
    assert send_cmd(other, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    status, _, text = auth_nsqd.http("GET", "/stats")
    assert status == 200
    text.decode("utf-8")
    clients = auth_nsqd.channel_stats("t", "ch")["clients"]
    assert {c["auth_identity"] for c in clients} == {"h\ufffd", "r\ufffd"}
    assert "Traceback" not in auth_nsqd.log_text()


def test_unknown_secret_fails_and_details_only_go_to_the_log(auth_nsqd, auth_server):
    client, _ = connect(auth_nsqd)
    assert_fatal(client, auth(client, "wrong"), "E_AUTH_FAILED AUTH failed")
    auth_nsqd.wait_for_log(r"AUTH failed .*403")


def test_auth_server_down_fails_auth_and_nsqd_stays_up(nsqd_factory, auth_server):
    down = f"127.0.0.1:{free_port()}"
    nsqd = nsqd_factory(f"--auth-http-address={down}", "--http-client-connect-timeout=1s")
    client, _ = connect(nsqd)
    assert_fatal(client, auth(client, "s"), "E_AUTH_FAILED AUTH failed")
    assert nsqd.http("GET", "/ping")[2] == b"OK"
    client, _ = connect(nsqd)
    client.command("NOP")
    client.command("PUB t", b"x")
    assert_fatal(client, client.read_frame(), "E_AUTH_FIRST AUTH required before PUB")


def test_each_auth_address_is_tried_in_turn_and_full_urls_work(nsqd_factory, auth_server):
    auth_server.set("s", answer(ALL))
    down = f"127.0.0.1:{free_port()}"
    url = f"http://127.0.0.1:{auth_server.port}/v1/nsq-auth"
    nsqd = nsqd_factory(f"--auth-http-address={down}", f"--auth-http-address={url}")
    for _ in range(4):     # whichever address is asked first, AUTH succeeds
        client = authed(nsqd, "s")
        assert send_cmd(client, "PUB", "t") == (FRAME_RESPONSE, b"OK")
    assert {r["path"] for r in auth_server.requests} == {"/v1/nsq-auth"}


def test_expired_ttl_asks_again_with_the_same_secret(auth_nsqd, auth_server):
    auth_server.set("s", answer(ALL, ttl=1))
    client = authed(auth_nsqd, "s")
    assert send_cmd(client, "PUB", "t") == (FRAME_RESPONSE, b"OK")
    assert auth_server.count() == 1
    # The server now denies topic "t": PUBs succeed until the TTL runs out, then the next
    # PUB asks again and fails.
    auth_server.set("s", answer(grant("^other$"), ttl=1))

    def pub_denied():
        frame = send_cmd(client, "PUB", "t")
        return frame if frame[0] == FRAME_ERROR else None

    frame = wait_until(pub_denied, timeout=5, message="re-auth after the TTL")
    assert_fatal(client, frame, 'E_UNAUTHORIZED AUTH failed for PUB on "t" ""')
    assert auth_server.count() == 2
    assert [r["query"]["secret"] for r in auth_server.requests] == ["s", "s"]


def test_expired_ttl_with_auth_server_failing_gives_e_auth_failed(auth_nsqd, auth_server):
    auth_server.set("s", answer(ALL, ttl=1))
    consumer = authed(auth_nsqd, "s")
    assert send_cmd(consumer, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    publisher = authed(auth_nsqd, "s")
    assert send_cmd(publisher, "PUB", "t") == (FRAME_RESPONSE, b"OK")
    auth_server.set("s", {"message": "gone"}, 500)

    def pub_failed():
        frame = send_cmd(publisher, "PUB", "t")
        return frame if frame[0] == FRAME_ERROR else None

    frame = wait_until(pub_failed, timeout=5, message="re-auth failure after the TTL")
    assert_fatal(publisher, frame, "E_AUTH_FAILED AUTH failed")
    # Only SUB/PUB/MPUB/DPUB are checked: the subscribed consumer keeps receiving.
    consumer.command("RDY 5")
    kind, data = consumer.read_frame()
    assert kind == FRAME_MESSAGE
    assert data[26:] == b"body"


# -- stats -----------------------------------------------------------------------------------

def test_stats_show_authed_identity(auth_nsqd, auth_server, nsqd):
    auth_server.set("s", answer(ALL, identity="bob", identity_url="https://id.test/bob"))
    auth_server.set("anon", answer(ALL, identity="", identity_url=""))
    consumer = authed(auth_nsqd, "s")
    assert send_cmd(consumer, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    producer = authed(auth_nsqd, "anon")
    assert send_cmd(producer, "PUB", "t") == (FRAME_RESPONSE, b"OK")

    stats = auth_nsqd.stats()
    (client,) = stats["topics"][0]["channels"][0]["clients"]
    assert client["authed"] is True
    assert client["auth_identity"] == "bob"
    assert client["auth_identity_url"] == "https://id.test/bob"
    keys = list(client)
    assert keys.index("user_agent") < keys.index("authed") < keys.index("tls")
    (prod,) = stats["producers"]
    assert prod["authed"] is True
    assert "auth_identity" not in prod and "auth_identity_url" not in prod   # omitempty

    # Without auth the keys are left out.
    plain, _ = connect(nsqd)
    assert send_cmd(plain, "SUB", "t", "ch") == (FRAME_RESPONSE, b"OK")
    (client,) = nsqd.stats()["topics"][0]["channels"][0]["clients"]
    assert not {"authed", "auth_identity", "auth_identity_url"} & set(client)


# -- greensq.client ----------------------------------------------------------------------------

def test_greensq_client_producer_and_consumer_with_auth_secret(auth_nsqd, auth_server):
    from greensq.client import Consumer, Producer
    from greensq.client.errors import AuthFailedError, AuthFirstError, UnauthorizedError
    from support import gevent_wait_until

    auth_server.set("writer", answer(grant("^jobs$", [".*"], ["publish"]), identity="w"))
    auth_server.set("reader", answer(grant("^jobs$", ["^workers$"], ["subscribe"])))
    address = f"127.0.0.1:{auth_nsqd.tcp_port}"

    producer = Producer([address], auth_secret="writer", retries=0)
    try:
        assert producer.publish("jobs", b"one") == b"OK"
        producer.multi_publish("jobs", [b"two", b"three"])
        with pytest.raises(UnauthorizedError) as info:
            producer.publish("other", b"x")
        assert str(info.value) == 'E_UNAUTHORIZED AUTH failed for PUB on "other" ""'
    finally:
        producer.close()

    received = []
    consumer = Consumer("jobs", "workers", lambda m: received.append(m.body),
                        nsqd_tcp_addresses=[address], auth_secret="reader")
    consumer.start()
    try:
        gevent_wait_until(lambda: len(received) >= 3, message="authed consumer got messages")
        assert sorted(received) == [b"one", b"three", b"two"]
        clients = auth_nsqd.channel_stats("jobs", "workers")["clients"]
        assert [c["authed"] for c in clients] == [True]
    finally:
        consumer.close()

    from greensq.client.connection import Connection
    conn = Connection(address, auth_secret="wrong")
    with pytest.raises(AuthFailedError):
        conn.connect()
    conn = Connection(address)
    with pytest.raises(AuthFirstError):
        conn.connect()
    conn = Connection(address, auth_secret="writer")
    settings = conn.connect()
    try:
        assert settings["auth_required"] is True
        assert conn.auth_info == {"identity": "w", "identity_url": "https://example.test/u/alice",
                                  "permission_count": 1}
    finally:
        conn.close()


# -- pynsq / gnsq ------------------------------------------------------------------------------

@pytest.mark.parametrize("client", ["pynsq", "gnsq"])
def test_third_party_clients_with_auth_secret(auth_nsqd, auth_server, client):
    auth_server.set("tp", answer(grant("^interop_auth$"), identity=client,
                                 identity_url=f"https://id.test/{client}"))
    config = {"client": client, "secret": "tp", "topic": "interop_auth", "channel": "ch",
              "tcp": f"127.0.0.1:{auth_nsqd.tcp_port}",
              "http": f"127.0.0.1:{auth_nsqd.http_port}", "deadline": 10}
    out = run_client_script(SCRIPT, config)
    assert sorted(out["received"]) == [f"m-{i}" for i in range(5)]
    assert out["publish_results"] == ["OK"] * 5
    assert out["auth"] and all(a == {"identity": client,
                                     "identity_url": f"https://id.test/{client}",
                                     "permission_count": 1} for a in out["auth"])
    clients = out["stats"]["topics"][0]["channels"][0]["clients"]
    assert clients and all(c["authed"] and c["auth_identity"] == client for c in clients)
    assert all(p["authed"] for p in out["stats"]["producers"])
    assert auth_server.count("tp") >= 2          # one per connection (reader + writer)
