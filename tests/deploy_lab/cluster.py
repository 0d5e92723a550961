"""A greensq cluster deployed by deploy/'s playbooks onto a Lab, and how to look at it.

The inventory is deploy/inventory/example as it is (nsqlookupd and nsqd on each of its
three hosts, nsqadmin on the first), with a second inventory that makes the lab's hosts
of those names reachable and sets what the lab needs: the hosts have no systemd, so
supervisord runs the daemons; nsq-3 starts with an nsqd data directory in NSQ's format,
owned by root, which the nsqd role takes over, and keeps no message in memory
(mem_queue_size 0), so what it holds is on disk even when its nsqd is killed; nsq-2's
nsqd has a TLS certificate and key (made by the test); nsqadmin listens on the lab's
network and lets one admin user act.
"""

import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EXAMPLE_INVENTORY = DEPLOY / "inventory" / "example" / "hosts.yml"
BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parent

VENV_PYTHON = "/opt/greensq/venv/bin/python"
SUPERVISORCTL = ("/opt/greensq/venv/bin/supervisorctl"
                 " --configuration=/etc/greensq/supervisord.conf")
GO_DATA_PATH = "/var/lib/nsq"
NSQD_TCP, NSQD_HTTP, NSQD_HTTPS, LOOKUPD_HTTP, NSQADMIN_HTTP = 4150, 4151, 4152, 4161, 4171
ADMIN_USER = "ops"

_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                    re.MULTILINE)


@dataclass
class PlaybookRun:
    """One ansible-playbook run: exit code, output, time, and its PLAY RECAP per host."""

    returncode: int
    output: str
    seconds: float
    recap: dict = field(default_factory=dict)

    def __post_init__(self):
        for host, ok, changed, unreachable, failed in _RECAP.findall(self.output):
            self.recap[host] = {"ok": int(ok), "changed": int(changed),
                                "unreachable": int(unreachable), "failed": int(failed)}

    def check(self):
        assert self.returncode == 0 and self.recap, self.output[-20000:]
        return self


def http_json(address, port, path, timeout=5):
    with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


def http_ok(address, port, path, timeout=5):
    """Whether a GET answers 200 (False when nothing listens yet)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def example_groups():
    """The example inventory's groups: ``{group: [host name, ...]}``."""
    groups = yaml.safe_load(EXAMPLE_INVENTORY.read_text())["all"]["children"]
    return {group: list(found["hosts"]) for group, found in groups.items()}


