"""Hosts made on this machine for the deploy tests: a small lab that Ansible can reach.

Each host is a network namespace with one address on a private bridge, its own sshd
and its own hostname, and its own /etc (a copy), /opt, /var, /run and /root: sshd runs in
a mount namespace where per-host directories are bound over those paths, so everything
Ansible installs or writes there (the service user, the virtualenv, the data) stays in
that host's directory. The controller (this process, ansible-playbook) reaches the hosts
from the bridge's own address; no host has a route anywhere else.

Every name (namespaces, bridge, veth ends) carries a random run id, so parallel runs
cannot collide; ``close()`` kills every process in the hosts' namespaces and removes the
namespaces, the links and the host directories, whatever state the lab was left in.
"""

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess

from support import wait_until

HOST_DIRS = ("etc", "opt", "var", "run", "root")   # bound over the same paths in a host
SSHD = "/usr/sbin/sshd"
HOST_PYTHON = "/usr/bin/python3"   # what Ansible and the roles use on the hosts


def missing_requirements():
    """Why this machine cannot build a lab, or None."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces, a bridge, sshd)"
    for tool in ("ip", "unshare", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"needs {tool!r} on PATH"
    if not os.access(SSHD, os.X_OK):
        return f"needs {SSHD} (Debian's openssh-server)"
    probe = subprocess.run(["unshare", "--mount", "--uts", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        return "cannot create namespaces: " + probe.stderr.decode(errors="replace").strip()
    probe = subprocess.run([HOST_PYTHON, "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode != 0:
        return f"needs {HOST_PYTHON} with venv and ensurepip (Debian's python3-venv)"
    return None


def run(*argv, check=True):
    """Run a command; a failure raises with its output."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def taken_networks():
    """The IPv4 networks of this machine's addresses and routes."""
    for entry in json.loads(run("ip", "-j", "-4", "addr").stdout or "[]"):
        for info in entry.get("addr_info", []):
            yield ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
    for entry in json.loads(run("ip", "-j", "-4", "route").stdout or "[]"):
        if entry.get("dst", "default") != "default":
            yield ipaddress.ip_network(entry["dst"], strict=False)


def free_subnet(run_id):
    """A /24 in 10.0.0.0/8 that no address or route of this machine overlaps."""
    taken = list(taken_networks())
    seed = int(run_id, 16)
    for attempt in range(256):
        value = (seed + attempt * 7919) % (250 * 256)
        candidate = ipaddress.ip_network(f"10.{4 + value // 256}.{value % 256}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 for the lab")


