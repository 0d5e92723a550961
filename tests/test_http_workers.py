"""nsqd with HTTP workers (``--http-workers``): the HTTP port served by processes beside
the core, publishing to it over an internal V2 connection and forwarding everything else
to it. What a client sees must not change: every answer as without them (the HTTP API
tests run against both: tests/test_http_api.py), a 200 only for a stored message, and
nothing acknowledged lost when an HTTP worker or the core is killed, or the daemon
stopped while requests are in flight.
"""

import http.client
import json
import os
import re
import signal
import socket
import stat
import sys

import pytest

from certs import Certs
from greensq.client import Producer, aio
from greensq.http.testing import http_request, process_name
from nsq_cases import HTTP_LIMIT_FLAGS, MPUB_ERRORS, PUB_ERRORS, call
from support import (
    CommandProcess, HttpPublisher, V2Client, children, consume_expected, free_port, wait_until)

pytestmark = pytest.mark.slow   # starts daemon processes

WORKERS = 2


def publishers(port, topic, count, tag):
    started = [HttpPublisher(port, topic, f"{tag}{index}") for index in range(count)]
    for publisher in started:
        publisher.start()
    wait_until(lambda: all(len(p.acked) >= 50 for p in started), timeout=30,
               message="publishers under way")
    return started


def finish(started):
    acked = []
    for publisher in started:
        publisher.stop()
        publisher.join(30)
        acked.extend(publisher.acked)
    return acked


