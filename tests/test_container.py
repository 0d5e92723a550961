"""deploy/container/ for real: the image built by podman (runtime runc) on a Debian base
made with mmdebstrap, and compose.yaml brought up by podman-compose on free ports; then
the cluster used from this machine as its programs would use it.

Podman's storage, networks and state live in the test's temporary directory
(tests/container_lab.py). One build and one cluster serve every test here (a module
fixture), so the module runs on one xdist worker, in order (ONE_WORKER_MODULES in
conftest.py). Where podman cannot run the tests are skipped, except under CI, where they
fail.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from container_lab import (REPO, Podman, make_debian_base, missing_requirements,
                           pip_build_secrets)
from deploy_lab.cluster import SCRIPTS
from support import FRAME_RESPONSE, V2Client, cannot_run, free_port, wait_until

pytestmark = pytest.mark.slow   # podman builds an image and runs containers

CONTAINER_DIR = REPO / "deploy" / "container"
BASE_IMAGE = "localhost/debian:bookworm"
IMAGE = "localhost/greensq:latest"     # what compose.yaml names
PROJECT = "greensq"
PROGRAMS = ["nsqd", "nsqlookupd", "nsqadmin", "nsq_to_file", "nsq_to_http", "nsq_to_nsq",
            "nsq_tail", "nsq_stat", "to_nsq"]


class Cluster:
    """compose.yaml's services, run by podman-compose with every port on a free one."""

    def __init__(self, podman):
        self.podman = podman
        self.ports = {name: free_port() for name in (
            "NSQD_TCP_PORT", "NSQD_HTTP_PORT", "NSQLOOKUPD_TCP_PORT", "NSQLOOKUPD_HTTP_PORT",
            "NSQADMIN_HTTP_PORT")}
        self.env = {name: str(port) for name, port in self.ports.items()}

    def compose(self, *args, check=True):
        return self.podman.compose(CONTAINER_DIR / "compose.yaml", PROJECT, self.env, *args,
                                   check=check)

    def url(self, port_name, path):
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"

    def post(self, port_name, path, body=b""):
        request = urllib.request.Request(self.url(port_name, path), data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.read()

    def get_json(self, port_name, path):
        with urllib.request.urlopen(self.url(port_name, path), timeout=5) as resp:
            return json.loads(resp.read())

    def answers(self, port_name):
        try:
            with urllib.request.urlopen(self.url(port_name, "/ping"), timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_until_up(self):
        for port_name in ("NSQLOOKUPD_HTTP_PORT", "NSQD_HTTP_PORT", "NSQADMIN_HTTP_PORT"):
            wait_until(lambda: self.answers(port_name), timeout=60, interval=0.2,
                       message=f"the cluster to answer /ping on {port_name}")

    def channel_depth(self, topic, channel):
        stats = self.get_json("NSQD_HTTP_PORT", f"/stats?format=json&topic={topic}")
        for entry in stats["topics"]:
            for found in entry["channels"]:
                if found["channel_name"] == channel:
                    return found["depth"]
        return None

    def logs(self):
        return "\n".join(self.podman("logs", "--tail", "40", f"{PROJECT}_{service}_1",
                                     check=False).stdout
                         for service in ("nsqlookupd", "nsqd", "nsqadmin"))


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        cannot_run(reason)
    workdir = tmp_path_factory.mktemp("podman")
    podman = Podman(workdir / "podman")
    try:
        started = time.monotonic()
        make_debian_base(podman, BASE_IMAGE)
        made = time.monotonic()
        reason = podman.run_failure(BASE_IMAGE)
        if reason:
            cannot_run(reason)
        podman("build", "--file", str(CONTAINER_DIR / "Containerfile"),
               "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--tag", IMAGE,
               *pip_build_secrets(workdir / "secrets"), str(REPO), timeout=900)
        print(f"\nDebian base image: {made - started:.1f} s, "
              f"greensq image: {time.monotonic() - made:.1f} s")
        yield podman
    finally:
        podman.close()


@pytest.fixture(scope="module")
def cluster(podman):
    cluster = Cluster(podman)
    started = time.monotonic()
    try:
        cluster.compose("up", "--detach", "--no-build")
        cluster.wait_until_up()
        print(f"\ncompose up: {time.monotonic() - started:.1f} s")
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.compose("down", "--volumes", check=False)


def run_offline(podman, *command):
    """A one-off container that needs no network (so none is set up and torn down)."""
    return podman("run", "--rm", "--network=none", IMAGE, *command).stdout


def test_image_runs_the_program_it_is_given_as_a_user_without_privileges(podman):
    # The command names the program, by name or at the root as in NSQ's image.
    for command in ("nsqd", "/nsq_tail"):
        banner = run_offline(podman, command, "--version")
        assert banner.startswith(f"{command.lstrip('/')} v1.3.0 (built w/greensq-"), banner
    every = "; ".join(f"{p} --version; /{p} --version" for p in PROGRAMS)
    banners = run_offline(podman, "sh", "-c", every).splitlines()
    assert [banner.split(" v1.3.0 (built w/greensq-")[0] for banner in banners] == [
        program for program in PROGRAMS for _ in (program, f"/{program}")], banners
    identity = run_offline(podman, "sh", "-c", "id -un; stat -c %U /data")
    assert identity.split() == ["nsq", "nsq"]
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert "/data" in config["Volumes"]


def test_image_keeps_nothing_of_the_build_s_pip_configuration(podman):
    found = run_offline(podman, "sh", "-c", "ls -A /run/secrets /etc/pip.conf /etc/xdg/pip "
                        "2>/dev/null; pip config list")
    assert found.strip() == ""


def test_messages_published_over_http_and_tcp_are_consumed_through_nsqlookupd(cluster):
    http_bodies = [f"over http #{i}" for i in range(3)]
    for body in http_bodies:
        assert cluster.post("NSQD_HTTP_PORT", "/pub?topic=events", body.encode()) == b"OK"
    tcp_bodies = [f"over tcp #{i}" for i in range(3)]
    client = V2Client(cluster.ports["NSQD_TCP_PORT"])
    try:
        client.identify()
        assert client.mpub("events", [body.encode() for body in tcp_bodies]) == \
            (FRAME_RESPONSE, b"OK")
    finally:
        client.close()
    producers = cluster.get_json("NSQLOOKUPD_HTTP_PORT", "/lookup?topic=events")["producers"]
    assert [(p["broadcast_address"], p["tcp_port"]) for p in producers] == \
        [("127.0.0.1", cluster.ports["NSQD_TCP_PORT"])]
    expected = sorted(http_bodies + tcp_bodies)
    assert consume_through_lookupd(cluster, "events", "archive", len(expected)) == expected


def test_nsqadmin_shows_the_node_and_its_topic(cluster):
    def listed():
        nodes = cluster.get_json("NSQADMIN_HTTP_PORT", "/api/nodes")["nodes"]
        return [(n["broadcast_address"], n["http_port"], [t["topic"] for t in n["topics"]])
                for n in nodes]

    wait_until(lambda: listed() == [("127.0.0.1", cluster.ports["NSQD_HTTP_PORT"],
                                     ["events"])],
               timeout=30, interval=0.2, message="nsqadmin to list nsqd and its topic")
    topic = cluster.get_json("NSQADMIN_HTTP_PORT", "/api/topics/events")
    assert topic["message_count"] == 6
    with urllib.request.urlopen(cluster.url("NSQADMIN_HTTP_PORT", "/topics/events"),
                                timeout=5) as resp:
        assert resp.status == 200 and b"events" in resp.read()


def test_restarted_nsqd_keeps_its_data(cluster):
    bodies = [f"kept #{i}" for i in range(20)]
    publish_to_a_new_channel(cluster, "kept", "later", bodies)
    started = cluster.get_json("NSQD_HTTP_PORT", "/stats?format=json")["start_time"]

    cluster.compose("restart", "nsqd")
    wait_until(lambda: cluster.answers("NSQD_HTTP_PORT")
               and cluster.get_json("NSQD_HTTP_PORT", "/stats?format=json")["start_time"]
               != started, timeout=60, interval=0.2, message="nsqd to be back")
    assert cluster.channel_depth("kept", "later") == len(bodies)
    assert consume_through_lookupd(cluster, "kept", "later", len(bodies)) == sorted(bodies)


def test_recreated_nsqd_finds_its_data_in_the_volume(cluster):
    bodies = ["in the volume #1", "in the volume #2"]
    publish_to_a_new_channel(cluster, "volume", "later", bodies)
    cluster.compose("down")          # containers removed, the named volume kept
    assert cluster.podman("ps", "--all", "--quiet").stdout.strip() == ""
    cluster.compose("up", "--detach", "--no-build")
    cluster.wait_until_up()
    assert cluster.channel_depth("volume", "later") == len(bodies)


def publish_to_a_new_channel(cluster, topic, channel, bodies):
    cluster.post("NSQD_HTTP_PORT", f"/topic/create?topic={topic}")
    cluster.post("NSQD_HTTP_PORT", f"/channel/create?topic={topic}&channel={channel}")
    assert cluster.post("NSQD_HTTP_PORT", f"/mpub?topic={topic}",
                        "\n".join(bodies).encode()) == b"OK"


def consume_through_lookupd(cluster, topic, channel, count):
    """The distinct bodies a greensq.client consumer on this machine gets through the
    cluster's nsqlookupd."""
    config = {"topic": topic, "channel": channel, "count": count, "timeout": 30,
              "lookupd": [f"127.0.0.1:{cluster.ports['NSQLOOKUPD_HTTP_PORT']}"]}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "consume.py"), json.dumps(config)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_compose_down_leaves_nothing_behind(cluster):
    cluster.compose("down", "--volumes")
    for listing in (("ps", "--all"), ("volume", "ls"), ("network", "ls")):
        names = cluster.podman(*listing, "--format", "{{.Name}}" if listing[0] != "ps"
                               else "{{.Names}}").stdout.split()
        assert [name for name in names if name != "podman"] == [], (listing, names)
    for port in cluster.ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
