"""deploy/ for real: ansible-playbook site.yml over SSH onto three hosts made on this machine
(network namespaces on a private bridge, each with its own sshd and directories: see
tests/deploy_lab/lab.py), then the cluster checked over the hosts' addresses as clients see it.

One deploy is shared by every test here (a module fixture); the tests run in order on
one xdist worker (see ONE_WORKER_MODULES in conftest.py). Without root, namespaces or sshd
they are skipped.
"""

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from greensq.services.shared.compiled import MODULES
from certs import Certs
from deploy_lab.cluster import (ADMIN_USER, BIN, GO_DATA_PATH, LOOKUPD_HTTP, NSQADMIN_HTTP,
                                NSQD_HTTP, NSQD_HTTPS, NSQD_TCP, REPO, SCRIPTS, Cluster,
                                example_groups, http_json, http_ok, write_nsq_data_directory)
from deploy_lab.lab import HOST_PYTHON, Lab, missing_requirements
from support import FRAME_RESPONSE, V2Client, wait_until

pytestmark = pytest.mark.slow   # network hosts with sshd, then ansible-playbook

LEGACY_TOPIC, LEGACY_CHANNEL = "legacy", "archive"
LEGACY_BODIES = [f"from-go-nsqd-{i}" for i in range(40)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        pytest.skip(f"deploy tests build hosts on this machine: {reason}")
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed (pip install -e '.[test]')")
    workdir = tmp_path_factory.mktemp("deploy")
    with Lab(workdir, sorted(set().union(*example_groups().values()))) as lab:
        certs = Certs(workdir / "certs", server_ip=lab["nsq-2.example.com"].address)
        cluster = Cluster(lab, workdir, certs)
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
    publisher, consumer = cluster.lab["nsq-1.example.com"], cluster.lab["nsq-3.example.com"]
    bodies = [f"hello from {publisher.name} #{i}" for i in range(5)]
    cluster.publish_on(publisher, "deploy_check", bodies)
    received = cluster.consume_on(consumer, "deploy_check", "check", count=len(bodies))
    assert received == sorted(bodies)


def test_nsqadmin_lists_every_node(cluster):
    expected = sorted(host.address for host in cluster.nsqd_hosts)

    def listed():
        nodes = http_json(cluster.nsqadmin_host.address, NSQADMIN_HTTP, "/api/nodes")["nodes"]
        return sorted(node["broadcast_address"] for node in nodes) == expected

    wait_until(listed, timeout=30, message="every nsqd in nsqadmin's /api/nodes")


def test_hosts_run_greensq_s_compiled_wheel(cluster):
    """The controller compiles greensq's hot modules into its wheel (services/shared/
    compiled.py), and the hosts run them."""
    [wheel] = (cluster.workdir / "wheelhouse").glob("greensq-*.whl")
    compiled_modules = [name for name in zipfile.ZipFile(wheel).namelist()
                        if "/_c_" in name and name.endswith(".so")]
    assert len(compiled_modules) == len(MODULES), compiled_modules
    for host in cluster.nsqd_hosts:
        banner = host.ssh("/opt/greensq/venv/bin/nsqd --version").stdout
        assert banner.endswith("-compiled)\n"), (host.name, banner)


def test_second_run_changes_nothing(cluster):
    run = cluster.playbook("site.yml").check()
    print(f"\nsecond run of site.yml: {run.seconds:.1f} s")
    changed = {host: counts["changed"] for host, counts in run.recap.items() if counts["changed"]}
    assert not changed, run.output[-20000:]
    assert set(run.recap) >= {host.name for host in cluster.lab.hosts}


def test_playbook_stops_first_when_the_controller_s_python_differs(cluster, tmp_path):
    # a controller Python of another minor version, as far as the playbook can tell
    other_python = tmp_path / "python3.99"
    other_python.write_text("#!/bin/sh\necho 3.99\n")
    other_python.chmod(0o755)
    host_version = subprocess.run(
        [HOST_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True).stdout.strip()
    run = cluster.playbook("site.yml", "-e", f"greensq_wheel_python={other_python}")
    assert run.returncode != 0
    hosts = "; ".join(f"{host.name} has Python {host_version} ({HOST_PYTHON})"
                      for host in sorted(cluster.lab.hosts, key=lambda host: host.name))
    message = (f"{hosts}; the controller builds the wheels with Python 3.99 ({other_python}): "
               "use the same Python minor version on the controller and the hosts")
    assert f'"msg": "{message}"' in run.output, run.output[-20000:]
    assert "TASK [Build greensq's wheels]" not in run.output
    assert all(counts["changed"] == 0 for counts in run.recap.values()), run.output[-20000:]


def test_nsqd_serves_tls_with_the_certificate_it_was_given(cluster):
    host, certs = cluster.tls_host, cluster.certs
    modes = host.ssh("stat -c '%n %U %G %a' /etc/greensq/tls/nsqd.crt /etc/greensq/tls/nsqd.key")
    assert modes.stdout.splitlines() == ["/etc/greensq/tls/nsqd.crt root nsq 644",
                                         "/etc/greensq/tls/nsqd.key root nsq 640"]
    context = ssl.create_default_context(cafile=certs.ca)
    client = V2Client(sock=socket.create_connection((host.address, NSQD_TCP), timeout=10))
    try:
        assert client.identify(feature_negotiation=True, tls_v1=True)["tls_v1"] is True
        client.sock = context.wrap_socket(client.sock, server_hostname=host.address)
        assert client.read_frame() == (FRAME_RESPONSE, b"OK")
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.pub("over_tls", b"sealed") == (FRAME_RESPONSE, b"OK")
    finally:
        client.close()
    with urllib.request.urlopen(f"https://{host.address}:{NSQD_HTTPS}/ping", timeout=10,
                                context=context) as resp:
        assert resp.read() == b"OK"
    # TLS is offered, not required: plain clients and HTTP keep working
    assert http_ok(host.address, NSQD_HTTP, "/ping")


def test_nsqd_that_requires_tls_is_checked_over_https(cluster):
    host = cluster.tls_host
    try:
        # the role waits for /ping over HTTPS here: plain HTTP answers 403 from now on
        cluster.playbook("site.yml", "--limit", host.name, "-e", "nsqd_tls_required=true").check()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{host.address}:{NSQD_HTTP}/ping", timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read())["message"] == "TLS_REQUIRED"
    finally:
        cluster.playbook("site.yml", "--limit", host.name).check()
    assert http_ok(host.address, NSQD_HTTP, "/ping")


def test_nsqadmin_lets_only_its_admin_user_act(cluster):
    admin = cluster.nsqadmin_host
    cluster.publish_on(cluster.lab["nsq-1.example.com"], "guarded", ["one"])

    def pause(headers):
        request = urllib.request.Request(
            f"http://{admin.address}:{NSQADMIN_HTTP}/api/topics/guarded", method="POST",
            data=json.dumps({"action": "pause"}).encode(),
            headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert pause({}) == 403
    assert pause({"X-Forwarded-User": "mallory"}) == 403
    assert pause({"X-Forwarded-User": ADMIN_USER}) == 200
    stats = http_json(cluster.lab["nsq-1.example.com"].address, NSQD_HTTP,
                      "/stats?format=json&topic=guarded")
    assert stats["topics"][0]["paused"] is True


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
    received = cluster.consume_on(cluster.lab["nsq-1.example.com"], LEGACY_TOPIC,
                                  LEGACY_CHANNEL, count=len(LEGACY_BODIES))
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


def test_upgrade_one_nsqd_at_a_time_that_turns_replication_on(cluster, tmp_path):
    """Last: one run of site.yml installs a newer greensq, restarting one nsqd at a time,
    and turns nsqd_replication on for the whole inventory: each nsqd's replica is the
    next nsqd host (the last one's the first), up, and nsqadmin shows it."""
    source, version = release_of_this_checkout(tmp_path / "greensq")
    started = {host.name: nsqd_start_time(host) for host in cluster.nsqd_hosts}
    run = cluster.playbook("site.yml", "-e", "nsqd_serial=1", "-e", "nsqd_replication=true",
                           "-e", json.dumps({"greensq_package": str(source)})).check()
    print(f"\nupgrade of {len(cluster.lab.hosts)} hosts, nsqd one at a time, replication "
          f"turned on: {run.seconds:.1f} s")
    assert run.output.count("PLAY [Install and run nsqd]") == len(cluster.nsqd_hosts)
    for host in cluster.nsqd_hosts:
        banner = host.ssh("/opt/greensq/venv/bin/nsqd --version").stdout
        assert f"greensq-{version}" in banner
        assert nsqd_start_time(host) > started[host.name], f"nsqd on {host.name} kept running"
    hosts = cluster.nsqd_hosts
    for host, replica in zip(hosts, hosts[1:] + hosts[:1]):
        def replicas():
            stats = http_json(host.address, NSQD_HTTP, "/stats?format=json")
            return [(r["address"], r["state"]) for r in stats["replication"]["replicas"]]
        wait_until(lambda: replicas() == [(f"{replica.address}:{NSQD_TCP}", "up")],
                   timeout=60, message=f"{host.name}'s replica {replica.name} up")
    expected = {host.address: f"{replica.address}:{NSQD_TCP}"
                for host, replica in zip(hosts, hosts[1:] + hosts[:1])}

    def listed():
        nodes = http_json(cluster.nsqadmin_host.address, NSQADMIN_HTTP, "/api/nodes")["nodes"]
        return {node["broadcast_address"]: node.get("replication", {}).get(
                    "replicas", [{}])[0].get("address") for node in nodes} == expected

    wait_until(listed, timeout=30, message="every nsqd's replica in nsqadmin's /api/nodes")


def release_of_this_checkout(destination):
    """A copy of this checkout whose version is one step on: a new greensq to upgrade to.
    Its build/ comes along (times kept), so the wheel's compiled modules, whose sources
    the new version leaves alone, are not compiled again; the extensions an editable
    install put beside the sources stay behind."""
    skip_outside_build = shutil.ignore_patterns(
        ".*", "*.egg-info", "wheelhouse", "__pycache__", "tests", "bench", "data", "*.so")

    def ignored(directory, names):
        if Path(directory).relative_to(REPO).parts[:1] == ("build",):
            return set()
        return skip_outside_build(directory, names)

    shutil.copytree(REPO, destination, ignore=ignored, symlinks=True)
    version_file = destination / "services" / "shared" / "version.py"
    text = version_file.read_text()
    current = re.search(r'^__version__ = "(.+)"$', text, re.MULTILINE).group(1)
    upgraded = current + (".upgrade" if "+" in current else "+upgrade")
    version_file.write_text(text.replace(f'__version__ = "{current}"',
                                         f'__version__ = "{upgraded}"'))
    return destination, upgraded


def nsqd_start_time(host):
    return http_json(host.address, NSQD_HTTP, "/stats?format=json")["start_time"]
