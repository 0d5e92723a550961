"""Hosts for the replication tests: network namespaces on a private bridge, made as
tests/deploy_lab/lab.py makes them, but with no sshd and no files of their own: greensq's
daemons run in a host through ``ip netns exec`` and listen on its address, with data
directories under the test's temporary directory.

A host can die whole (every process SIGKILLed, its link taken down: nothing it held in
memory survives, and its peers hear nothing more from it, not even a reset) and come
back; two hosts can be cut off from each other while both keep running (iptables drops
every packet between them, both ways).
"""

import os
import shutil
import time
import urllib.error
import urllib.request

from deploy_lab.lab import Lab, run

from greensq.http.testing import NSQLOOKUPD_MODULE, Daemon, wait_until

NSQD_TCP, NSQD_HTTP, LOOKUPD_TCP, LOOKUPD_HTTP = 4150, 4151, 4160, 4161


def missing_requirements():
    """Why this machine cannot make the hosts, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bridge, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool!r} on PATH"
    probe = run("ip", "netns", "list", check=False)
    if probe.returncode != 0:
        return "cannot list network namespaces: " + probe.stderr.strip()
    return None


class NetworkLab(Lab):
    """Hosts that are network namespaces on one bridge; the test process reaches them
    from the bridge's address. ``close()`` removes everything, as Lab's does."""

    def __init__(self, workdir, names):
        super().__init__(workdir, names)
        self.cuts = []

    def start(self):
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.links_made.append(self.bridge)
        run("ip", "addr", "add", f"{self.controller_address}/{self.subnet.prefixlen}",
            "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            self.add_to_network(host)
            os.makedirs(host.dir)

    def kill_host(self, host):
        """The host dies: every process in it SIGKILLed, its link down."""
        run("ip", "link", "set", host.veth, "down")
        self.kill_everything_in(host.netns)

    def revive_host(self, host):
        run("ip", "link", "set", host.veth, "up")

    def cut(self, one, other):
        """Drop every packet between two hosts (both stay up for everyone else)."""
        for rule in _drop_rules(other):
            run("ip", "netns", "exec", one.netns, "iptables", "-A", *rule)
        self.cuts.append((one, other))

    def restore(self, one, other):
        for rule in _drop_rules(other):
            run("ip", "netns", "exec", one.netns, "iptables", "-D", *rule)
        self.cuts.remove((one, other))

    def heal(self):
        """Every daemon gone, every link up, no cut left: the hosts as they were made."""
        for host in self.hosts:
            self.kill_everything_in(host.netns)
            self.revive_host(host)
        for one, other in list(self.cuts):
            self.restore(one, other)


def _drop_rules(other):
    return [("INPUT", "-s", other.address, "-j", "DROP"),
            ("OUTPUT", "-d", other.address, "-j", "DROP")]


class HostDaemon(Daemon):
    """A greensq daemon in a lab host, on the host's address and NSQ's ports."""

    def __init__(self, host, data_path, args=(), module=None, tcp_port=NSQD_TCP,
                 http_port=NSQD_HTTP):
        kwargs = {"module": module} if module else {}
        if module == NSQLOOKUPD_MODULE:
            kwargs["data_path_flag"] = False
        super().__init__(data_path, args, tcp_address=f"{host.address}:{tcp_port}",
                         http_address=f"{host.address}:{http_port}", **kwargs)
        self.host = host
        self.fixed_tcp, self.fixed_http = tcp_port, http_port

    def command(self):
        return ["ip", "netns", "exec", self.host.netns, *super().command()]

    def _wait_until_serving(self, deadline):
        self.tcp_port, self.http_port = self.fixed_tcp, self.fixed_http
        wait_until(self.answers, deadline - time.monotonic(), 0.05,
                   f"{self.host.name} to answer HTTP")

    def answers(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"a daemon on {self.host.name} exited with "
                                 f"{self.proc.returncode}; log:\n{self.log_text()}")
        return self.http("GET", "/ping")[0] is not None

    def http(self, method, path, body=None, headers=None):
        url = f"http://{self.host.address}:{self.http_port}{path}"
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()
        except OSError:
            return None, {}, b""
