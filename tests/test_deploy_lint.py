"""deploy/ without hosts: ansible-lint is clean, the systemd units that the roles write
pass systemd-analyze verify, and the READMEs show the example inventory as it is, which
takes over no data directory unless asked; nsqd's config files, rendered for an
inventory, name each host's replica only when replication is asked for."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from deploy_lab.cluster import BIN, DEPLOY, REPO, SCRIPTS
from greensq.services.nsqd.options import parse_nsqd_options

pytestmark = pytest.mark.slow   # runs ansible-lint and systemd-analyze


def test_ansible_lint_is_clean(tmp_path):
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / "ansible"),
               XDG_CACHE_HOME=str(tmp_path / "cache"),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--strict", "--nocolor"],
                          cwd=DEPLOY, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    daemons = [name for name in ("nsqd", "nsqlookupd", "nsqadmin") if (BIN / name).exists()]
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / "ansible"),
               ANSIBLE_ROLES_PATH=str(DEPLOY / "roles"), ANSIBLE_NOCOLOR="1")
    extra = {"unit_dir": str(unit_dir), "venv": str(BIN.parent), "daemons": daemons,
             "ansible_python_interpreter": sys.executable}
    render = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,",
                             "-e", json.dumps(extra), str(SCRIPTS / "units.yml")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stdout + render.stderr
    units = sorted(str(path) for path in unit_dir.glob("*.service"))
    assert [os.path.basename(u) for u in units] == sorted(f"{d}.service" for d in daemons)
    verify = subprocess.run([analyze, "verify", *units], capture_output=True, text=True,
                            timeout=120)
    # verify exits 0 after mere warnings (a misspelt setting is ignored with a warning),
    # so a clean unit is one it says nothing about
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), \
        verify.stdout + verify.stderr


def test_readmes_show_the_example_inventory_as_it_is():
    example = (DEPLOY / "inventory" / "example" / "hosts.yml").read_text()
    inventory = example[example.index("all:"):]          # its header comment aside
    for readme in (REPO / "README.md", DEPLOY / "README.md"):
        blocks = re.findall(r"```yaml\n(all:\n.*?)```", readme.read_text(), re.DOTALL)
        assert blocks == [inventory], readme


def test_example_inventory_takes_over_no_data_directory():
    hosts = yaml.safe_load((DEPLOY / "inventory" / "example" / "hosts.yml").read_text())
    for group in hosts["all"]["children"].values():
        for host_vars in group["hosts"].values():
            assert not any(key.startswith("nsqd_takeover") for key in host_vars or {})


def _nsqd_options(tmp_path, *extra_vars):
    """Each host's nsqd options, from the config file the roles render for a three-host
    inventory (the third host with its own broadcast address and TCP port)."""
    inventory = {"all": {
        "vars": {"ansible_python_interpreter": sys.executable},
        "children": {
            "nsqlookupd": {"hosts": {"nsq-1": None}},
            "nsqd": {"hosts": {"nsq-1": None, "nsq-2": None,
                               "nsq-3": {"nsqd_broadcast_address": "10.0.0.3",
                                         "nsqd_tcp_address": "0.0.0.0:5150"}}}}}}
    out_dir = tmp_path / "configs"
    out_dir.mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / "ansible"), ANSIBLE_NOCOLOR="1")
    args = [arg for extra in (f"out_dir={out_dir}", *extra_vars) for arg in ("-e", extra)]
    render = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                             *args, str(SCRIPTS / "nsqd_configs.yml")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stdout + render.stderr
    return {host: parse_nsqd_options([f"--config={out_dir / host}.toml"])
            for host in ("nsq-1", "nsq-2", "nsq-3")}


def test_nsqd_replicas_are_the_next_host_when_asked_for(tmp_path):
    options = _nsqd_options(tmp_path / "off")
    assert [opts.replica_tcp_address for opts in options.values()] == [[], [], []]
    options = _nsqd_options(tmp_path / "ring", "nsqd_replication=true",
                            "nsqd_replica_failover_timeout=8s")
    assert {host: opts.replica_tcp_address for host, opts in options.items()} == {
        "nsq-1": ["nsq-2:4150"], "nsq-2": ["10.0.0.3:5150"], "nsq-3": ["nsq-1:4150"]}
    assert {opts.replica_failover_timeout for opts in options.values()} == {8.0}
    named = _nsqd_options(tmp_path / "named", "nsqd_replication=true",
                          '{"nsqd_replica_tcp_addresses": ["a:1", "b:2"]}')
    assert named["nsq-2"].replica_tcp_address == ["a:1", "b:2"]
