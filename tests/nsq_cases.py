"""NSQ's answers to clients, as tables and checks that both test tiers run: the process tier
(test_protocol_v2.py, test_http_api.py, test_nsqlookupd.py: daemons over real sockets)
and the fast tier (the test_inproc_*.py files: the cores in the test process). Each
table goes with the daemon flags it assumes; the assertions here read a reply the same
way from either tier's clients.
"""

import json
import struct

from support import FRAME_ERROR, FRAME_RESPONSE

# -- the V2 protocol ---------------------------------------------------------------------

# The daemon's small limits, so the "too big" paths are cheap to reach.
V2_LIMIT_FLAGS = [
    "--max-msg-size=1000", "--max-body-size=5000", "--max-rdy-count=200",
    "--max-req-timeout=5s", "--max-msg-timeout=60s", "--max-heartbeat-interval=10s",
    "--max-output-buffer-size=10000", "--max-output-buffer-timeout=5s",
    "--min-output-buffer-timeout=10ms",
]

UNKNOWN_ID = b"0123456789abcdef"

NEGOTIATION_KEYS = [
    "max_rdy_count", "version", "max_msg_timeout", "msg_timeout", "tls_v1", "deflate",
    "deflate_level", "max_deflate_level", "snappy", "sample_rate", "auth_required",
    "output_buffer_size", "output_buffer_timeout",
]


def size(n):
    return struct.pack(">i", n)


def sized(payload):
    return size(len(payload)) + payload


def mpub_body(bodies):
    return size(len(bodies)) + b"".join(sized(b) for b in bodies)


def negotiate(client, fields):
    """IDENTIFY with feature negotiation and ``fields`` (an IDENTIFY_NEGOTIATION row: one
    spells the key in capitals, as Go matches JSON keys case-insensitively); the answer."""
    body = dict({"feature_negotiation": True}, **fields)
    if "FEATURE_NEGOTIATION" in fields:
        del body["feature_negotiation"]
    client.command("IDENTIFY", json.dumps(body).encode())
    kind, data = client.read_frame()
    assert kind == FRAME_RESPONSE, data
    reply = json.loads(data)
    assert list(reply) == NEGOTIATION_KEYS
    assert reply["version"] == "1.3.0"
    return reply


def assert_fatal(client, text):
    """The error frame ``text``, then the connection closed (a fatal error)."""
    expected = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    assert client.read_frame() == (FRAME_ERROR, expected)
    assert client.is_closed(), "a fatal error must close the connection"


IDENTIFY_NEGOTIATION = [
    ({}, {"max_rdy_count": 200, "max_msg_timeout": 60000, "output_buffer_size": 16384}),
    ({"msg_timeout": 1000}, {"msg_timeout": 1000}),
    ({"msg_timeout": 60000}, {"msg_timeout": 60000}),
    ({"sample_rate": 99}, {"sample_rate": 99}),
    ({"sample_rate": 0}, {"sample_rate": 0}),
    ({"output_buffer_size": 64}, {"output_buffer_size": 64}),
    ({"output_buffer_size": 10000}, {"output_buffer_size": 10000}),
    ({"output_buffer_size": -1}, {"output_buffer_size": 1, "output_buffer_timeout": 0}),
    ({"output_buffer_timeout": 10}, {"output_buffer_timeout": 10}),
    ({"output_buffer_timeout": 5000}, {"output_buffer_timeout": 5000}),
    ({"output_buffer_timeout": -1}, {"output_buffer_timeout": 0}),
    ({"heartbeat_interval": 10000}, {}),
    ({"heartbeat_interval": 1000, "client_id": "c", "hostname": "h", "user_agent": "ua/1"}, {}),
    ({"deflate": False, "snappy": False, "tls_v1": False}, {"deflate": False}),
    ({"short_id": "legacy", "long_id": "legacy", "unknown_key": [1]}, {}),
    ({"msg_timeout": None, "sample_rate": None}, {"msg_timeout": 60000, "sample_rate": 0}),
    ({"FEATURE_NEGOTIATION": True, "Msg_Timeout": 2000}, {"msg_timeout": 2000}),
]

