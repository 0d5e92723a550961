"""deploy/ without hosts: ansible-lint is clean, the systemd units that the roles write
pass systemd-analyze verify, and the READMEs show the example inventory as it is, which
takes over no data directory unless asked."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from deploy_lab.cluster import BIN, DEPLOY, REPO, SCRIPTS

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