def raw_response(port, request):
    """The bytes of one response to ``request`` (``Connection: close``), its Date header
    left out (the only part that changes from one answer to the next)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return b"\r\n".join(line for line in data.split(b"\r\n")
                        if not line.lower().startswith(b"date:"))


@pytest.fixture
def workers(nsqd_factory):
    return nsqd_factory(f"--http-workers={WORKERS}", new_session=True)


def test_the_http_workers_are_named_and_the_core_is_one(workers):
    pids = workers.pids()
    assert len(workers.http_worker_pids) == WORKERS
    assert process_name(pids["worker"]) == "nsqd-core"
    assert all(process_name(pid) == "nsqd-http" for pid in workers.http_worker_pids)


@pytest.mark.parametrize("path, cases", [("/pub", PUB_ERRORS), ("/mpub", MPUB_ERRORS)])
def test_error_answers_are_byte_identical_with_and_without_http_workers(
        nsqd_factory, path, cases):
    without = nsqd_factory(*HTTP_LIMIT_FLAGS)
    with_workers = nsqd_factory(*HTTP_LIMIT_FLAGS, f"--http-workers={WORKERS}")
    for query, body, status, _ in cases:
        request = (f"POST {path}{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        expected = raw_response(without.http_port, request)
        assert expected.startswith(f"HTTP/1.1 {status} ".encode()), expected
        assert raw_response(with_workers.http_port, request) == expected, (query, body)


def test_a_pub_is_seen_at_once_on_any_other_connection(workers):
    for count in range(1, 41):
        assert call(workers, "POST", "/pub?topic=ryw", f"m{count}")[::2] == (200, b"OK")
        assert workers.topic_stats("ryw")["message_count"] == count


def test_concurrent_pubs_are_all_stored_once(workers):
    started = publishers(workers.http_port, "many", 12, "c")
    acked = finish(started)
    assert workers.topic_stats("many")["message_count"] == len(acked)
    consume_expected(workers.tcp_port, "many", "ch", acked)


def test_mpub_and_deferred_pub_through_http_workers(workers):
    body = b"\n".join(b"line%d" % i for i in range(3000))   # more than one MPUB's worth
    assert call(workers, "POST", "/mpub?topic=batch", body)[::2] == (200, b"OK")
    assert workers.topic_stats("batch")["message_count"] == 3000
    consumer = V2Client(workers.tcp_port)
    consumer.sub("later", "ch", rdy=1)
    assert call(workers, "POST", "/pub?topic=later&defer=300", b"soon")[::2] == (200, b"OK")
    channel = wait_until(lambda: workers.channel_stats("later", "ch"), message="channel")
    assert channel["deferred_count"] == 1
    assert consumer.read_message().body == b"soon"
    consumer.close()


def test_internal_connections_are_no_producers_and_need_no_auth_nor_tls(
        nsqd_factory, tmp_path):
    certs = Certs(tmp_path / "certs")
    daemon = nsqd_factory(f"--http-workers={WORKERS}", "--auth-http-address=127.0.0.1:1",
                          *certs.server_flags("--tls-required=tcp-https"))
    assert call(daemon, "POST", "/pub?topic=inside", b"m")[::2] == (200, b"OK")
    assert not daemon.stats()["producers"]
    assert "nsq_nsqd_clients{" in call(daemon, "GET", "/metrics")[2].decode()
    assert daemon.topic_stats("inside")["message_count"] == 1


def test_a_full_bounded_queue_refuses_its_topic_only(nsqd_factory):
    daemon = nsqd_factory(f"--http-workers={WORKERS}", "--mem-queue-size=0",
                          "--max-bytes-per-topic=200")
    answers = [call(daemon, "POST", "/pub?topic=full", b"x" * 60)[0] for _ in range(6)]
    assert answers[0] == 200 and answers[-1] == 503, answers
    status, _, body = call(daemon, "POST", "/pub?topic=full", b"x" * 60)
    assert (status, json.loads(body)) == (503, {"message": "QUEUE_FULL"})
    assert call(daemon, "POST", "/pub?topic=other", b"fine")[::2] == (200, b"OK")


def test_a_killed_http_worker_is_replaced_and_nothing_acknowledged_is_lost(workers):
    started = publishers(workers.http_port, "kill_http", 8, "k")
    before = set(children(workers.proc.pid))
    os.kill(workers.http_worker_pids[0], signal.SIGKILL)
    (new,) = wait_until(lambda: set(children(workers.proc.pid)) - before,
                        message="a new worker")
    wait_until(lambda: process_name(new) == "nsqd-http", message="a new HTTP worker")
    more = publishers(workers.http_port, "kill_http", 4, "after")
    acked = finish(started) + finish(more)
    consume_expected(workers.tcp_port, "kill_http", "ch", acked)


def test_a_killed_core_is_replaced_and_the_http_workers_publish_to_the_new_one(nsqd_factory):
    """The core is stopped (SIGSTOP), more publishers each send a request, and the core
    is killed: what it never read is published again to the new core before its 200,
    and what it acknowledged is on disk."""
    daemon = nsqd_factory(f"--http-workers={WORKERS}", "--mem-queue-size=0",
                          "--sync-every=1")
    started = publishers(daemon.http_port, "kill_core", 6, "k")
    core, http_workers = daemon.worker_pid, daemon.http_worker_pids
    before = set(children(daemon.proc.pid))
    os.kill(core, signal.SIGSTOP)
    late = [HttpPublisher(daemon.http_port, "kill_core", f"late{index}") for index in range(4)]
    for publisher in late:
        publisher.start()
    wait_until(lambda: all(publisher.sent for publisher in late),
               message="a request from each publisher while the core is stopped")
    os.kill(core, signal.SIGKILL)
    (new,) = wait_until(lambda: set(children(daemon.proc.pid)) - before,
                        message="a new core")
    wait_until(lambda: process_name(new) == "nsqd-core", message="the new core named")
    assert call(daemon, "POST", "/pub?topic=kill_core", b"after")[::2] == (200, b"OK")
    acked = finish(started) + finish(late) + [b"after"]
    assert daemon.http_worker_pids == http_workers       # they outlived the core
    consume_expected(daemon.tcp_port, "kill_core", "ch", acked)


def test_durable_pubs_survive_a_sigkill_of_the_daemon(nsqd_factory):
    daemon = nsqd_factory(f"--http-workers={WORKERS}", "--durable", new_session=True)
    started = publishers(daemon.http_port, "durable", 6, "d")
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()
    acked = finish(started)
    daemon.start()
    consume_expected(daemon.tcp_port, "durable", "ch", acked)


def test_sigterm_answers_requests_in_flight_and_keeps_them(workers):
    started = publishers(workers.http_port, "term", 8, "t")
    internal = workers.wait_for_log(r"INTERNAL: listening on (\S+)/tcp\.sock").group(1)
    assert stat.S_IMODE(os.stat(internal).st_mode) == 0o700
    assert workers.stop() == 0, workers.log_text()
    acked = finish(started)
    assert not os.path.exists(internal)
    workers.start()
    consume_expected(workers.tcp_port, "term", "ch", acked)


def test_the_gateway_under_plain_gunicorn_in_front_of_greensq(nsqd):
    gateway_in_front_of(nsqd)


def test_the_gateway_under_plain_gunicorn_in_front_of_go_nsqd(go_nsqd_factory):
    gateway_in_front_of(go_nsqd_factory())


def gateway_in_front_of(nsqd):
    """``/pub``, ``/mpub``, ``/pub?defer=`` and errors answered by the gateway, ``/stats``
    by the nsqd behind it, which has every message."""
    port = free_port()
    gunicorn = CommandProcess(
        [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-w", "2",
         "-k", "gevent", "-b", f"127.0.0.1:{port}", "greensq.http.gateway_app:app"],
        env={"GREENSQ_GATEWAY_OPTS": f"--nsqd-tcp-address={nsqd.tcp_address} "
                                     f"--nsqd-http-address={nsqd.http_address}"}).start()
    try:
        # Both workers serving (a SIGTERM while one boots would wait for Gunicorn's
        # graceful timeout: it has no handler yet).
        wait_until(lambda: gunicorn.proc.poll() is None
                   and gunicorn.log_text().count("publishing to nsqd at") == 2, timeout=30,
                   message="the gateway's two workers")
        assert http_request(port, "POST", "/pub?topic=gw", b"one")[::2] == (200, b"OK")
        assert http_request(port, "POST", "/mpub?topic=gw", b"two\nthree")[::2] == (200, b"OK")
        assert http_request(port, "POST", "/pub?topic=gw&defer=10", b"four")[::2] == (200, b"OK")
        assert http_request(port, "POST", "/pub?topic=gw", b"")[::2] == (
            400, b'{"message":"MSG_EMPTY"}')
        assert http_request(port, "POST", "/pub?topic=gw&defer=x", b"m")[::2] == (
            400, b'{"message":"INVALID_DEFER"}')
        status, _, body = http_request(port, "GET", "/stats?format=json&topic=gw")
        assert json.loads(body)["topics"][0]["message_count"] == 4
        consume_expected(nsqd.tcp_port, "gw", "ch", [b"one", b"two", b"three", b"four"])
    finally:
        gunicorn.stop()


def test_both_clients_publish_over_a_unix_socket(workers):
    path = workers.wait_for_log(r"INTERNAL: listening on (\S+/tcp\.sock)").group(1)
    with Producer(path) as producer:
        assert producer.publish("unix", b"gevent") == b"OK"

    async def publish():
        async with aio.Producer([path]) as producer:
            return await producer.publish("unix", b"asyncio")

    assert aio.run(publish()) == b"OK"
    assert workers.topic_stats("unix")["message_count"] == 2


def connections_on(port, pids):
    """``{pid: how many established connections to the local ``port`` it holds}``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "01":
                    inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        fds = f"/proc/{pid}/fd"
        counts[pid] = sum(1 for fd in os.listdir(fds)
                          if os.readlink(os.path.join(fds, fd)) in inodes)
    return counts


def test_a_burst_of_new_connections_is_spread_over_the_http_workers(workers):
    """A client's pool of keep-alive connections, opened at once: each HTTP worker
    serves a fair share, not the first one awake all of them."""
    wait_until(lambda: len(re.findall(r"HTTP: worker \d of 2 ready", workers.log_text())) == 2,
               message="both HTTP workers serving")
    connections = [http.client.HTTPConnection("127.0.0.1", workers.http_port, timeout=10)
                   for _ in range(16)]
    for conn in connections:
        conn.connect()
    for conn in connections:
        conn.request("POST", "/pub?topic=spread", body=b"m")
    for conn in connections:
        assert conn.getresponse().read() == b"OK"
    served = connections_on(workers.http_port, workers.http_worker_pids)
    for conn in connections:
        conn.close()
    assert sum(served.values()) == 16, served
    assert min(served.values()) >= 4, served
