"""Durable mode (``--durable``): an acknowledged message survives a crash or a power cut,
in-flight and deferred ones included, until it is FINished.

- SIGKILL rounds: publishers and a consumer that FINs, REQs with a delay and lets
  messages time out; the daemon is killed mid-stream and restarted, again and again.
  Every acknowledged message is delivered until FINished; one whose FIN nsqd confirmed
  (a later bad FIN's error came back, so nsqd had handled the ones before it) is never
  delivered again.
- Power cut: no OK may leave before the fsync that covers the message. A filesystem that
  drops unsynced writes needs FUSE or a VM; what it would catch is an OK sent before the
  fsync, so the test runs the unmodified daemon under ``strace`` and checks, for every
  acknowledged message, that each write of its bytes was followed by an fsync of that
  file which finished before the OK was sent. The same check on the default mode must
  find OKs that were sent first (the check can fail).
- A deferred message keeps its due time across a restart; the data directory stays
  readable by the default mode (and so by Go nsqd: every unfinished message, at least once).
"""

import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from support import (
    FRAME_ERROR, FRAME_MESSAGE, FRAME_RESPONSE, V2Client, consume_expected, free_port, ping,
    wait_until)

pytestmark = pytest.mark.slow   # starts daemon processes

SENTINEL = b"0" * 16     # a message ID never in flight: its FIN's error confirms the rest


def test_stats_say_durable_mode(nsqd_factory):
    durable = nsqd_factory("--durable")
    plain = nsqd_factory()
    assert durable.stats()["durable"] is True
    assert "durable" not in plain.stats()
    status, _, text = durable.http("GET", "/stats")
    assert b"Mode: durable" in text


# -- SIGKILL rounds ---------------------------------------------------------------------------

class Publisher(threading.Thread):
    """PUB and MPUB unique bodies until the connection breaks; ``acked`` what got OK."""

    def __init__(self, port, tag):
        super().__init__(daemon=True)
        self.client = V2Client(port)
        self.tag, self.acked = tag, []

    def run(self):
        n = 0
        try:
            while True:
                bodies = [f"{self.tag}-{n + i}".encode() for i in range(1 if n % 3 else 10)]
                n += len(bodies)
                reply = (self.client.pub("durable", bodies[0]) if len(bodies) == 1
                         else self.client.mpub("durable", bodies))
                if reply != (FRAME_RESPONSE, b"OK"):
                    return
                self.acked.extend(bodies)
        except (OSError, ConnectionError):
            return


class Consumer(threading.Thread):
    """FINs most messages; REQs every tenth with a delay, and lets another tenth time out,
    on their first attempt. After every 20 FINs, or when nothing arrives for a moment, it
    sends a FIN for an ID never in flight: when its error comes back, nsqd has handled
    the FINs sent before it, which the ledger then counts as confirmed, except those nsqd
    refused (a FIN that came after its message timed out: it will be delivered again)."""

    def __init__(self, port, ledger):
        super().__init__(daemon=True)
        self.client = V2Client(port)
        self.client.identify(msg_timeout=1000)
        self.client.sub("durable", "ch", rdy=50)
        self.client.sock.settimeout(0.2)
        self.ledger = ledger

    def run(self):
        ledger, client = self.ledger, self.client
        unconfirmed, sentinels = [], []      # FINs since the last sentinel; per sentinel
        fin_bodies = {}                      # message ID -> body, for refused FINs

        def send_sentinel():
            client.command(b"FIN " + SENTINEL)
            sentinels.append(list(unconfirmed))
            unconfirmed.clear()

        try:
            while True:
                try:
                    kind, data = client.read_frame()
                except socket.timeout:
                    if unconfirmed:
                        send_sentinel()
                    continue
                if kind == FRAME_ERROR and SENTINEL in data:
                    ledger.confirmed.update(sentinels.pop(0))
                    continue
                if kind == FRAME_ERROR and data.startswith(b"E_FIN_FAILED"):
                    refused = next((fin_bodies[word] for word in data.split()
                                    if word in fin_bodies), None)
                    for pending in (unconfirmed, *sentinels):
                        if refused in pending:
                            pending.remove(refused)
                    continue
                if kind != FRAME_MESSAGE:
                    continue
                attempts = struct.unpack(">H", data[8:10])[0]
                msg_id, body = data[10:26], data[26:]
                with ledger.lock:
                    if body in ledger.confirmed:
                        ledger.redelivered_after_fin.append(body)
                    ledger.delivered.add(body)
                index = int(body.rsplit(b"-", 1)[1])
                if attempts == 1 and index % 10 == 3:
                    client.command(b"REQ " + msg_id + b" 300")
                elif attempts == 1 and index % 10 == 7:
                    pass                                   # times out after 1 s
                else:
                    client.command(b"FIN " + msg_id)
                    fin_bodies[msg_id] = body
                    unconfirmed.append(body)
                    ledger.fin_sent.add(body)
                    if len(unconfirmed) >= 20:
                        send_sentinel()
        except (OSError, ConnectionError):
            return


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.confirmed = set()       # FINs nsqd handled (a later bad FIN's error came back)
        self.fin_sent = set()        # FINs sent, confirmed or not (a kill may cut them off)
        self.delivered = set()
        self.redelivered_after_fin = []


