"""nsqd as an operating-system process: command line, logs, signals, restarts, locking.

Every test runs real ``nsqd`` (or ``gunicorn``) processes on loopback ports and checks
what an operator or a client sees: exit codes, stderr lines, files on disk, /ping, the
TCP protocol.
"""

import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import termios
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from greensq.services.shared.version import __version__, build_word
from support import (FRAME_RESPONSE, CommandProcess, Daemon, V2Client, children, free_port,
                     kill_with_children, ping, wait_until)

pytestmark = pytest.mark.slow   # starts daemon processes

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = "greensq.http.nsqd_launcher"
LOG_LINE = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\.\d{6} "


# -- helpers ------------------------------------------------------------------------------

def post(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats?format=json", timeout=10) as resp:
        return json.loads(resp.read())


def topics_in_stats(port):
    return {t["topic_name"]: sorted(c["channel_name"] for c in t["channels"])
            for t in stats(port)["topics"]}


def metadata(data_path):
    """``nsqd.dat`` as ``{topic: [channels]}``, or None if it is not there (yet)."""
    try:
        with open(os.path.join(data_path, "nsqd.dat")) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return {t["name"]: sorted(c["name"] for c in t["channels"]) for t in doc["topics"]}


def send_bad_magic(port):
    """One connection with a wrong protocol magic; nsqd answers E_BAD_PROTOCOL and logs it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"XXXX")
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk


# -- command line -------------------------------------------------------------------------

def test_version_prints_the_nsq_banner_and_exits_zero():
    result = subprocess.run([sys.executable, "-m", LAUNCHER, "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"nsqd v1.3.0 (built w/greensq-{__version__}-{build_word()})\n"


def test_bad_flag_exits_2_with_go_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", LAUNCHER, "--no-such-flag",
                             f"--data-path={tmp_path}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "flag provided but not defined: -no-such-flag" in result.stderr
    assert result.stdout == ""


def test_flag_without_value_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", LAUNCHER, f"--data-path={tmp_path}",
                             "--mem-queue-size"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "flag needs an argument: -mem-queue-size" in result.stderr


# -- logging ------------------------------------------------------------------------------

def test_port_zero_listening_lines_on_stderr_in_nsq_format(tmp_path):
    # The log is stderr alone; stdout is kept apart.
    nsqd = CommandProcess([sys.executable, "-m", LAUNCHER, "--tcp-address=127.0.0.1:0",
                           "--http-address=127.0.0.1:0", f"--data-path={tmp_path}"]).start()
    try:
        tcp = nsqd.wait_for_log(
            rf"^\[nsqd\] {LOG_LINE}INFO: TCP: listening on 127\.0\.0\.1:(\d+)$")
        http = nsqd.wait_for_log(
            rf"^\[nsqd\] {LOG_LINE}INFO: HTTP: listening on 127\.0\.0\.1:(\d+)$")
        tcp_port, http_port = int(tcp.group(1)), int(http.group(1))
        assert tcp_port != 0 and http_port != 0 and tcp_port != http_port
        # The logged ports are the real ones.
        wait_until(lambda: ping(http_port), message="/ping on the logged HTTP port")
        client = V2Client(tcp_port)
        assert client.pub("logged_port", b"x") == (FRAME_RESPONSE, b"OK")
        client.close()
        assert nsqd.wait_for_log(rf"^\[nsqd\] {LOG_LINE}INFO: nsqd v1\.3\.0 ")
        assert not any("listening on" in line for line in nsqd.stdout_lines())
    finally:
        assert nsqd.stop() == 0


def test_log_prefix_flag_changes_the_prefix(nsqd_factory):
    daemon = nsqd_factory("--log-prefix=[custom-prefix] ")
    match = daemon.wait_for_log(rf"^\[custom-prefix\] {LOG_LINE}INFO: TCP: listening on ")
    assert match
    assert not [line for line in daemon.lines if line.startswith("[nsqd] ")]


def test_log_level_error_hides_info_lines(tmp_path):
    daemon = Daemon(tmp_path / "data", ["--log-level=error"],
                    tcp_address=f"127.0.0.1:{free_port()}",
                    http_address=f"127.0.0.1:{free_port()}")
    daemon.start(wait=False)
    try:
        wait_until(lambda: ping(daemon.http_port), message="/ping")
        # An ERROR line is still logged; it comes after anything logged at startup.
        assert b"E_BAD_PROTOCOL" in send_bad_magic(daemon.tcp_port)
        daemon.wait_for_log(rf"{LOG_LINE}ERROR: .*bad protocol magic")
        text = daemon.log_text()
        assert "INFO:" not in text
        assert "listening on" not in text
    finally:
        assert daemon.stop() == 0


# -- startup ------------------------------------------------------------------------------

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_quiet_nsqd_sleeps_after_its_idle_spin(nsqd_factory):
    # --idle-spin keeps the worker polling after work: it must stop once work stops.
    nsqd = nsqd_factory("--idle-spin=10ms", "--http-workers=1")
    for _ in range(4):      # work for the core and the HTTP worker
        assert post(nsqd.http_port, "/topic/create?topic=t") == 200
    for pid in (nsqd.worker_pid, *nsqd.http_worker_pids):
        before = cpu_seconds(pid)
        time.sleep(1.0)    # a measurement over one quiet second, not a synchronisation
        assert cpu_seconds(pid) - before < 0.3, "the worker kept polling while idle"


def test_ping_answers_after_start(tmp_path, record_property):
    http_port = free_port()
    started = time.monotonic()
    nsqd = CommandProcess(
        [sys.executable, "-m", LAUNCHER, f"--tcp-address=127.0.0.1:{free_port()}",
         f"--http-address=127.0.0.1:{http_port}", f"--data-path={tmp_path}"]).start()
    try:
        wait_until(lambda: ping(http_port, timeout=1.0), interval=0.005, message="/ping")
        # Recorded, not asserted: bench/startup.py tracks the startup time.
        record_property("seconds_to_first_ping", round(time.monotonic() - started, 3))
    finally:
        assert nsqd.stop() == 0


# -- signals, shutdown, restart -----------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT],
                         ids=["SIGTERM", "SIGINT", "SIGQUIT"])
def test_signal_exits_zero_and_writes_metadata(nsqd, sig):
    assert post(nsqd.http_port, "/topic/create?topic=sig_topic") == 200
    assert post(nsqd.http_port, "/channel/create?topic=sig_topic&channel=sig_channel") == 200
    producer = V2Client(nsqd.tcp_port)
    assert producer.pub("sig_topic", b"survives") == (FRAME_RESPONSE, b"OK")
    wait_until(lambda: metadata(nsqd.data_path) == {"sig_topic": ["sig_channel"]},
               message="nsqd.dat with the topic and channel")
    # Remove the file so that only the shutdown path can bring it back.
    os.remove(os.path.join(nsqd.data_path, "nsqd.dat"))

    assert nsqd.stop(sig) == 0, nsqd.log_text()
    assert metadata(nsqd.data_path) == {"sig_topic": ["sig_channel"]}
    with open(os.path.join(nsqd.data_path, "nsqd.dat")) as fh:
        doc = json.load(fh)
    assert doc["version"] == "1.3.0"
    assert doc["topics"] == [{"channels": [{"name": "sig_channel", "paused": False}],
                              "name": "sig_topic", "paused": False}]

    # The in-memory message was flushed to disk too.
    nsqd.start()
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("sig_topic", "sig_channel", rdy=1)
    assert consumer.read_message().body == b"survives"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_the_worker_boots_is_honoured_at_once(tmp_path, sig):
    """Told to stop as soon as its worker exists (still importing, loading), nsqd stops
    cleanly at once, not after the 30 s graceful timeout, and with no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", LAUNCHER, "--tcp-address=127.0.0.1:0",
                             "--http-address=127.0.0.1:0", f"--data-path={tmp_path}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: children(proc.pid), interval=0.001, message="the worker forked")
    proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("nsqd ignored a stop that came while its worker booted")
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


def test_restart_binds_the_same_ports_at_once(nsqd):
    tcp_port, http_port = nsqd.tcp_port, nsqd.http_port
    assert post(http_port, "/topic/create?topic=restart_topic") == 200
    assert post(http_port, "/channel/create?topic=restart_topic&channel=c") == 200
    # Connections open at shutdown leave TIME_WAIT sockets on the server's ports.
    idle = V2Client(tcp_port)
    assert idle.pub("restart_topic", b"m") == (FRAME_RESPONSE, b"OK")

    nsqd.restart()

    assert (nsqd.tcp_port, nsqd.http_port) == (tcp_port, http_port)
    assert ping(http_port)
    assert topics_in_stats(http_port) == {"restart_topic": ["c"]}
    client = V2Client(tcp_port)
    assert client.pub("restart_topic", b"again") == (FRAME_RESPONSE, b"OK")


def test_second_nsqd_on_same_data_path_fails_at_once(nsqd, tmp_path):
    second = Daemon(nsqd.data_path)
    second.start(wait=False)
    try:
        returncode = second.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        second.kill()
        raise AssertionError("second nsqd did not exit; log:\n" + second.log_text())
    assert returncode != 0
    expected = (f"--data-path={os.path.abspath(nsqd.data_path)} in use "
                f"(possibly by another instance of nsqd)")
    text = wait_until(lambda: expected in second.log_text() and second.log_text(),
                      message="the data-path lock message")
    # One clean failure, not a worker booting and dying in a loop.
    assert text.count("in use (possibly by another instance of nsqd)") == 1
    assert "Booting worker" not in text and "Traceback" not in text
    # The first one is unharmed.
    assert ping(nsqd.http_port)


def test_crashed_worker_is_restarted_on_the_same_ports_with_its_topics(nsqd):
    assert post(nsqd.http_port, "/topic/create?topic=crash_topic") == 200
    assert post(nsqd.http_port, "/channel/create?topic=crash_topic&channel=crash_ch") == 200
    wait_until(lambda: metadata(nsqd.data_path) == {"crash_topic": ["crash_ch"]},
               message="nsqd.dat with the topic and channel")
    workers = children(nsqd.proc.pid)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)

    new = wait_until(lambda: [p for p in children(nsqd.proc.pid) if p != workers[0]],
                     message="a new worker")
    assert len(new) == 1
    wait_until(lambda: ping(nsqd.http_port), message="/ping after the worker restart")
    assert nsqd.proc.poll() is None
    assert topics_in_stats(nsqd.http_port) == {"crash_topic": ["crash_ch"]}
    client = V2Client(nsqd.tcp_port)
    assert client.pub("crash_topic", b"after") == (FRAME_RESPONSE, b"OK")
    assert nsqd.channel_stats("crash_topic", "crash_ch")["depth"] == 1


