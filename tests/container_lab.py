"""Podman for the container tests, kept to one directory of the test run.

``Podman`` runs podman (runtime runc) and podman-compose with their own containers.conf and
storage.conf: images, containers, volumes, network definitions and run state all live
under the lab's directory, so nothing of the machine's own podman is touched and
``close()`` removes it all. ``make_debian_base`` makes a base image without a registry:
Debian's minimal system with Python, from the Debian mirror apt uses.
``pip_build_secrets`` hands an image build the machine's pip configuration and CA bundle
as build secrets.
"""

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PODMAN_COMPOSE = BIN / "podman-compose"

# The engine settings podman needs on this kind of machine (runc, not crun; limits that
# the machine's own hard limits allow).
ENGINE_SETTINGS = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_config_dir = "{dir}/networks"

[engine]
runtime = "runc"
tmp_dir = "{run_dir}/engine"
"""


def missing_requirements():
    """Why podman cannot run here, or None (only what can be told without running it)."""
    if os.geteuid() != 0:
        return "needs root (rootful podman, mmdebstrap)"
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"needs {tool} on PATH (Debian package {tool})"
    if not PODMAN_COMPOSE.exists():
        return "podman-compose is not installed (pip install -e '.[test]')"
    if debian_mirror() is None:
        return "no Debian bookworm mirror in apt's sources to make a base image from"
    return None


def run(argv, check=True, **kwargs):
    """Run a command, its output captured as text; a failure raises with that output."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


class Podman:
    """podman and podman-compose with their configuration and storage under ``workdir``."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        for sub in ("storage", "networks"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # Run state and the engine's temporary files hold conmon's sockets, whose paths
        # must fit a Unix socket address (108 bytes): under pytest's long temporary paths
        # each `podman run` waited 20 s for an attach that could not happen. They get a
        # short directory of their own.
        self.run_dir = Path(tempfile.mkdtemp(prefix="podman-run-"))
        (self.run_dir / "engine").mkdir()
        (self.dir / "containers.conf").write_text(
            ENGINE_SETTINGS.format(dir=self.dir, run_dir=self.run_dir))
        (self.dir / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.dir}/storage"\n'
            f'runroot = "{self.run_dir}"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.dir / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(self.dir / "storage.conf"))

    def __call__(self, *args, check=True, timeout=300, **kwargs):
        return run(["podman", *args], check=check, env=self.env, timeout=timeout, **kwargs)

    def compose(self, compose_file, project, env, *args, check=True, timeout=300):
        return run([str(PODMAN_COMPOSE), "-f", str(compose_file), "-p", project, *args],
                   check=check, env=dict(self.env, **env), timeout=timeout)

    def run_failure(self, image):
        """Why a container of ``image`` cannot run here (podman's last line), or None."""
        proc = self("run", "--rm", image, "true", check=False, timeout=120)
        if proc.returncode == 0:
            return None
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"]
        return f"podman cannot run a container: {lines[-1]}"

    def close(self):
        """Remove every container, image, volume and network of the lab, then its files."""
        self("system", "reset", "--force", check=False, timeout=300)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def debian_mirror(suite="bookworm"):
    """The first http(s) mirror that apt's sources list for ``suite``, or None."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else ():
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ")):
                    fields[key.strip().lower()] = value.split()
            if suite in fields.get("suites", ()) and "deb" in fields.get("types", ()):
                for uri in fields.get("uris", ()):
                    if uri.startswith(("http://", "https://")):
                        return uri
    legacy = Path("/etc/apt/sources.list")
    for line in legacy.read_text().splitlines() if legacy.exists() else ():
        words = re.sub(r"\[[^\]]*\]", " ", line).split()     # options ([arch=...]) aside
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite \
                and words[1].startswith(("http://", "https://")):
            return words[1]
    return None


def make_debian_base(podman, image, suite="bookworm", packages=("python3-venv",)):
    """Import Debian's minimal system (``--variant=minbase``) with ``packages`` as ``image``.

    mmdebstrap, Debian's faster alternative to debootstrap, writes the system as a tar
    stream straight into ``podman import``, with dpkg's unsafe-io (no fsync per file: a
    throwaway system needs no crash safety); on a loaded 2-core machine it takes about
    half debootstrap's time (23 s against 54 s, debootstrap's second stage with unsafe-io
    too), and leaves no directory or mount behind."""
    with tempfile.TemporaryFile() as log:
        build = subprocess.Popen(
            ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(packages)}",
             "--dpkgopt=force-unsafe-io", suite, "-", debian_mirror(suite)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        try:
            podman("import", "-", image, stdin=build.stdout, timeout=900)
        finally:
            build.stdout.close()
            if build.wait(timeout=900) != 0:
                log.seek(0)
                raise RuntimeError(f"mmdebstrap exited {build.returncode}:\n"
                                   f"{log.read().decode(errors='replace')[-4000:]}")


def pip_build_secrets(workdir, python=sys.executable):
    """``podman build`` arguments that give the build's pip this machine's pip settings as
    build secrets, which the Containerfile mounts for its install step only.

    The merged configuration (files and PIP_* variables, as ``pip config list`` shows it)
    becomes one pip.conf, less what names this machine's own files (find-links
    directories, file:// indexes, constraint files), which a build cannot see; the CA
    bundle it names becomes the ca-bundle secret (the Containerfile points PIP_CERT at it).
    """
    listed = run([python, "-m", "pip", "config", "list"]).stdout.splitlines()
    settings, ca_bundle = {}, None
    # pip's precedence: PIP_* variables over files
    for line in sorted(listed, key=lambda entry: entry.startswith(":env:")):
        name, sep, quoted = line.partition("=")
        section, _, key = name.rpartition(".")
        value = quoted.strip().strip("'\"")
        if not sep:
            continue
        if key == "cert":
            ca_bundle = value
            continue
        remote = " ".join(word for word in value.split()
                          if not word.startswith(("/", "file:")))
        if remote:
            settings.setdefault("global" if section == ":env:" else section, {})[key] = remote
    config = configparser.ConfigParser(interpolation=None)
    config.read_dict(settings)
    secrets = Path(workdir)
    secrets.mkdir(parents=True, exist_ok=True)
    with open(secrets / "pip.conf", "w") as fh:
        config.write(fh)
    argv = ["--secret", f"id=pip.conf,src={secrets / 'pip.conf'}"]
    if ca_bundle and os.path.isfile(ca_bundle):
        argv += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
    return argv