def test_every_acknowledged_unfinished_message_survives_sigkill_rounds(nsqd_factory):
    daemon = nsqd_factory("--durable", "--mem-queue-size=200", new_session=True)
    assert daemon.http("POST", "/topic/create?topic=durable")[0] == 200
    assert daemon.http("POST", "/channel/create?topic=durable&channel=ch")[0] == 200
    ledger, acked = Ledger(), []
    for round_number in range(5):
        publishers = [Publisher(daemon.tcp_port, f"r{round_number}p{i}") for i in range(2)]
        consumer = Consumer(daemon.tcp_port, ledger)
        for thread in (*publishers, consumer):
            thread.start()
        wait_until(lambda: all(len(p.acked) >= 300 for p in publishers)
                   and len(ledger.confirmed) >= 100 * (round_number + 1),
                   timeout=30, message="publishing and consuming under way")
        os.killpg(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        for publisher in publishers:
            publisher.join(10)
            acked.extend(publisher.acked)
        consumer.join(10)
        daemon.start()
    consumer = Consumer(daemon.tcp_port, ledger)
    consumer.start()
    everything = set(acked)

    def all_finished():
        return everything <= ledger.fin_sent

    try:
        wait_until(all_finished, timeout=60, interval=0.2,
                   message="every acknowledged message delivered and FINished")
    except AssertionError:
        missing = everything - ledger.fin_sent
        raise AssertionError(
            f"{len(missing)} of {len(everything)} acknowledged messages never FINished; "
            f"{len(missing & ledger.delivered)} of them delivered; e.g. {sorted(missing)[:8]}; "
            f"stats {daemon.channel_stats('durable', 'ch')}") from None
    assert not ledger.redelivered_after_fin, ledger.redelivered_after_fin[:10]
    assert len(acked) > 3000


# -- power cut: no OK before the fsync that covers it ------------------------------------------

STRACED = "openat,fcntl,dup,close,write,fsync,fdatasync,sendto,accept4"
_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+) (\w+)\((.*)\) += (-?\d+)(?: [A-Z]+ \(.*\))? <(\d+\.\d+)>$")
_RESUMED = re.compile(r"^(\d+)\s+(\d+\.\d+) <\.\.\. (\w+) resumed>(.*)\) += (-?\d+).* <(\d+\.\d+)>$")
_UNFINISHED = re.compile(r"^(\d+)\s+(\d+\.\d+) (\w+)\((.*) <unfinished \.\.\.>$")