def read_listening_ports(stream, timeout=15.0):
    """The TCP and HTTP ports from nsqd's startup lines, reading no further than them."""
    ports, line = {}, b""
    deadline = time.monotonic() + timeout
    while len(ports) < 2:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "nsqd did not log its listening ports"
        byte = os.read(stream.fileno(), 1)
        assert byte, "nsqd exited before listening"
        line += byte
        if byte == b"\n":
            match = re.search(rb"(TCP|HTTP): listening on .*:(\d+)", line)
            if match:
                ports[match.group(1)] = int(match.group(2))
            line = b""
    return ports[b"TCP"], ports[b"HTTP"]


def test_unread_stderr_pipe_does_not_freeze_the_broker(tmp_path):
    # Port 0, and only the startup lines are read: from then on nobody reads the pipe.
    proc = subprocess.Popen(
        [sys.executable, "-m", LAUNCHER, "--tcp-address=127.0.0.1:0",
         "--http-address=127.0.0.1:0", f"--data-path={tmp_path}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        tcp_port, http_port = read_listening_ports(proc.stderr)
        wait_until(lambda: ping(http_port), message="/ping")
        capacity = fcntl.fcntl(proc.stderr.fileno(), fcntl.F_GETPIPE_SZ)

        def pending():
            buf = bytearray(4)
            fcntl.ioctl(proc.stderr.fileno(), termios.FIONREAD, buf)
            return int.from_bytes(buf, sys.byteorder)

        def writer_blocked():
            # The pipe is full when the log thread waits in a write to it. Its byte count
            # alone does not tell: a pipe holds 16 pages, and a write that does not fit
            # in the last page's room starts a new one, so chunks of about 3.5 KiB fill
            # it at about 57 KiB.
            for pid in (proc.pid, *children(proc.pid)):
                for task in Path(f"/proc/{pid}/task").glob("*"):
                    try:
                        if "pipe_write" in (task / "wchan").read_text():
                            return True
                    except OSError:
                        pass
            return False

        def full():
            return writer_blocked() or pending() >= capacity - 4096

        flooded = []

        def flood_until_full():
            # Every bad-magic connection logs an INFO and an ERROR line.
            for _ in range(100):
                flooded.append(send_bad_magic(tcp_port))
            return full()

        try:
            wait_until(flood_until_full, timeout=60, interval=0, message="a full stderr pipe")
        except AssertionError:
            # Seen once under a loaded full-suite run and not reproduced since: say more.
            raise AssertionError(
                f"stderr pipe not full after {len(flooded)} bad-magic connections: "
                f"{pending()} of {capacity} bytes unread, broker processes "
                f"{[proc.pid, *children(proc.pid)]}, ping {ping(http_port, timeout=5)}, "
                f"last answer {flooded[-1:]!r}") from None
        # Keep logging with the pipe full: the broker must not block on it.
        for _ in range(300):
            assert b"E_BAD_PROTOCOL" in send_bad_magic(tcp_port)
        assert full()

        assert ping(http_port, timeout=5)
        producer = V2Client(tcp_port, timeout=5)
        assert producer.pub("unread_pipe", b"still moving") == (FRAME_RESPONSE, b"OK")
        consumer = V2Client(tcp_port, timeout=5)
        consumer.sub("unread_pipe", "ch", rdy=1)
        assert consumer.read_message().body == b"still moving"
        assert ping(http_port, timeout=5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)   # drains the pipes so shutdown can finish
        except subprocess.TimeoutExpired:
            kill_with_children(proc)


# -- gunicorn directly --------------------------------------------------------------------

def test_plain_gunicorn_serves_the_nsqd_app(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # gunicorn puts its cwd on sys.path: http/ must not shadow
    tcp_port, http_port = free_port(), free_port()
    data_path = tmp_path / "gdata"
    data_path.mkdir()
    gunicorn = CommandProcess(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
         "-b", f"127.0.0.1:{http_port}", "greensq.http.nsqd_app:app"],
        env={"NSQD_OPTS": f"--tcp-address=127.0.0.1:{tcp_port} --data-path={data_path}"})
    gunicorn.start()
    try:
        wait_until(lambda: ping(http_port) or gunicorn.proc.poll() is not None, message="/ping")
        assert gunicorn.proc.poll() is None, gunicorn.log_text()
        client = V2Client(tcp_port)
        assert client.pub("gunicorn_topic", b"hello") == (FRAME_RESPONSE, b"OK")
        topic = next(t for t in stats(http_port)["topics"] if t["topic_name"] == "gunicorn_topic")
        assert topic["message_count"] == 1
        assert topic["depth"] == 1
    finally:
        assert gunicorn.stop() == 0, gunicorn.log_text()
    # The worker flushed its state on the way out.
    assert metadata(data_path) == {"gunicorn_topic": []}


# -- the http/ folder must never shadow the standard library --------------------------------

def test_repository_http_folder_has_no_init_py():
    assert (REPO / "http").is_dir()
    assert not (REPO / "http" / "__init__.py").exists()


def test_import_http_client_from_repo_root_gets_the_standard_library():
    code = ("import http, http.client, greensq.http.nsqd_app as app; "
            "print(http.__file__); print(http.client.__file__); print(app.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    http_init, http_client, app_file = (Path(p).resolve() for p in result.stdout.split())
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert http_init == stdlib / "http" / "__init__.py"
    assert http_client == stdlib / "http" / "client.py"
    assert app_file == REPO / "http" / "nsqd_app.py"


def test_log_lines_read_like_nsqs(nsqd_factory, lookupd_factory):
    lookupd = lookupd_factory()
    nsqd = nsqd_factory(f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}")
    nsqd.wait_for_log(r"LOOKUPD\(127\.0\.0\.1:\d+\): peer info \{TCPPort:%d HTTPPort:%d "
                      r"Version:1\.3\.0 BroadcastAddress:\S+\}$" % (lookupd.tcp_port,
                                                                     lookupd.http_port))
    assert post(nsqd.http_port, "/topic/create?topic=logged") == 200
    assert post(nsqd.http_port, "/channel/create?topic=logged&channel=ch") == 200
    nsqd.wait_for_log(r"INFO: LOOKUPD\(127\.0\.0\.1:\d+\): topic REGISTER logged$")
    nsqd.wait_for_log(r"INFO: LOOKUPD\(127\.0\.0\.1:\d+\): channel REGISTER logged ch$")
    send_bad_magic(nsqd.tcp_port)
    nsqd.wait_for_log(r"INFO: CLIENT\(127\.0\.0\.1:\d+\): desired protocol magic 'XXXX'$")
    nsqd.wait_for_log(r"ERROR: client\(127\.0\.0\.1:\d+\) bad protocol magic 'XXXX'$")
    assert post(nsqd.http_port, "/channel/delete?topic=logged&channel=ch") == 200
    nsqd.wait_for_log(r"INFO: TOPIC\(logged\): deleting channel ch$")
    nsqd.wait_for_log(r"INFO: LOOKUPD\(127\.0\.0\.1:\d+\): channel UNREGISTER logged ch$")
    lookupd.wait_for_log(r"INFO: CLIENT\(127\.0\.0\.1:\d+\): IDENTIFY Address:\S+ "
                         r"TCP:%d HTTP:%d Version:1\.3\.0$" % (nsqd.tcp_port, nsqd.http_port))
    assert nsqd.stop() == 0
    nsqd.wait_for_log(r"INFO: NSQ: bye$")
