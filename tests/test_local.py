"""greensq-local, the development cluster of the README's first command: its options, the
addresses it listens on, where it keeps data, and what it says when it cannot start.

The cluster uses NSQ's fixed ports, so each run is in a private network namespace (the
``netns`` fixture), where the host's own 4150 or 4171 do not matter.
"""

import json
import signal
import subprocess
import sys

import pytest

from support import CommandProcess, wait_until

LOCAL = [sys.executable, "-m", "greensq.http.local"]
LOOPBACK_PORTS = {f"127.0.0.1:{port}" for port in (4150, 4151, 4160, 4161, 4171)}

pytestmark = pytest.mark.slow   # runs greensq-local and its daemons


def http_in(netns, method, url):
    """The body of one HTTP request made inside the namespace."""
    code = ("import sys, urllib.request as r; "
            "q = r.Request(sys.argv[2], method=sys.argv[1], "
            "data=b'' if sys.argv[1] == 'POST' else None); "
            "sys.stdout.write(r.urlopen(q, timeout=10).read().decode())")
    done = subprocess.run(netns.enter([sys.executable, "-c", code, method, url]),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_local(netns, cwd, *args):
    return CommandProcess(netns.enter([*LOCAL, *args]), cwd=cwd).start()


def test_help_lists_the_options_and_exits_0():
    done = subprocess.run([*LOCAL, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.startswith("Usage of greensq-local:\n")
    assert "  -data-path string\n" in done.stderr and "  -address string\n" in done.stderr


def test_an_unknown_argument_is_a_flag_error():
    done = subprocess.run([*LOCAL, "--port=1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("flag provided but not defined: -port\nUsage of greensq-local:")


def test_listens_on_loopback_only_and_keeps_data_under_data_path(netns, tmp_path):
    local = start_local(netns, tmp_path, "--data-path=store")
    try:
        wait_until(lambda: netns.listening() == LOOPBACK_PORTS, timeout=60,
                   message="every daemon listening on 127.0.0.1 only")
        assert local.stdout_lines() == ["nsqadmin: http://127.0.0.1:4171/"]
        http_in(netns, "POST", "http://127.0.0.1:4151/topic/create?topic=kept")
        # nsqd registers the address it listens on, so lookupd's consumers can reach it.
        wait_until(lambda: "kept" in http_in(netns, "GET", "http://127.0.0.1:4161/topics"),
                   message="nsqd to register the topic with nsqlookupd")
        producers = json.loads(http_in(netns, "GET", "http://127.0.0.1:4161/nodes"))["producers"]
        assert [(p["broadcast_address"], p["tcp_port"]) for p in producers] == [("127.0.0.1",
                                                                                4150)]
        assert http_in(netns, "GET", "http://127.0.0.1:4171/ping") == "OK"
    finally:
        status = local.stop(signal.SIGINT, timeout=60)
    assert status == 0, local.log_text()
    assert netns.listening() == set()
    metadata = json.loads((tmp_path / "store" / "nsqd" / "nsqd.dat").read_text())
    assert [topic["name"] for topic in metadata["topics"]] == ["kept"]


def test_a_port_in_use_is_named_in_one_line_and_nothing_starts(netns, tmp_path):
    holder = CommandProcess(netns.enter([
        sys.executable, "-c",
        "import signal, socket; s = socket.create_server(('127.0.0.1', 4150)); "
        "signal.pause()"])).start()
    try:
        wait_until(lambda: netns.listening() == {"127.0.0.1:4150"}, message="the port taken")
        done = subprocess.run(netns.enter(LOCAL), cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == ("greensq-local: nsqd cannot listen on port 4150 (TCP) of "
                               "127.0.0.1: address already in use (is another NSQ running?)\n")
        assert netns.listening() == {"127.0.0.1:4150"}
    finally:
        holder.kill()


def test_a_daemon_that_exits_stops_the_others(netns, tmp_path, nsqd_factory):
    nsqd_factory(data_path=tmp_path / "store" / "nsqd")   # outside: holds the data's lock
    local = start_local(netns, tmp_path, "--data-path=store")
    assert local.wait(timeout=60) == 1
    assert "greensq-local: nsqd exited with status 1; stopping the others" in local.log_text()
    assert netns.listening() == set()