class Cluster:
    def __init__(self, lab, workdir, certs):
        groups = example_groups()
        self.lab = lab
        self.workdir = Path(workdir)
        self.lookupd_hosts = [lab[name] for name in groups["nsqlookupd"]]
        self.nsqd_hosts = [lab[name] for name in groups["nsqd"]]
        (self.nsqadmin_host,) = [lab[name] for name in groups["nsqadmin"]]
        self.taking_over = lab["nsq-3.example.com"]
        self.tls_host = lab["nsq-2.example.com"]
        self.certs = certs
        self.inventory = self.workdir / "lab-inventory.yml"

    @property
    def lookupd_http_addresses(self):
        return [f"{host.address}:{LOOKUPD_HTTP}" for host in self.lookupd_hosts]

    @property
    def nsqd_tcp_addresses(self):
        return [f"{host.address}:{NSQD_TCP}" for host in self.nsqd_hosts]

    def write_inventory(self):
        """The lab's inventory, read after the example's: how to reach each host, and the
        lab's settings as host variables (which outrank the example's group_vars)."""
        lab = self.lab
        # supervisord raises its open-file limit to this; the lab's hosts cannot go past
        # this machine's hard limit
        nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        hosts = {host.name: dict(lab.host_vars(host), greensq_service_manager="supervisor",
                                 greensq_limit_nofile=nofile) for host in lab.hosts}
        hosts[self.taking_over.name].update(nsqd_takeover_data_path=GO_DATA_PATH,
                                            nsqd_mem_queue_size=0)
        hosts[self.tls_host.name].update(nsqd_tls_cert_file=self.certs.server_cert,
                                         nsqd_tls_key_file=self.certs.server_key)
        hosts[self.nsqadmin_host.name].update(nsqadmin_http_address=f"0.0.0.0:{NSQADMIN_HTTP}",
                                              nsqadmin_admin_users=[ADMIN_USER])
        inventory = {
            "all": {"vars": {"greensq_wheelhouse_dir": str(self.workdir / "wheelhouse"),
                             "ansible_become": False}},
            "lab": {"hosts": hosts}}
        self.inventory.write_text(json.dumps(inventory, indent=1))   # JSON is YAML

    def playbook(self, name, *args):
        env = dict(os.environ,
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                   ANSIBLE_CONFIG=str(DEPLOY / "ansible.cfg"),
                   ANSIBLE_HOME=str(self.workdir / "ansible"),
                   ANSIBLE_LOCAL_TEMP=str(self.workdir / "ansible" / "tmp"),
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.workdir / "cp"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
        started = time.monotonic()
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(EXAMPLE_INVENTORY),
                               "-i", str(self.inventory), name, *args],
                              cwd=DEPLOY, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=900)
        return PlaybookRun(proc.returncode, proc.stdout, time.monotonic() - started)

    def close_ssh_masters(self):
        """End the SSH connections that Ansible keeps open (ControlPersist) to the hosts."""
        for host in self.lab.hosts:
            subprocess.run(["ssh", "-o", f"ControlPath={self.workdir / 'cp'}/%C", "-O", "exit",
                            f"root@{host.address}"], capture_output=True, timeout=30)

    def run_script(self, host, script, config, timeout=120):
        """Run one of this folder's scripts on ``host`` with the greensq it has installed;
        its JSON output."""
        command = f"{VENV_PYTHON} - {shlex.quote(json.dumps(config))}"
        proc = host.ssh(command, input=(SCRIPTS / script).read_text(), timeout=timeout)
        return json.loads(proc.stdout)

    def publish_on(self, host, topic, bodies):
        """Publish from ``host`` to the nsqd beside it (127.0.0.1), as a local service does."""
        code = ("import sys\nfrom greensq.client import Producer\n"
                "Producer(['127.0.0.1:4150']).multi_publish(sys.argv[1], "
                "[line.encode() for line in sys.stdin.read().splitlines()])\n")
        host.ssh(f"{VENV_PYTHON} -c {shlex.quote(code)} {shlex.quote(topic)}",
                 input="\n".join(bodies) + "\n")

    def consume_on(self, host, topic, channel, count, timeout=60):
        """The distinct bodies a consumer on ``host`` gets through the lookupds."""
        return self.run_script(host, "consume.py", {
            "topic": topic, "channel": channel, "lookupd": self.lookupd_http_addresses,
            "count": count, "timeout": timeout}, timeout=timeout + 60)

    def supervised_pid(self, host, program):
        """The PID supervisord gives for ``program`` on ``host``, or None."""
        out = host.ssh(f"{SUPERVISORCTL} pid {program}", check=False).stdout.strip()
        return int(out) if out.isdigit() and int(out) > 0 else None

    def channel_depth(self, host, topic, channel):
        stats = http_json(host.address, NSQD_HTTP, "/stats?format=json")
        for entry in stats["topics"]:
            if entry["topic_name"] == topic:
                for ch in entry["channels"]:
                    if ch["channel_name"] == channel:
                        return ch["depth"]
        return None


def write_nsq_data_directory(path, topic, channel, bodies):
    """An nsqd data directory in NSQ's on-disk format holding ``bodies`` on a channel, as a
    Go nsqd would leave it: written by a real nsqd that is then stopped. Owned by root."""
    from support import Daemon

    daemon = Daemon(path).start()
    try:
        for action in (f"/topic/create?topic={topic}",
                       f"/channel/create?topic={topic}&channel={channel}"):
            status, _, body = daemon.http("POST", action)
            assert status == 200, body
        status, _, body = daemon.http("POST", f"/mpub?topic={topic}", "\n".join(bodies))
        assert status == 200, body
    finally:
        assert daemon.stop() == 0, daemon.log_text()
    os.chmod(path, 0o700)