class Host:
    """One lab host: its namespace, address and directory."""

    def __init__(self, lab, index, name, address):
        self.lab = lab
        self.name = name
        self.address = address
        self.netns = f"gsq-{lab.run_id}-{name}"
        self.veth = f"gsq{lab.run_id}v{index}"
        self.dir = os.path.join(lab.workdir, "hosts", name)
        self.sshd = None

    def path(self, inside):
        """Where a path inside this host (``/var/lib/nsq``) is on the machine."""
        return os.path.join(self.dir, inside.lstrip("/"))

    def ssh(self, command, input=None, timeout=120, check=True):
        """Run a shell command on the host as root; a CompletedProcess (text)."""
        proc = subprocess.run(self.lab.ssh_argv(self) + [command], input=input, text=True,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {command!r} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def make_filesystem(self):
        os.makedirs(self.dir)
        run("cp", "-a", "/etc", self.path("etc"))
        for sub in ("opt", "var/lib", "var/log", "var/cache", "run/sshd", "root"):
            os.makedirs(self.path(sub))
        os.makedirs(self.path("var/tmp"), mode=0o1777)
        os.chmod(self.path("var/tmp"), 0o1777)
        os.chmod(self.path("root"), 0o700)
        os.symlink("/run", self.path("var/run"))
        os.symlink("/run/lock", self.path("var/lock"))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name,
            "-f", os.path.join(self.dir, "ssh_host_ed25519_key"))
        with open(os.path.join(self.dir, "sshd_config"), "w") as fh:
            fh.write(f"""\
ListenAddress {self.address}
HostKey {self.dir}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {self.lab.client_key}.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
""")

    def start_sshd(self):
        binds = "".join(f"mount --bind {self.path(d)} /{d}; " for d in HOST_DIRS)
        script = f"set -e; hostname {self.name}; {binds}exec {SSHD} -D -e -f {self.dir}/sshd_config"
        log = open(os.path.join(self.dir, "sshd.log"), "ab")
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts",
             "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def sshd_ready(self):
        try:
            with socket.create_connection((self.address, 22), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False


class Lab:
    """A bridge, hosts on it, SSH keys; a context manager that removes it all."""

    def __init__(self, workdir, names):
        self.run_id = secrets.token_hex(3)
        self.workdir = str(workdir)
        self.subnet = free_subnet(self.run_id)
        self.bridge = f"gsq{self.run_id}br"
        addresses = list(self.subnet.hosts())
        self.controller_address = str(addresses[0])
        self.hosts = [Host(self, i, name, str(addresses[10 + i])) for i, name in enumerate(names)]
        self.client_key = os.path.join(self.workdir, "ssh", "id_ed25519")
        self.known_hosts = os.path.join(self.workdir, "ssh", "known_hosts")
        self.netns_made = []
        self.links_made = []

    def __getitem__(self, name):
        return next(host for host in self.hosts if host.name == name)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        os.makedirs(os.path.dirname(self.client_key))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "controller",
            "-f", self.client_key)
        self.make_network()
        for host in self.hosts:
            host.make_filesystem()
        with open(self.known_hosts, "w") as fh:
            for host in self.hosts:
                with open(os.path.join(host.dir, "ssh_host_ed25519_key.pub")) as key:
                    fh.write(f"{host.address} {' '.join(key.read().split()[:2])}\n")
        for host in self.hosts:
            host.start_sshd()
        for host in self.hosts:
            wait_until(host.sshd_ready, timeout=30, message=f"sshd on {host.name}")

    def make_network(self):
        """The bridge, with the controller's address, and every host on it."""
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.links_made.append(self.bridge)
        run("ip", "addr", "add", f"{self.controller_address}/{self.subnet.prefixlen}",
            "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            self.add_to_network(host)

    def add_to_network(self, host):
        run("ip", "netns", "add", host.netns)
        self.netns_made.append(host.netns)
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
            "netns", host.netns)
        self.links_made.append(host.veth)
        run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        run("ip", "-n", host.netns, "addr", "add",
            f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        run("ip", "-n", host.netns, "link", "set", "lo", "up")

    def ssh_options(self):
        return ["-i", self.client_key, "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10"]

    def ssh_argv(self, host):
        return ["ssh", *self.ssh_options(), f"root@{host.address}"]

    def host_vars(self, host):
        """The inventory variables that let Ansible reach ``host``."""
        return {
            "ansible_host": host.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": self.client_key,
            "ansible_ssh_common_args": " ".join(self.ssh_options()[2:]),
            "ansible_python_interpreter": HOST_PYTHON,
        }

    def close(self):
        """Kill every process in the hosts' namespaces; remove namespaces, links, files."""
        for netns in self.netns_made:
            self.kill_everything_in(netns)
            run("ip", "netns", "del", netns, check=False)
        for link in reversed(self.links_made):
            if run("ip", "link", "show", link, check=False).returncode == 0:
                run("ip", "link", "del", link, check=False)
        for host in self.hosts:
            if host.sshd is not None:
                host.sshd.wait(timeout=10)
        shutil.rmtree(os.path.join(self.workdir, "hosts"), ignore_errors=True)
        self.netns_made, self.links_made = [], []

    @staticmethod
    def kill_everything_in(netns):
        def killed_all():
            pids = run("ip", "netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return not pids

        wait_until(killed_all, timeout=20, interval=0.05, message=f"no process left in {netns}")
