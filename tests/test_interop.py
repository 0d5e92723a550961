"""Interoperability with real third-party NSQ clients: pynsq 0.9.1 (tornado) and gnsq 1.0.2
(gevent), talking to a real greensq nsqd.

Each scenario runs in its own Python process (tests/interop_clients.py) so gevent's
monkey-patching and tornado's IOLoop never leak into pytest; the process prints JSON with
what its readers received, the publish responses, the IDENTIFY responses the client parsed
and a /stats snapshot taken while its readers were still connected.
"""

from pathlib import Path

import pytest

from support import run_client_script

SCRIPT = Path(__file__).with_name("interop_clients.py")
CLIENTS = ["pynsq", "gnsq"]
USER_AGENTS = {"pynsq": "pynsq/0.9.1", "gnsq": "gnsq/1.0.2"}
N = 10
TOPIC = "interop"


def run_client(nsqd, client, scenario, channels=("ch",)):
    """Create the topic and channels, run one scenario in a subprocess, return its JSON."""
    assert nsqd.http("POST", f"/topic/create?topic={TOPIC}")[0] == 200
    for channel in channels:
        status, _, body = nsqd.http("POST", f"/channel/create?topic={TOPIC}&channel={channel}")
        assert status == 200, body
    config = {"client": client, "scenario": scenario, "topic": TOPIC, "deadline": 10,
              "tcp": f"127.0.0.1:{nsqd.tcp_port}", "http": f"127.0.0.1:{nsqd.http_port}"}
    out = run_client_script(SCRIPT, config)
    assert not out["stats"].get("unsettled"), out["stats"]
    return out


def channel(out, name="ch"):
    (topic,) = [t for t in out["stats"]["topics"] if t["topic_name"] == TOPIC]
    (entry,) = [c for c in topic["channels"] if c["channel_name"] == name]
    return entry


def bodies(out, **match):
    return sorted(r["body"] for r in out["received"]
                  if all(r[k] == v for k, v in match.items()))


def assert_identify(out, msg_timeout=60000):
    """Every connection the client made parsed a feature-negotiation response."""
    assert out["identify"], "no IDENTIFY response recorded"
    for response in out["identify"]:
        assert response["version"] == "1.3.0"
        assert response["max_rdy_count"] == 2500
        assert response["msg_timeout"] == msg_timeout
        assert response["snappy"] is False and response["tls_v1"] is False