IDENTIFY_FIELD_ERRORS = [
    ({"heartbeat_interval": 500}, "heartbeat interval (500) is invalid"),
    ({"heartbeat_interval": 999}, "heartbeat interval (999) is invalid"),
    ({"heartbeat_interval": -2}, "heartbeat interval (-2) is invalid"),
    ({"heartbeat_interval": 10001}, "heartbeat interval (10001) is invalid"),
    ({"output_buffer_timeout": 9}, "output buffer timeout (9) is invalid"),
    ({"output_buffer_timeout": 5001}, "output buffer timeout (5001) is invalid"),
    ({"output_buffer_timeout": -2}, "output buffer timeout (-2) is invalid"),
    ({"output_buffer_size": 63}, "output buffer size (63) is invalid"),
    ({"output_buffer_size": 10001}, "output buffer size (10001) is invalid"),
    ({"output_buffer_size": -2}, "output buffer size (-2) is invalid"),
    ({"sample_rate": 100}, "sample rate (100) is invalid"),
    ({"sample_rate": -1}, "sample rate (-1) is invalid"),
    ({"msg_timeout": 999}, "msg timeout (999) is invalid"),
    ({"msg_timeout": 60001}, "msg timeout (60001) is invalid"),
    ({"msg_timeout": -1}, "msg timeout (-1) is invalid"),
    # NSQ's check order: heartbeat, buffer timeout, buffer size, sample rate, msg timeout.
    ({"msg_timeout": 1, "sample_rate": 100, "output_buffer_size": 1,
      "output_buffer_timeout": 1, "heartbeat_interval": 1}, "heartbeat interval (1) is invalid"),
    ({"msg_timeout": 1, "sample_rate": 100, "output_buffer_size": 1,
      "output_buffer_timeout": 1}, "output buffer timeout (1) is invalid"),
    ({"msg_timeout": 1, "sample_rate": 100, "output_buffer_size": 1},
     "output buffer size (1) is invalid"),
    ({"msg_timeout": 1, "sample_rate": 100}, "sample rate (100) is invalid"),
    # JSON values of the wrong type fail to decode, as Go's json.Unmarshal does.
    ({"heartbeat_interval": "1000"}, "failed to decode JSON body"),
    ({"msg_timeout": 1000.5}, "failed to decode JSON body"),
    ({"sample_rate": True}, "failed to decode JSON body"),
    ({"client_id": 5}, "failed to decode JSON body"),
    ({"feature_negotiation": "yes"}, "failed to decode JSON body"),
    ({"user_agent": ["x"]}, "failed to decode JSON body"),
]

IDENTIFY_BODY_ERRORS = [
    (sized(b"{not json"), "IDENTIFY failed to decode JSON body"),
    (sized(b"[1, 2]"), "IDENTIFY failed to decode JSON body"),
    (sized(b'"string"'), "IDENTIFY failed to decode JSON body"),
    (size(0), "IDENTIFY invalid body size 0"),
    (size(-1), "IDENTIFY invalid body size -1"),
    (size(-2**31), "IDENTIFY invalid body size -2147483648"),
    (size(5001), "IDENTIFY body too big 5001 > 5000"),
    (size(2**31 - 1), "IDENTIFY body too big 2147483647 > 5000"),
]

SUB_ERRORS = [
    (b"SUB", "E_INVALID SUB insufficient number of parameters"),
    (b"SUB topic", "E_INVALID SUB insufficient number of parameters"),
    (b"SUB bad!topic ch", 'E_BAD_TOPIC SUB topic name "bad!topic" is not valid'),
    (b"SUB " + b"a" * 65 + b" ch", f'E_BAD_TOPIC SUB topic name "{"a" * 65}" is not valid'),
    (b"SUB " + b"a" * 55 + b"#ephemeral ch",
     f'E_BAD_TOPIC SUB topic name "{"a" * 55}#ephemeral" is not valid'),
    (b"SUB t#ephemeral#ephemeral ch",
     'E_BAD_TOPIC SUB topic name "t#ephemeral#ephemeral" is not valid'),
    (b"SUB a\tb ch", 'E_BAD_TOPIC SUB topic name "a\\tb" is not valid'),
    (b'SUB a"b ch', 'E_BAD_TOPIC SUB topic name "a\\"b" is not valid'),
    (b"SUB a\\b ch", 'E_BAD_TOPIC SUB topic name "a\\\\b" is not valid'),
    (b"SUB a\x01b ch", 'E_BAD_TOPIC SUB topic name "a\\x01b" is not valid'),
    (b"SUB a\x07b ch", 'E_BAD_TOPIC SUB topic name "a\\ab" is not valid'),
    (b"SUB a\x7fb ch", 'E_BAD_TOPIC SUB topic name "a\\x7fb" is not valid'),
    (b"SUB a\xffb ch", 'E_BAD_TOPIC SUB topic name "a\\xffb" is not valid'),
    ("SUB caf\u00e9 ch".encode(), 'E_BAD_TOPIC SUB topic name "caf\u00e9" is not valid'),
    (b"SUB topic bad:ch", 'E_BAD_CHANNEL SUB channel name "bad:ch" is not valid'),
    (b"SUB topic  ch", 'E_BAD_CHANNEL SUB channel name "" is not valid'),
    (b"SUB topic " + b"c" * 65, f'E_BAD_CHANNEL SUB channel name "{"c" * 65}" is not valid'),
    (b"SUB bad! bad!", 'E_BAD_TOPIC SUB topic name "bad!" is not valid'),
]

