"""Killing the PID that was started ends the whole daemon at once.

Test harnesses and supervisors SIGKILL the process they started and start the next one on
the same fixed ports straight away, often with another configuration. A worker that
outlived its arbiter would keep the ports (the next start fails with "address already in
use") or answer with the previous configuration. Each test loops: start on fixed ports,
SIGKILL the started PID only, start again at once with different flags, check that the
new process is the one answering.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from certs import Certs
from support import Daemon, V1Client, children, nsqlookupd_daemon, wait_until
from test_process import REPO, free_port, ping

pytestmark = pytest.mark.slow   # starts daemon processes

ROUNDS = 6


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def alive(pid):
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def kill_started_pid(daemon):
    """SIGKILL only the PID we started, as a harness does; return its children's PIDs."""
    workers = children(daemon.proc.pid)
    daemon.proc.kill()
    daemon.proc.wait()
    return workers


@pytest.mark.parametrize("http_workers", [0, 2], ids=lambda count: f"http-workers={count}")
def test_nsqd_killed_then_restarted_on_the_same_ports_with_new_flags(tmp_path, certs,
                                                                     http_workers):
    tcp, http, https = free_port(), free_port(), free_port()
    data_path = tmp_path / "data"
    previous_workers, internal_directories = [], set()
    for round_number in range(ROUNDS):
        max_msg_size = 1000 + round_number
        daemon = Daemon(
            data_path, [f"--tls-cert={certs.server_cert}", f"--tls-key={certs.server_key}",
                        f"--https-address=127.0.0.1:{https}", f"--max-msg-size={max_msg_size}",
                        f"--http-workers={http_workers}"],
            tcp_address=f"127.0.0.1:{tcp}", http_address=f"127.0.0.1:{http}")
        daemon.start()
        try:
            assert get_json(http, "/config/max_msg_size") == max_msg_size, daemon.log_text()
            if http_workers:
                internal_directories.add(daemon.wait_for_log(
                    r"INTERNAL: listening on (\S+)/tcp\.sock").group(1))
        finally:
            previous_workers = kill_started_pid(daemon)
        assert len(previous_workers) == 1 + http_workers, previous_workers
    # The internal sockets' directory a killed daemon left is the next one's, not a new one.
    assert len(internal_directories) == (1 if http_workers else 0), internal_directories
    # The last round's worker went with its arbiter too.
    wait_until(lambda: not any(alive(pid) for pid in previous_workers), timeout=5,
               message="the killed daemon's worker to be gone")


def test_nsqlookupd_killed_then_restarted_on_the_same_ports_with_new_flags(tmp_path):
    tcp, http = free_port(), free_port()
    for round_number in range(ROUNDS):
        address = f"round{round_number}.example"
        daemon = nsqlookupd_daemon(
            tmp_path, [f"--broadcast-address={address}"],
            tcp_address=f"127.0.0.1:{tcp}", http_address=f"127.0.0.1:{http}")
        daemon.start()
        try:
            client = V1Client(tcp)
            assert client.identify()["broadcast_address"] == address
            client.close()
            # nsqlookupd keeps no data: a topic from an earlier round means an old worker.
            assert get_json(http, "/topics")["topics"] in ([], None)
            request = urllib.request.Request(
                f"http://127.0.0.1:{http}/topic/create?topic=round{round_number}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        finally:
            kill_started_pid(daemon)


def test_gunicorn_command_killed_ends_its_worker(tmp_path):
    tcp_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
         "-b", f"127.0.0.1:{http_port}", "greensq.http.nsqd_app:app"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ,
                 NSQD_OPTS=f"--tcp-address=127.0.0.1:{tcp_port} --data-path={tmp_path}"))
    workers = []
    try:
        wait_until(lambda: ping(http_port) or proc.poll() is not None, timeout=20,
                   message="/ping")
        assert proc.poll() is None
        workers = children(proc.pid)
        assert len(workers) == 1
        # A stopped worker cannot notice on its own that its arbiter died: only the
        # kernel's parent-death signal can end it.
        os.kill(workers[0], signal.SIGSTOP)
    finally:
        proc.kill()   # the arbiter alone: its worker must go by itself
        proc.wait()
    try:
        wait_until(lambda: not alive(workers[0]), timeout=5,
                   message="the gunicorn worker to be gone with its arbiter")
    finally:
        if alive(workers[0]):
            os.kill(workers[0], signal.SIGKILL)
