"""deploy/ for real: ansible-playbook site.yml over SSH onto three hosts made on this machine
(network namespaces on a private bridge, each with its own sshd and directories: see
tests/deploy_lab/lab.py), then the cluster checked over the hosts' addresses as clients see it.

One deploy is shared by every test here (a module fixture); the tests run in order on
one xdist worker (see ONE_WORKER_MODULES in conftest.py). Without root, namespaces or sshd
they are skipped.
"""

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import threading

import pytest

from deploy_lab.cluster import (BIN, GO_DATA_PATH, LOOKUPD_HTTP, NSQADMIN_HTTP, NSQD_HTTP,
                                REPO, SCRIPTS, Cluster, http_json, http_ok,
                                write_nsq_data_directory)
from deploy_lab.lab import Lab, missing_requirements
from support import wait_until

pytestmark = pytest.mark.slow   # network hosts with sshd, then ansible-playbook

LEGACY_TOPIC, LEGACY_CHANNEL = "legacy", "archive"
LEGACY_BODIES = [f"from-go-nsqd-{i}" for i in range(40)]


def greensq_has_nsqadmin():
    return any(ep.name == "nsqadmin" and ep.dist.name == "greensq"
               for ep in importlib.metadata.entry_points(group="console_scripts"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        pytest.skip(f"deploy tests build hosts on this machine: {reason}")
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed (pip install -e '.[test]')")
    workdir = tmp_path_factory.mktemp("deploy")
    with Lab(workdir, ["h1", "h2", "h3"]) as lab:
        cluster = Cluster(lab, workdir, with_nsqadmin=greensq_has_nsqadmin())
        write_nsq_data_directory(cluster.taking_over.path(GO_DATA_PATH), LEGACY_TOPIC,
                                 LEGACY_CHANNEL, LEGACY_BODIES)
        cluster.write_inventory()
        try:
            run = cluster.playbook("site.yml").check()
            print(f"\nfull deploy of {len(lab.hosts)} hosts: {run.seconds:.1f} s")
            yield cluster
        finally:
            cluster.close_ssh_masters()


def test_every_nsqd_is_registered_with_every_lookupd(cluster):
    expected = sorted(host.address for host in cluster.nsqd_hosts)
    for lookupd in cluster.lookupd_hosts:
        def registered():
            nodes = http_json(lookupd.address, LOOKUPD_HTTP, "/nodes")["producers"]
            return sorted(node["broadcast_address"] for node in nodes) == expected
        wait_until(registered, timeout=30, message=f"every nsqd on {lookupd.name}'s /nodes")
    lookupd_tcp = sorted(f"{host.address}:4160" for host in cluster.lookupd_hosts)
    for nsqd in cluster.nsqd_hosts:
        configured = http_json(nsqd.address, NSQD_HTTP, "/config/nsqlookupd_tcp_addresses")
        assert sorted(configured) == lookupd_tcp


def test_message_published_on_one_host_is_consumed_through_lookupd_on_another(cluster):
    publisher, consumer = cluster.lab["h1"], cluster.lab["h3"]
    bodies = [f"hello from {publisher.name} #{i}" for i in range(5)]
    cluster.publish_on(publisher, "deploy_check", bodies)
    received = cluster.consume_on(consumer, "deploy_check", "check", count=len(bodies))
    assert received == sorted(bodies)


def test_nsqadmin_lists_every_node(cluster):
    if cluster.nsqadmin_host is None:
        pytest.skip("the installed greensq has no nsqadmin console script yet; "
                    "the nsqadmin role is linted but not deployed")
    expected = sorted(host.address for host in cluster.nsqd_hosts)

    def listed():
        nodes = http_json(cluster.nsqadmin_host.address, NSQADMIN_HTTP, "/api/nodes")["nodes"]
        return sorted(node["broadcast_address"] for node in nodes) == expected

    wait_until(listed, timeout=30, message="every nsqd in nsqadmin's /api/nodes")


def test_second_run_changes_nothing(cluster):
    run = cluster.playbook("site.yml").check()
    print(f"\nsecond run of site.yml: {run.seconds:.1f} s")
    changed = {host: counts["changed"] for host, counts in run.recap.items() if counts["changed"]}
    assert not changed, run.output[-20000:]
    assert set(run.recap) >= {host.name for host in cluster.lab.hosts}


def test_go_data_directory_is_taken_over(cluster):
    host = cluster.taking_over
    owners = host.ssh(f"find {GO_DATA_PATH} -printf '%u\\n' | sort -u").stdout.split()
    assert owners == ["nsq"]
    assert cluster.channel_depth(host, LEGACY_TOPIC, LEGACY_CHANNEL) == len(LEGACY_BODIES)


def test_killed_nsqd_is_restarted_with_its_data(cluster):
    host = cluster.taking_over
    killed = cluster.supervised_pid(host, "nsqd")
    assert killed is not None
    host.ssh(f"kill -KILL {killed}")

    def restarted():
        pid = cluster.supervised_pid(host, "nsqd")
        if pid in (None, killed):
            return False
        return http_ok(host.address, NSQD_HTTP, "/ping")

    wait_until(restarted, timeout=60, interval=0.2, message="supervisord to restart nsqd")
    assert cluster.channel_depth(host, LEGACY_TOPIC, LEGACY_CHANNEL) == len(LEGACY_BODIES)
    received = cluster.consume_on(cluster.lab["h1"], LEGACY_TOPIC, LEGACY_CHANNEL,
                                  count=len(LEGACY_BODIES))
    assert received == sorted(LEGACY_BODIES)


class Traffic:
    """traffic.py in a subprocess on the controller, its progress lines read by a thread."""

    def __init__(self, cluster):
        config = {"nsqd": cluster.nsqd_tcp_addresses, "lookupd": cluster.lookupd_http_addresses,
                  "topic": "rolling", "channel": "steady", "interval": 0.02,
                  "drain_timeout": 120}
        self.proc = subprocess.Popen([sys.executable, str(SCRIPTS / "traffic.py"),
                                      json.dumps(config)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.last = {"acked": 0, "received": 0}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.last = json.loads(line)

    def wait_for(self, acked, received, timeout=60):
        wait_until(lambda: self.last["acked"] >= acked and self.last["received"] >= received,
                   timeout=timeout, interval=0.2,
                   message=f"traffic to reach {acked} acked, {received} received: {self.last}")

    def stop(self):
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        wait_until(lambda: self.last.get("done") or self.proc.poll() is not None,
                   timeout=180, interval=0.2, message="traffic.py's final report")
        self.proc.wait(timeout=30)
        return self.last

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_rolling_restart_loses_no_acknowledged_message(cluster):
    started = {host.name: nsqd_start_time(host) for host in cluster.nsqd_hosts}
    traffic = Traffic(cluster)
    try:
        traffic.wait_for(acked=50, received=50)
        run = cluster.playbook("rolling-restart.yml").check()
        print(f"\nrolling restart of {len(cluster.nsqd_hosts)} nsqd: {run.seconds:.1f} s")
        after_restart = traffic.last["acked"]
        traffic.wait_for(acked=after_restart + 50, received=after_restart + 50)
        report = traffic.stop()
    finally:
        traffic.kill()
    assert report.get("done"), report
    assert report["missing"] == [], report
    for host in cluster.nsqd_hosts:
        assert nsqd_start_time(host) > started[host.name], f"nsqd on {host.name} was not restarted"


def test_upgrade_replaces_greensq_one_nsqd_at_a_time(cluster, tmp_path):
    source, version = release_of_this_checkout(tmp_path / "greensq")
    started = {host.name: nsqd_start_time(host) for host in cluster.nsqd_hosts}
    run = cluster.playbook("site.yml", "-e", "nsqd_serial=1",
                           "-e", json.dumps({"greensq_package": str(source)})).check()
    print(f"\nupgrade of {len(cluster.lab.hosts)} hosts, nsqd one at a time: {run.seconds:.1f} s")
    assert run.output.count("PLAY [Install and run nsqd]") == len(cluster.nsqd_hosts)
    for host in cluster.nsqd_hosts:
        banner = host.ssh("/opt/greensq/venv/bin/nsqd --version").stdout
        assert f"greensq-{version}" in banner
        assert nsqd_start_time(host) > started[host.name], f"nsqd on {host.name} kept running"


def release_of_this_checkout(destination):
    """A copy of this checkout whose version is one step on: a new greensq to upgrade to."""
    shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(
        ".*", "build", "*.egg-info", "wheelhouse", "__pycache__", "tests", "bench", "data"))
    version_file = destination / "services" / "version.py"
    text = version_file.read_text()
    current = re.search(r'^__version__ = "(.+)"$', text, re.MULTILINE).group(1)
    upgraded = current + (".upgrade" if "+" in current else "+upgrade")
    version_file.write_text(text.replace(f'__version__ = "{current}"',
                                         f'__version__ = "{upgraded}"'))
    return destination, upgraded


def nsqd_start_time(host):
    return http_json(host.address, NSQD_HTTP, "/stats?format=json")["start_time"]