SUB_VALID_NAMES = [
    ("a" * 64, "c" * 64), ("a" * 54 + "#ephemeral", "c" * 54 + "#ephemeral"),
    ("Dots.and-dash_es", "x"), ("1", "2"),
]

PUBLISH_ERRORS = [
    (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
    (b"PUB bad!\n" + sized(b"x"), 'E_BAD_TOPIC PUB topic name "bad!" is not valid'),
    (b"PUB bad!\n" + size(0), 'E_BAD_TOPIC PUB topic name "bad!" is not valid'),
    (b"PUB t\n" + size(0), "E_BAD_MESSAGE PUB invalid message body size 0"),
    (b"PUB t\n" + size(-1), "E_BAD_MESSAGE PUB invalid message body size -1"),
    (b"PUB t\n" + size(1001), "E_BAD_MESSAGE PUB message too big 1001 > 1000"),
    (b"MPUB\n", "E_INVALID MPUB insufficient number of parameters"),
    (b"MPUB bad!\n" + mpub_body([b"x"]),
     'E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "bad!" is not valid'),
    (b"MPUB t\n" + size(0), "E_BAD_BODY MPUB invalid body size 0"),
    (b"MPUB t\n" + size(-5), "E_BAD_BODY MPUB invalid body size -5"),
    (b"MPUB t\n" + size(5001), "E_BAD_BODY MPUB body too big 5001 > 5000"),
    (b"MPUB t\n" + sized(size(0)), "E_BAD_BODY MPUB invalid message count 0"),
    (b"MPUB t\n" + sized(size(-1)), "E_BAD_BODY MPUB invalid message count -1"),
    (b"MPUB t\n" + sized(size(1000) + sized(b"x")), "E_BAD_BODY MPUB invalid message count 1000"),
    (b"MPUB t\n" + sized(size(2) + sized(b"x") + size(0)),
     "E_BAD_MESSAGE MPUB invalid message(1) body size 0"),
    (b"MPUB t\n" + sized(size(1) + size(-3)),
     "E_BAD_MESSAGE MPUB invalid message(0) body size -3"),
    (b"MPUB t\n" + sized(size(2) + sized(b"x") + size(1001) + b"y" * 1001),
     "E_BAD_MESSAGE MPUB message too big 1001 > 1000"),
    (b"DPUB\n", "E_INVALID DPUB insufficient number of parameters"),
    (b"DPUB t\n", "E_INVALID DPUB insufficient number of parameters"),
    (b"DPUB bad! 10\n" + sized(b"x"), 'E_BAD_TOPIC DPUB topic name "bad!" is not valid'),
    (b"DPUB t x\n" + sized(b"x"), "E_INVALID DPUB could not parse timeout x"),
    (b"DPUB t -1\n" + sized(b"x"), "E_INVALID DPUB could not parse timeout -1"),
    (b"DPUB t 1.5\n" + sized(b"x"), "E_INVALID DPUB could not parse timeout 1.5"),
    (b"DPUB t 5001\n" + sized(b"x"), "E_INVALID DPUB timeout 5001 out of range 0-5000"),
    (b"DPUB t 10\n" + size(0), "E_BAD_MESSAGE DPUB invalid message body size 0"),
    (b"DPUB t 10\n" + size(1001), "E_BAD_MESSAGE DPUB message too big 1001 > 1000"),
]

TRUNCATED_BODIES = [
    # The client stops sending (half-close) in the middle of a body.
    (b"PUB t\n" + b"\x00\x00", "E_BAD_MESSAGE PUB failed to read message body size"),
    (b"PUB t\n" + size(10) + b"abc", "E_BAD_MESSAGE PUB failed to read message body"),
    (b"DPUB t 10\n" + size(10) + b"abc", "E_BAD_MESSAGE DPUB failed to read message body"),
    (b"IDENTIFY\n" + b"\x00", "E_BAD_BODY IDENTIFY failed to read body size"),
    (b"IDENTIFY\n" + size(10) + b"{}", "E_BAD_BODY IDENTIFY failed to read body"),
    # Inside a complete MPUB body, the parts do not add up.
    (b"MPUB t\n" + sized(b"\x00\x00"), "E_BAD_BODY MPUB failed to read message count"),
    (b"MPUB t\n" + sized(size(2) + sized(b"x")),
     "E_BAD_MESSAGE MPUB failed to read message(1) body size"),
    (b"MPUB t\n" + sized(size(1) + size(10) + b"abc"),
     "E_BAD_MESSAGE MPUB failed to read message body"),
]

HUGE_BODIES = [
    (b"PUB t", "E_BAD_MESSAGE PUB message too big 2147483647 > 1000"),
    (b"DPUB t 1", "E_BAD_MESSAGE DPUB message too big 2147483647 > 1000"),
    (b"MPUB t", "E_BAD_BODY MPUB body too big 2147483647 > 5000"),
    (b"IDENTIFY", "E_BAD_BODY IDENTIFY body too big 2147483647 > 5000"),
]

SUBSCRIBED_COMMAND_ERRORS = [
    (b"RDY 201", "E_INVALID RDY count 201 out of range 0-200"),
    (b"RDY 99999999999", "E_INVALID RDY count 99999999999 out of range 0-200"),
    (b"RDY x", "E_INVALID RDY could not parse count x"),
    (b"RDY -1", "E_INVALID RDY could not parse count -1"),
    (b"RDY +1", "E_INVALID RDY could not parse count +1"),
    (b"RDY 1.0", "E_INVALID RDY could not parse count 1.0"),
    (b"FIN", "E_INVALID FIN insufficient number of params"),
    (b"FIN abc", "E_INVALID Invalid Message ID"),
    (b"FIN " + UNKNOWN_ID + b"0", "E_INVALID Invalid Message ID"),
    (b"REQ", "E_INVALID REQ insufficient number of params"),
    (b"REQ " + UNKNOWN_ID, "E_INVALID REQ insufficient number of params"),
    (b"REQ abc 0", "E_INVALID Invalid Message ID"),
    (b"REQ " + UNKNOWN_ID + b" x", "E_INVALID REQ could not parse timeout x"),
    (b"REQ " + UNKNOWN_ID + b" -5", "E_INVALID REQ could not parse timeout -5"),
    (b"TOUCH", "E_INVALID TOUCH insufficient number of params"),
    (b"TOUCH abc", "E_INVALID Invalid Message ID"),
    (b"CLS extra", None),  # 1.x ignores CLS parameters: CLOSE_WAIT
]

COMMANDS_BEFORE_SUB = [
    (b"RDY 1", "E_INVALID cannot RDY in current state"),
    (b"FIN " + UNKNOWN_ID, "E_INVALID cannot FIN in current state"),
    (b"REQ " + UNKNOWN_ID + b" 0", "E_INVALID cannot REQ in current state"),
    (b"TOUCH " + UNKNOWN_ID, "E_INVALID cannot TOUCH in current state"),
    (b"CLS", "E_INVALID cannot CLS in current state"),
    (b"FIN", "E_INVALID cannot FIN in current state"),  # the state is checked first
]

UNKNOWN_ID_ERRORS = [
    ("FIN", b"FIN %s", "E_FIN_FAILED FIN %s failed ID not in flight"),
    ("REQ", b"REQ %s 0", "E_REQ_FAILED REQ %s failed ID not in flight"),
    ("REQ", b"REQ %s 100", "E_REQ_FAILED REQ %s failed ID not in flight"),
    ("TOUCH", b"TOUCH %s", "E_TOUCH_FAILED TOUCH %s failed ID not in flight"),
]

NOT_OWNER_ERRORS = [
    (b"FIN %s", "E_FIN_FAILED FIN %s failed client does not own message"),
    (b"REQ %s 0", "E_REQ_FAILED REQ %s failed client does not own message"),
    (b"TOUCH %s", "E_TOUCH_FAILED TOUCH %s failed client does not own message"),
]

BAD_MAGICS = [b"GET ", b"  V1", b"\x00\x00\x00\x00", b"  v2"]

UNKNOWN_COMMANDS = [
    (b"GARBAGE", "E_INVALID invalid command GARBAGE"),
    (b"GARBAGE with params", "E_INVALID invalid command GARBAGE"),
    (b"pub t", "E_INVALID invalid command pub"),
    (b"", "E_INVALID invalid command "),
    (b" PUB t", "E_INVALID invalid command "),
    (b"\x00\x01\x02", "E_INVALID invalid command \x00\x01\x02"),
    (b"\xc3\xa9X", b"E_INVALID invalid command \xc3\xa9X"),
    (b"\xff\xfe", b"E_INVALID invalid command \xff\xfe"),
    (b"PUB\x00t", "E_INVALID invalid command PUB\x00t"),
]


# -- the HTTP API ------------------------------------------------------------------------

MAX_MSG_SIZE = 64
MAX_BODY_SIZE = 512
MAX_REQ_TIMEOUT_MS = 10_000
HTTP_LIMIT_FLAGS = [f"--max-msg-size={MAX_MSG_SIZE}", f"--max-body-size={MAX_BODY_SIZE}",
                    f"--max-req-timeout={MAX_REQ_TIMEOUT_MS // 1000}s"]
NS = 1_000_000_000
NSQ_CONTENT_TYPE = "nsq; version=1.0"
JSON_TYPE = "application/json; charset=utf-8"


# /stats?format=json: the keys of each level, in Go's order where the test checks the order.
CLIENT_KEYS = [
    "client_id", "hostname", "version", "remote_address", "state", "ready_count",
    "in_flight_count", "message_count", "finish_count", "requeue_count", "connect_ts",
    "sample_rate", "deflate", "snappy", "user_agent", "tls", "tls_cipher_suite",
    "tls_version", "tls_negotiated_protocol", "tls_negotiated_protocol_is_mutual"]
PRODUCER_KEYS = CLIENT_KEYS[:15] + ["pub_counts"] + CLIENT_KEYS[15:]
TOPIC_KEYS = {"topic_name", "channels", "depth", "backend_depth", "message_count",
              "message_bytes", "paused", "e2e_processing_latency"}
CHANNEL_KEYS = {"channel_name", "depth", "backend_depth", "in_flight_count", "deferred_count",
                "message_count", "requeue_count", "timeout_count", "client_count", "clients",
                "paused", "e2e_processing_latency"}
MEMORY_KEYS = ["heap_objects", "heap_idle_bytes", "heap_in_use_bytes", "heap_released_bytes",
               "gc_pause_usec_100", "gc_pause_usec_99", "gc_pause_usec_95", "next_gc_bytes",
               "gc_total_runs"]


def binary_mpub(bodies, count=None):
    count = len(bodies) if count is None else count
    return struct.pack(">i", count) + b"".join(struct.pack(">i", len(b)) + b for b in bodies)


def call(daemon, method, path, body=None, headers=None):
    """``(status, lower-cased headers, body)`` of one request."""
    status, hdrs, data = daemon.http(method, path, body, headers)
    return status, {k.lower(): v for k, v in hdrs.items()}, data


def assert_error(response, status, message):
    code, headers, body = response
    assert (code, body) == (status, json.dumps({"message": message},
                                               separators=(",", ":")).encode()), response
    assert headers.get("content-type") == JSON_TYPE
    assert headers.get("x-nsq-content-type") == NSQ_CONTENT_TYPE


def assert_ok_empty(response):
    assert response[0] == 200 and response[2] == b"", response
    assert response[1].get("x-nsq-content-type") == NSQ_CONTENT_TYPE


ROUTING_ERRORS = [
    ("GET", "/nope", 404, "NOT_FOUND"),
    ("POST", "/topic/nope?topic=x", 404, "NOT_FOUND"),
    ("POST", "/channel/nope?topic=x&channel=y", 404, "NOT_FOUND"),
    ("POST", "/create_topic?topic=x", 404, "NOT_FOUND"),
    ("GET", "/pub?topic=x", 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/mpub?topic=x", 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/info", 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", "/stats", 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/topic/create?topic=x", 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/channel/delete?topic=x&channel=y", 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/config/log_level", 405, "METHOD_NOT_ALLOWED"),
]

PUB_ERRORS = [
    ("", b"x", 400, "MISSING_ARG_TOPIC"),
    ("?channel=c", b"x", 400, "MISSING_ARG_TOPIC"),
    ("?topic=", b"x", 400, "INVALID_TOPIC"),
    ("?topic=bad!name", b"x", 400, "INVALID_TOPIC"),
    ("?topic=bad%20name", b"x", 400, "INVALID_TOPIC"),
    ("?topic=bad%0A", b"x", 400, "INVALID_TOPIC"),
    ("?topic=" + "a" * 65, b"x", 400, "INVALID_TOPIC"),
    ("?topic=ok", b"", 400, "MSG_EMPTY"),
    ("", b"", 400, "MSG_EMPTY"),                                  # body checked first
    ("?topic=ok", b"x" * (MAX_MSG_SIZE + 1), 413, "MSG_TOO_BIG"),
    ("?topic=bad!", b"x" * (MAX_MSG_SIZE + 1), 413, "MSG_TOO_BIG"),
    ("?topic=ok&defer=abc", b"x", 400, "INVALID_DEFER"),
    ("?topic=ok&defer=", b"x", 400, "INVALID_DEFER"),
    ("?topic=ok&defer=1.5", b"x", 400, "INVALID_DEFER"),
    ("?topic=ok&defer=1_000", b"x", 400, "INVALID_DEFER"),
    ("?topic=ok&defer=-1", b"x", 400, "INVALID_DEFER"),
    (f"?topic=ok&defer={MAX_REQ_TIMEOUT_MS + 1}", b"x", 400, "INVALID_DEFER"),
]

MPUB_BODIES = [
    ("", b"one\ntwo\n\n\nthree\n", [b"one", b"two", b"three"]),
    ("&binary=false", b"\none\r\ntwo", [b"one\r", b"two"]),
    ("&binary=0", b"a\nb", [b"a", b"b"]),
    ("&binary=true", binary_mpub([b"x\ny", b"\x00", b"z" * MAX_MSG_SIZE]),
     [b"x\ny", b"\x00", b"z" * MAX_MSG_SIZE]),
    ("&binary=1", binary_mpub([b"solo"]), [b"solo"]),
]

MPUB_ERRORS = [
    ("?topic=ok", b"x" * (MAX_BODY_SIZE + 1), 413, "BODY_TOO_BIG"),
    ("", b"x" * (MAX_BODY_SIZE + 1), 413, "BODY_TOO_BIG"),      # size checked first
    ("", b"a\nb", 400, "MISSING_ARG_TOPIC"),
    ("?topic=bad!", b"a\nb", 400, "INVALID_TOPIC"),
    ("?topic=ok", b"a\n" + b"x" * (MAX_MSG_SIZE + 1), 413, "MSG_TOO_BIG"),
    ("?topic=ok&binary=true", b"", 413, "BAD_BODY"),
    ("?topic=ok&binary=true", b"\x00\x00", 413, "BAD_BODY"),
    ("?topic=ok&binary=true", struct.pack(">i", 0), 413, "BAD_BODY"),
    ("?topic=ok&binary=true", struct.pack(">i", -1), 413, "BAD_BODY"),
    ("?topic=ok&binary=true", binary_mpub([b"a"], count=(MAX_BODY_SIZE - 4) // 5 + 1),
     413, "BAD_BODY"),
    ("?topic=ok&binary=true", struct.pack(">i", 1), 413, "BAD_MESSAGE"),
    ("?topic=ok&binary=true", struct.pack(">ii", 1, 0), 413, "BAD_MESSAGE"),
    ("?topic=ok&binary=true", binary_mpub([b"x" * (MAX_MSG_SIZE + 1)]), 413, "BAD_MESSAGE"),
    ("?topic=ok&binary=true", struct.pack(">ii", 1, 5) + b"ab", 413, "BAD_MESSAGE"),
    ("?topic=ok&binary=true", binary_mpub([b"fine", b"short"])[:-2], 413, "BAD_MESSAGE"),
]

ADMIN_ROUTE_ERRORS = [
    ("/topic/create", 400, "MISSING_ARG_TOPIC"),
    ("/topic/create?topic=", 400, "INVALID_TOPIC"),
    ("/topic/create?topic=bad!", 400, "INVALID_TOPIC"),
    ("/topic/delete", 400, "MISSING_ARG_TOPIC"),
    ("/topic/delete?topic=nope_missing", 404, "TOPIC_NOT_FOUND"),
    ("/topic/delete?topic=bad!", 404, "TOPIC_NOT_FOUND"),          # no name validation
    ("/topic/empty", 400, "MISSING_ARG_TOPIC"),
    ("/topic/empty?topic=bad!", 400, "INVALID_TOPIC"),
    ("/topic/empty?topic=nope_missing", 404, "TOPIC_NOT_FOUND"),
    ("/topic/pause", 400, "MISSING_ARG_TOPIC"),
    ("/topic/pause?topic=nope_missing", 404, "TOPIC_NOT_FOUND"),
    ("/topic/pause?topic=bad!", 404, "TOPIC_NOT_FOUND"),           # no name validation
    ("/topic/unpause", 400, "MISSING_ARG_TOPIC"),
    ("/topic/unpause?topic=nope_missing", 404, "TOPIC_NOT_FOUND"),
] + [
    (f"/channel/{action}{query}", status, message)
    for action in ("create", "delete", "empty", "pause", "unpause")
    for query, status, message in [
        ("?channel=c", 400, "MISSING_ARG_TOPIC"),
        ("?topic=bad!&channel=c", 400, "INVALID_ARG_TOPIC"),
        ("?topic=", 400, "INVALID_ARG_TOPIC"),
        ("?topic=exists", 400, "MISSING_ARG_CHANNEL"),
        ("?topic=exists&channel=bad!", 400, "INVALID_ARG_CHANNEL"),
        ("?topic=exists&channel=", 400, "INVALID_ARG_CHANNEL"),
        ("?topic=nope_missing&channel=c", 404, "TOPIC_NOT_FOUND"),
    ]
] + [
    (f"/channel/{action}?topic=exists&channel=nope_missing", 404, "CHANNEL_NOT_FOUND")
    for action in ("delete", "empty", "pause", "unpause")
]

CONFIG_VALUES = [
    ("max_msg_size", MAX_MSG_SIZE),
    ("max_body_size", MAX_BODY_SIZE),
    ("msg_timeout", 60 * NS),
    ("max_req_timeout", MAX_REQ_TIMEOUT_MS * 1_000_000),
    ("nsqlookupd_tcp_addresses", []),
    ("log_level", 2),                 # Go's lg.LogLevel is an int: INFO = 2
    ("mem_queue_size", 10000),
]

CONFIG_ERRORS = [
    ("GET", "no_such_option", None, 400, "INVALID_OPTION"),
    ("GET", "lookupd_tcp_address", None, 400, "INVALID_OPTION"),   # cfg name, not flag name
    ("PUT", "max_msg_size", b"100", 400, "INVALID_OPTION"),         # not settable
    ("PUT", "no_such_option", b"x", 400, "INVALID_OPTION"),
    ("PUT", "log_level", b"loud", 400, "INVALID_VALUE"),
    ("PUT", "nsqlookupd_tcp_addresses", b"not json", 400, "INVALID_VALUE"),
    ("PUT", "nsqlookupd_tcp_addresses", b'"127.0.0.1:1"', 400, "INVALID_VALUE"),
    ("PUT", "nsqlookupd_tcp_addresses", b"[1, 2]", 400, "INVALID_VALUE"),
    ("PUT", "log_level", b"", 413, "INVALID_VALUE"),
    ("PUT", "no_such_option", b"", 413, "INVALID_VALUE"),          # body checked first
    ("PUT", "log_level", b"d" * (MAX_MSG_SIZE + 1), 413, "INVALID_VALUE"),
]


# -- nsqlookupd --------------------------------------------------------------------------

def get_json(daemon, path):
    """``(status, parsed JSON body)`` of a GET."""
    status, _, body = daemon.http("GET", path)
    return status, json.loads(body) if body else None


def administer_topics_and_channels(lookupd):
    """nsqlookupd's topic and channel routes, on an nsqlookupd of the test's own."""
    assert lookupd.http("POST", "/topic/create?topic=t")[:3:2] == (200, b"")
    assert get_json(lookupd, "/lookup?topic=t") == (200, {"channels": [], "producers": []})
    assert lookupd.http("POST", "/channel/create?topic=t2&channel=c")[0] == 200
    assert sorted(get_json(lookupd, "/topics")[1]["topics"]) == ["t", "t2"]
    assert get_json(lookupd, "/channels?topic=t2") == (200, {"channels": ["c"]})
    assert lookupd.http("POST", "/channel/delete?topic=t2&channel=c")[0] == 200
    assert get_json(lookupd, "/channels?topic=t2") == (200, {"channels": []})
    status, _, body = lookupd.http("POST", "/channel/delete?topic=t2&channel=c")
    assert (status, json.loads(body)) == (404, {"message": "CHANNEL_NOT_FOUND"})
    assert lookupd.http("POST", "/channel/create?topic=t&channel=x")[0] == 200
    assert lookupd.http("POST", "/topic/delete?topic=t")[0] == 200
    assert get_json(lookupd, "/channels?topic=t") == (200, {"channels": []})
    assert get_json(lookupd, "/topics") == (200, {"topics": ["t2"]})


V1_ERRORS_BEFORE_IDENTIFY = [
    (["FOO"], b"E_INVALID invalid command FOO"),
    ([""], b"E_INVALID invalid command "),
    (["REGISTER topic"], b"E_INVALID client must IDENTIFY"),
    (["UNREGISTER topic"], b"E_INVALID client must IDENTIFY"),
]

V1_REGISTER_ERRORS = [
    ("REGISTER", b"E_INVALID REGISTER insufficient number of params"),
    ("UNREGISTER", b"E_INVALID UNREGISTER insufficient number of params"),
    ("REGISTER bad!topic", b"E_BAD_TOPIC REGISTER topic name 'bad!topic' is not valid"),
    ("REGISTER t bad!ch", b"E_BAD_CHANNEL REGISTER channel name 'bad!ch' is not valid"),
    ("UNREGISTER t " + "c" * 65,
     b"E_BAD_CHANNEL UNREGISTER channel name '" + b"c" * 65 + b"' is not valid"),
]

V1_IDENTIFY_BODY_ERRORS = [
    (b"not json", b"E_BAD_BODY IDENTIFY failed to decode JSON body"),
    (json.dumps({"broadcast_address": "a", "tcp_port": "x", "http_port": 1,
                 "version": "1"}).encode(), b"E_BAD_BODY IDENTIFY failed to decode JSON body"),
    (json.dumps({"broadcast_address": "a", "tcp_port": 1, "version": "1"}).encode(),
     b"E_BAD_BODY IDENTIFY missing fields"),
    (json.dumps({"broadcast_address": "", "tcp_port": 1, "http_port": 2,
                 "version": "1"}).encode(), b"E_BAD_BODY IDENTIFY missing fields"),
]

LOOKUPD_ADMIN_ERRORS = [
    ("/topic/create", "MISSING_ARG_TOPIC"),
    ("/topic/create?topic=bad!", "INVALID_ARG_TOPIC"),
    ("/topic/delete", "MISSING_ARG_TOPIC"),
    ("/topic/tombstone?node=x:1", "MISSING_ARG_TOPIC"),
    ("/topic/tombstone?topic=t", "MISSING_ARG_NODE"),
    ("/channel/create?channel=c", "MISSING_ARG_TOPIC"),
    ("/channel/create?topic=bad!&channel=c", "INVALID_ARG_TOPIC"),
    ("/channel/create?topic=t", "MISSING_ARG_CHANNEL"),
    ("/channel/delete?topic=t&channel=bad!", "INVALID_ARG_CHANNEL"),
]