def strace_events(path):
    """(start, end, name, args, result) for each syscall in an ``strace -f -ttt -T`` log."""
    events, unfinished = [], {}
    with open(path, errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            match = _LINE.match(line)
            if match:
                tid, start, name, args, result, duration = match.groups()
                events.append((float(start), float(start) + float(duration), name, args,
                               int(result)))
                continue
            match = _UNFINISHED.match(line)
            if match:
                tid, start, name, args = match.groups()
                unfinished[(tid, name)] = (float(start), args)
                continue
            match = _RESUMED.match(line)
            if match and (match[1], match[3]) in unfinished:
                start, args = unfinished.pop((match[1], match[3]))
                events.append((start, float(match[2]), match[3], args + match[4],
                               int(match[5])))
    return sorted(events)


def oks_before_their_fsync(trace, markers_by_connection):
    """The markers whose OK left before an fsync covering each of their writes."""
    files, writes, fsyncs, replies, connection_of = {}, {}, [], {}, {}
    for start, end, name, args, result in strace_events(trace):
        first = args.split(",", 1)[0]
        if name == "openat" and result >= 0 and "diskqueue" in args:
            files[result] = re.search(r'"([^"]+)"', args).group(1)
        elif name in ("fcntl", "dup") and result >= 0 and ("DUPFD" in args or name == "dup"):
            if first.isdigit() and int(first) in files:
                files[result] = files[int(first)]
        elif name == "close" and first.isdigit():
            files.pop(int(first), None)
        elif name == "write" and first.isdigit() and int(first) in files:
            for marker in re.findall(r"MARK-\d+-\d+-", args):
                writes.setdefault(marker, []).append((end, files[int(first)]))
        elif name in ("fsync", "fdatasync") and first.isdigit() and int(first) in files:
            fsyncs.append((start, end, files[int(first)]))
        elif name == "accept4" and result >= 0:
            port = re.search(r"htons\((\d+)\)", args)
            connection_of[result] = int(port.group(1)) if port else None
        elif name == "sendto" and first.isdigit() and (
                r'\0\0\0\6\0\0\0\0OK"' in args or args.split(", ")[1].startswith('"HTTP/1.1 200')):
            replies.setdefault(connection_of.get(int(first)), []).append(start)
    early = []
    for client_port, markers in markers_by_connection.items():
        oks = replies.get(client_port, [])
        assert len(oks) >= len(markers), (client_port, len(oks), len(markers))
        for marker, ok_at in zip(markers, oks):
            if not writes.get(marker):
                early.append(marker)       # acknowledged without being written at all
                continue
            for written_at, path in writes[marker]:
                if not any(s >= written_at and e <= ok_at and p == path for s, e, p in fsyncs):
                    early.append(marker)
                    break
    return early


def publish_markers_under_strace(tmp_path, *flags):
    """Run nsqd under strace; 3 TCP publishers and one HTTP publisher send marked
    messages (two channels, so each is written twice); return the OKs sent early."""
    trace = tmp_path / "strace.log"
    tcp, http_port = free_port(), free_port()
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.Popen(
        ["strace", "-f", "-ttt", "-T", "-s", "8192", "-e", f"trace={STRACED}", "-o", str(trace),
         sys.executable, "-m", "greensq.http.nsqd_launcher", f"--tcp-address=127.0.0.1:{tcp}",
         f"--http-address=127.0.0.1:{http_port}", f"--data-path={data}", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: ping(http_port), timeout=60, message="nsqd under strace")
        for path in ("/topic/create?topic=marked", "/channel/create?topic=marked&channel=a",
                     "/channel/create?topic=marked&channel=b"):
            _post(http_port, path)
        markers, threads = {}, []

        def tcp_publisher(index):
            client = V2Client(tcp)
            sent = markers[client.sock.getsockname()[1]] = []
            for n in range(20):
                marker = f"MARK-{index}-{n}-"
                assert client.pub("marked", marker.encode() + b"x" * 20) == (FRAME_RESPONSE, b"OK")
                sent.append(marker)
            client.close()

        def http_publisher():
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
            conn.connect()
            sent = markers[conn.sock.getsockname()[1]] = []
            for n in range(20):
                marker = f"MARK-9-{n}-"
                conn.request("POST", "/pub?topic=marked", marker.encode() + b"y" * 20)
                assert conn.getresponse().read() == b"OK"
                sent.append(marker)
            conn.close()

        threads = [threading.Thread(target=tcp_publisher, args=(i,)) for i in range(3)]
        threads.append(threading.Thread(target=http_publisher))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sum(len(m) for m in markers.values()) == 80
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    return oks_before_their_fsync(trace, markers)


requires_strace = pytest.mark.skipif(shutil.which("strace") is None,
                                     reason="strace is not installed (.ci/run installs it)")


@requires_strace
def test_no_ok_leaves_before_the_fsync_that_covers_it(tmp_path):
    assert publish_markers_under_strace(tmp_path, "--durable") == []


@requires_strace
def test_the_fsync_check_catches_the_default_mode(tmp_path):
    # Without --durable an OK follows the write, not an fsync: the check must say so.
    assert publish_markers_under_strace(tmp_path, "--mem-queue-size=0")


# -- deferred messages and the data directory --------------------------------------------------

def test_a_deferred_message_keeps_its_due_time_across_a_crash(nsqd_factory):
    daemon = nsqd_factory("--durable", new_session=True)
    assert daemon.http("POST", "/topic/create?topic=later")[0] == 200
    assert daemon.http("POST", "/channel/create?topic=later&channel=ch")[0] == 200
    published = time.time()
    assert daemon.http("POST", "/pub?topic=later&defer=3000", b"due later")[0] == 200
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()
    daemon.start()
    consumer = V2Client(daemon.tcp_port, timeout=15)
    consumer.sub("later", "ch", rdy=1)
    msg = consumer.read_message()
    assert msg.body == b"due later"
    assert time.time() - published >= 3.0


def test_a_durable_data_directory_is_read_by_the_default_mode(nsqd_factory, tmp_path):
    data = tmp_path / "shared"
    durable = nsqd_factory("--durable", data_path=data, new_session=True)
    durable.http("POST", "/topic/create?topic=both")
    durable.http("POST", "/channel/create?topic=both&channel=ch")
    bodies = [f"b{i}".encode() for i in range(50)]
    publisher = V2Client(durable.tcp_port)
    assert publisher.mpub("both", bodies) == (FRAME_RESPONSE, b"OK")
    consumer = V2Client(durable.tcp_port)
    consumer.sub("both", "ch", rdy=10)
    received = [consumer.read_message() for _ in range(10)]
    consumer.command("RDY 0")
    for msg in received:
        consumer.command(b"FIN " + msg.id)
    consumer.command(b"FIN " + SENTINEL)
    assert consumer.read_frame()[0] == FRAME_ERROR     # every FIN before it was handled
    bodies = [body for body in bodies if body not in {msg.body for msg in received}]
    os.killpg(durable.proc.pid, signal.SIGKILL)
    durable.proc.wait()
    plain = nsqd_factory(data_path=data)
    # At least once: every message not FINished is there.
    consume_expected(plain.tcp_port, "both", "ch", bodies)


def _post(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def test_a_topic_backlog_survives_a_crash_and_drains_to_a_new_channel(nsqd_factory):
    daemon = nsqd_factory("--durable", "--mem-queue-size=100", new_session=True)
    bodies = [f"held-{i}".encode() for i in range(2000)]
    publisher = V2Client(daemon.tcp_port)
    for start in range(0, len(bodies), 100):
        assert publisher.mpub("held", bodies[start:start + 100]) == (FRAME_RESPONSE, b"OK")
    os.killpg(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()
    daemon.start()
    assert daemon.topic_stats("held")["depth"] == 2000
    assert daemon.http("POST", "/channel/create?topic=held&channel=late")[0] == 200
    consume_expected(daemon.tcp_port, "held", "late", bodies)
