"""TLS: the IDENTIFY ``tls_v1`` upgrade, client certificates, ``--tls-required`` on TCP and
HTTP, the HTTPS listener, and TLS with greensq.client, pynsq and gnsq.

Certificates are made per test session by tests/certs.py (a CA, a server certificate for
127.0.0.1, a client certificate, and an unrelated CA's "rogue" client certificate).
"""

import json
import ssl
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import gevent
import pytest

from certs import Certs
from support import FRAME_ERROR, FRAME_RESPONSE, Daemon, V2Client, run_client_script

pytestmark = pytest.mark.slow   # starts daemon processes

OK = (FRAME_RESPONSE, b"OK")
SCRIPT = Path(__file__).with_name("transport_clients.py")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def https_port(nsqd):
    return int(nsqd.wait_for_log(r"HTTPS: listening on .*:(\d+)").group(1))


def client_context(certs, client_cert=None):
    context = ssl.create_default_context(cafile=certs.ca)
    if client_cert:
        context.load_cert_chain(*client_cert)
    return context


def upgrade(client, certs, client_cert=None, **fields):
    """IDENTIFY with tls_v1, the TLS handshake on the same socket, then nsqd's OK."""
    reply = client.identify(feature_negotiation=True, tls_v1=True, **fields)
    assert reply["tls_v1"] is True
    assert not client.unread
    client.sock = client_context(certs, client_cert).wrap_socket(
        client.sock, server_hostname="127.0.0.1")
    assert client.read_frame() == OK
    return reply


def https_get(port, path, certs, client_cert=None):
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=10,
                                    context=client_context(certs, client_cert)) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def only_client(nsqd, topic="t", channel="ch"):
    (client,) = nsqd.channel_stats(topic, channel)["clients"]
    return client


# -- the upgrade -----------------------------------------------------------------------------

def test_tls_upgrade_then_publish_and_consume_through_tls(nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags())
    client = V2Client(nsqd.tcp_port)
    reply = upgrade(client, certs)
    assert reply["snappy"] is False and reply["deflate"] is False
    assert client.pub("t", b"secret") == OK
    client.sub("t", "ch", rdy=1)
    assert client.read_message().body == b"secret"
    stats = only_client(nsqd)
    assert stats["tls"] is True
    assert stats["tls_version"] in ("TLS1.2", "TLS1.3")
    assert stats["tls_cipher_suite"]
    assert stats["snappy"] is False and stats["deflate"] is False


def test_without_a_certificate_tls_v1_is_refused_and_the_connection_stays_plain(nsqd):
    client = V2Client(nsqd.tcp_port)
    reply = client.identify(feature_negotiation=True, tls_v1=True)
    assert reply["tls_v1"] is False
    assert client.pub("t", b"plain") == OK
    client.sub("t", "ch")
    assert only_client(nsqd)["tls"] is False
    assert only_client(nsqd)["tls_version"] == ""


def test_a_client_that_does_not_ask_for_tls_stays_plain_when_tls_is_optional(
        nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags())
    client = V2Client(nsqd.tcp_port)
    assert client.identify(feature_negotiation=True)["tls_v1"] is False
    assert client.pub("t", b"plain") == OK
    status, _, body = nsqd.http("GET", "/ping")        # plain HTTP still answers
    assert (status, body) == (200, b"OK")
    assert https_get(https_port(nsqd), "/ping", certs)[::2] == (200, b"OK")


def test_tls_then_snappy_each_upgrade_answered_with_ok(nsqd_factory, certs):
    snappy = pytest.importorskip("snappy")
    nsqd = nsqd_factory(*certs.server_flags())
    client = V2Client(nsqd.tcp_port)
    reply = upgrade(client, certs, snappy=True)
    assert reply["snappy"] is True
    tls_sock = client.sock
    decompressor = snappy.StreamDecompressor()
    compressor = snappy.StreamCompressor()

    class SnappyOverTLS:
        def recv(self, size):
            while True:
                data = tls_sock.recv(size)
                if not data:
                    return b""
                out = decompressor.decompress(data)
                if out:
                    return out

        def sendall(self, data):
            tls_sock.sendall(compressor.add_chunk(data))

    client.sock = SnappyOverTLS()
    assert client.read_frame() == OK
    assert client.pub("t", b"both") == OK
    client.sub("t", "ch", rdy=1)
    assert client.read_message().body == b"both"
    stats = only_client(nsqd)
    assert stats["tls"] is True and stats["snappy"] is True


# -- protocol versions --------------------------------------------------------------------------

def version_context(certs, version):
    """A client that speaks only ``version``; a TLS 1.0 or 1.1 one also lowers its own
    OpenSSL security level and offers the SHA-1 suites, as such a client must on OpenSSL 3."""
    context = client_context(certs)
    with warnings.catch_warnings():    # TLSVersion.TLSv1 is deprecated: it is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(nsqd, certs, version):
    """IDENTIFY with tls_v1 and a handshake by a client of ``version`` only; the client
    once nsqd's OK came through TLS."""
    client = V2Client(nsqd.tcp_port)
    assert client.identify(feature_negotiation=True, tls_v1=True)["tls_v1"] is True
    client.sock = version_context(certs, version).wrap_socket(
        client.sock, server_hostname="127.0.0.1")
    assert client.read_frame() == OK
    return client