def assert_clients(entry, client):
    assert entry["clients"], entry
    for c in entry["clients"]:
        assert c["user_agent"] == USER_AGENTS[client]
        assert c["in_flight_count"] == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_publish_and_consume_exactly_once(nsqd, client):
    out = run_client(nsqd, client, "pubsub")

    expected = sorted([f"single-{i}" for i in range(N // 2)]
                      + [f"multi-{i}" for i in range(N // 2)])
    assert bodies(out) == expected                     # every body, none twice
    assert all(r["attempts"] == 1 for r in out["received"])
    assert out["publish_results"] == ["OK"] * (N // 2 + 1)   # 5 PUB + 1 MPUB
    assert_identify(out)

    ch = channel(out)
    assert (ch["message_count"], ch["requeue_count"], ch["timeout_count"]) == (N, 0, 0)
    assert_clients(ch, client)
    (c,) = ch["clients"]
    assert (c["message_count"], c["finish_count"], c["requeue_count"]) == (N, N, 0)
    assert nsqd.topic_stats(TOPIC)["message_count"] == N


@pytest.mark.parametrize("client", CLIENTS)
def test_multicast_every_channel_gets_every_message(nsqd, client):
    out = run_client(nsqd, client, "multicast", channels=("ch1", "ch2"))

    expected = sorted(f"m-{i}" for i in range(N))
    assert bodies(out, channel="ch1") == expected
    assert bodies(out, channel="ch2") == expected
    for name in ("ch1", "ch2"):
        ch = channel(out, name)
        assert (ch["message_count"], ch["requeue_count"], ch["timeout_count"]) == (N, 0, 0)
        assert_clients(ch, client)
        (c,) = ch["clients"]
        assert (c["message_count"], c["finish_count"]) == (N, N)


@pytest.mark.parametrize("client", CLIENTS)
def test_distribution_between_two_readers_on_one_channel(nsqd, client):
    # Each reader has RDY 1 and holds its first message until the other reader has one,
    # so both must be served; the union must be exact with no duplicates.
    out = run_client(nsqd, client, "distribution")

    first, second = bodies(out, reader=0), bodies(out, reader=1)
    assert first and second
    assert sorted(first + second) == sorted(f"d-{i}" for i in range(N))
    assert not set(first) & set(second)

    ch = channel(out)
    assert (ch["message_count"], ch["requeue_count"], ch["timeout_count"]) == (N, 0, 0)
    assert ch["client_count"] == 2
    assert_clients(ch, client)
    counts = sorted((c["message_count"], c["finish_count"]) for c in ch["clients"])
    assert counts == sorted([(len(first), len(first)), (len(second), len(second))])


@pytest.mark.parametrize("client", CLIENTS)
def test_failed_message_is_requeued_then_finished(nsqd, client):
    # "fail": pynsq's handler returns False / gnsq's raises; "explicit": message.requeue().
    out = run_client(nsqd, client, "requeue")

    for body in ("fail", "explicit"):
        attempts = [r["attempts"] for r in out["received"] if r["body"] == body]
        assert attempts == [1, 2], (body, out["received"])

    ch = channel(out)
    assert (ch["message_count"], ch["requeue_count"], ch["timeout_count"]) == (2, 2, 0)
    assert_clients(ch, client)
    (c,) = ch["clients"]
    assert (c["message_count"], c["finish_count"], c["requeue_count"]) == (4, 2, 2)


@pytest.mark.parametrize("client", CLIENTS)
def test_unanswered_message_times_out_and_is_redelivered(nsqd_factory, client):
    if client == "pynsq":
        # pynsq sends msg_timeout=1000 in IDENTIFY; the server default stays at 60s.
        nsqd = nsqd_factory()
    else:
        # gnsq 1.0.2's IDENTIFY has no msg_timeout field: use the server-side default.
        nsqd = nsqd_factory("--msg-timeout=1s")
    out = run_client(nsqd, client, "timeout")

    assert [(r["body"], r["attempts"]) for r in out["received"]] == [("slow", 1), ("slow", 2)]
    assert_identify(out, msg_timeout=1000)

    ch = channel(out)
    assert (ch["message_count"], ch["requeue_count"], ch["timeout_count"]) == (1, 0, 1)
    assert_clients(ch, client)
    (c,) = ch["clients"]
    assert (c["message_count"], c["finish_count"], c["requeue_count"]) == (2, 1, 0)


@pytest.mark.parametrize("client", CLIENTS)
def test_deferred_publish_is_not_delivered_before_its_delay(nsqd, client):
    # DPUB "deferred" with a 1000 ms delay, then PUB "immediate". Elapsed times are measured
    # in the client process from just before the DPUB was sent.
    out = run_client(nsqd, client, "defer")

    order = [r["body"] for r in out["received"]]
    assert order == ["immediate", "deferred"]
    assert all(r["attempts"] == 1 for r in out["received"])
    (deferred,) = [r for r in out["received"] if r["body"] == "deferred"]
    assert deferred["t"] >= 1.0 - 0.05, deferred
    assert out["publish_results"] == ["OK", "OK"]

    ch = channel(out)
    assert (ch["message_count"], ch["requeue_count"], ch["timeout_count"]) == (2, 0, 0)
    assert ch["deferred_count"] == 0
    assert_clients(ch, client)
    (c,) = ch["clients"]
    assert (c["message_count"], c["finish_count"]) == (2, 2)