@pytest.mark.parametrize("version, name", [(ssl.TLSVersion.TLSv1, "TLS1.0"),
                                           (ssl.TLSVersion.TLSv1_2, "TLS1.2")],
                         ids=["tls1.0", "tls1.2"])
def test_default_flags_accept_a_tls_1_0_client_and_a_tls_1_2_client(
        nsqd_factory, certs, version, name):
    """--tls-min-version defaults to tls1.0, as in Go: a client that only speaks TLS 1.0
    connects, over TCP and HTTPS, as one that only speaks TLS 1.2 does."""
    nsqd = nsqd_factory(*certs.server_flags())
    client = handshake(nsqd, certs, version)
    assert client.pub("t", b"x") == OK
    client.sub("t", "ch", rdy=1)
    assert client.read_message().body == b"x"
    assert only_client(nsqd)["tls_version"] == name
    url = f"https://127.0.0.1:{https_port(nsqd)}/ping"
    with urllib.request.urlopen(url, timeout=10,
                                context=version_context(certs, version)) as resp:
        assert resp.read() == b"OK"


def test_tls_min_version_1_2_refuses_a_tls_1_0_client(nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags("--tls-min-version=tls1.2"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(nsqd, certs, ssl.TLSVersion.TLSv1)
    client = handshake(nsqd, certs, ssl.TLSVersion.TLSv1_2)
    assert client.pub("t", b"x") == OK


# -- client certificates ---------------------------------------------------------------------

def test_require_verify_accepts_a_client_certificate_signed_by_the_root_ca(nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags(
        "--tls-client-auth-policy=require-verify", f"--tls-root-ca-file={certs.ca}"))
    client = V2Client(nsqd.tcp_port)
    upgrade(client, certs, client_cert=(certs.client_cert, certs.client_key))
    assert client.pub("t", b"mutual") == OK
    assert client.sock.getpeercert()["subject"]   # the server's, verified by our CA


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_require_verify_rejects_a_missing_or_untrusted_client_certificate(
        nsqd_factory, certs, cert):
    nsqd = nsqd_factory(*certs.server_flags(
        "--tls-client-auth-policy=require-verify", f"--tls-root-ca-file={certs.ca}"))
    client = V2Client(nsqd.tcp_port)
    client_cert = (certs.rogue_cert, certs.rogue_key) if cert else None
    reply = client.identify(feature_negotiation=True, tls_v1=True)
    assert reply["tls_v1"] is True
    # TLS 1.3 reports a rejected client certificate after the handshake: at the first read.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        client.sock = client_context(certs, client_cert).wrap_socket(
            client.sock, server_hostname="127.0.0.1")
        client.read_frame()
    # A client-auth policy implies --tls-required=true: plain HTTP is refused too.
    assert nsqd.http("GET", "/ping")[0] == 403


def test_require_verify_also_applies_to_https(nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags(
        "--tls-client-auth-policy=require-verify", f"--tls-root-ca-file={certs.ca}"))
    port = https_port(nsqd)
    status, _, body = https_get(port, "/ping", certs, (certs.client_cert, certs.client_key))
    assert (status, body) == (200, b"OK")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        https_get(port, "/ping", certs)


# -- --tls-required ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["true", "tcp-https"])
def test_tls_required_refuses_commands_before_the_upgrade(nsqd_factory, certs, mode):
    nsqd = nsqd_factory(*certs.server_flags(f"--tls-required={mode}"))
    client = V2Client(nsqd.tcp_port)
    assert client.pub("t", b"x") == (
        FRAME_ERROR, b"E_INVALID cannot PUB in current state (TLS required)")
    assert client.is_closed()

    client = V2Client(nsqd.tcp_port)
    client.command("NOPE")      # the TLS check comes before the unknown-command check
    assert client.read_frame() == (
        FRAME_ERROR, b"E_INVALID cannot NOPE in current state (TLS required)")

    client = V2Client(nsqd.tcp_port)   # IDENTIFY is allowed, then TLS lifts the policy
    upgrade(client, certs)
    assert client.pub("t", b"x") == OK


def test_tls_required_true_answers_plain_http_with_403_and_serves_https(nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags("--tls-required=true"))
    port = https_port(nsqd)
    for method, path in [("GET", "/ping"), ("GET", "/stats"), ("POST", "/pub?topic=t")]:
        status, headers, body = nsqd.http(method, path, body=b"x" if method == "POST" else None)
        assert status == 403
        assert body == b'{"message": "TLS_REQUIRED", "https_port": %d}' % port
        assert headers["X-NSQ-Content-Type"] == "nsq; version=1.0"
        assert headers["Content-Type"].startswith("application/json")
    assert https_get(port, "/ping", certs)[::2] == (200, b"OK")
    status, _, body = https_get(port, "/stats?format=json", certs)
    assert status == 200 and json.loads(body)["version"] == "1.3.0"


def test_tls_required_tcp_https_leaves_plain_http_open(nsqd_factory, certs):
    nsqd = nsqd_factory(*certs.server_flags("--tls-required=tcp-https"))
    assert nsqd.http("POST", "/pub?topic=t", body=b"x")[0] == 200
    assert https_get(https_port(nsqd), "/ping", certs)[::2] == (200, b"OK")


def test_tls_required_without_a_certificate_is_a_startup_error(tmp_path):
    daemon = Daemon(tmp_path / "data", ["--tls-required=true"])
    daemon.start(wait=False)
    assert daemon.proc.wait(20) == 1
    assert ("FATAL: failed to instantiate nsqd - cannot require TLS client connections "
            "without TLS key and cert") in daemon.log_text()


# -- clients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mutual", [False, True])
def test_greensq_client_over_tls(nsqd_factory, certs, mutual):
    from greensq.client import Consumer, Producer
    from support import gevent_wait_until

    flags = ["--tls-required=true"]
    options = {"tls_v1": True, "tls_ca_file": certs.ca}
    if mutual:
        flags += ["--tls-client-auth-policy=require-verify", f"--tls-root-ca-file={certs.ca}"]
        options.update(tls_cert=certs.client_cert, tls_key=certs.client_key)
    nsqd = nsqd_factory(*certs.server_flags(*flags))
    address = f"127.0.0.1:{nsqd.tcp_port}"
    received = []
    with Producer([address], **options) as producer:
        assert producer.publish("t", b"one") == b"OK"
        assert producer.multi_publish("t", [b"two", b"three"]) == b"OK"
        assert producer.connection.settings["tls_v1"] is True
    consumer = Consumer("t", "ch", handler=lambda msg: received.append(msg.body),
                        nsqd_tcp_addresses=[address], max_in_flight=10, **options)
    consumer.start()
    try:
        gevent_wait_until(lambda: len(received) == 3, message="3 messages over TLS")
        assert sorted(received) == [b"one", b"three", b"two"]
        port = https_port(nsqd)
        cert = (certs.client_cert, certs.client_key) if mutual else None
        result = gevent.get_hub().threadpool.apply(
            https_get, (port, "/stats?format=json&topic=t", certs, cert))
        (client,) = json.loads(result[2])["topics"][0]["channels"][0]["clients"]
        assert client["tls"] is True
    finally:
        consumer.close()


def test_greensq_client_refuses_a_server_its_ca_does_not_trust(nsqd_factory, certs):
    from greensq.client import Producer

    nsqd = nsqd_factory(*certs.server_flags())
    producer = Producer([f"127.0.0.1:{nsqd.tcp_port}"], tls_v1=True, tls_ca_file=certs.other_ca,
                        retries=0)
    with pytest.raises(Exception) as info:
        producer.publish("t", b"x")
    assert "CERTIFICATE_VERIFY_FAILED" in repr(info.value) or isinstance(
        info.value, (ssl.SSLError, ConnectionError))
    producer.close()


@pytest.mark.parametrize("client", ["pynsq", "gnsq"])
@pytest.mark.parametrize("mutual", [False, True])
def test_third_party_clients_over_tls(nsqd_factory, certs, client, mutual):
    flags = ["--tls-required=tcp-https"]
    tls = {"ca": certs.ca}
    if mutual:
        flags += ["--tls-client-auth-policy=require-verify", f"--tls-root-ca-file={certs.ca}"]
        tls.update(cert=certs.client_cert, key=certs.client_key)
    nsqd = nsqd_factory(*certs.server_flags(*flags))
    out = run_transport_client(nsqd, client, {"tls_v1": True, "tls": tls})
    assert all(reply["tls_v1"] is True for reply in out["identify"])
    clients = out["stats"]["topics"][0]["channels"][0]["clients"]
    assert clients and all(c["tls"] is True for c in clients)
    producers = out["stats"]["producers"]
    assert producers and all(p["tls"] is True for p in producers)


def run_transport_client(nsqd, client, options, topic="t"):
    """Run tests/transport_clients.py; assert it published and read all 6 messages."""
    assert nsqd.http("POST", f"/topic/create?topic={topic}")[0] == 200
    assert nsqd.http("POST", f"/channel/create?topic={topic}&channel=ch")[0] == 200
    config = {"client": client, "topic": topic, "deadline": 10, "options": options,
              "tcp": f"127.0.0.1:{nsqd.tcp_port}", "http": f"127.0.0.1:{nsqd.http_port}"}
    out = run_client_script(SCRIPT, config, context=nsqd.log_text()[-3000:])
    assert sorted(out["received"]) == [f"msg-{i}" for i in range(6)]
    assert out["publish_results"] == ["OK"] * 4
    assert out["identify"]
    return out
