"""What every client suite needs: a cache for the fetched release, a run inside a private
network namespace with the daemons under test first on PATH, and its JUnit XML read back
into the names of the tests that failed."""

import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("GREENSQ_CLIENT_SUITES_CACHE")
             or Path.home() / ".cache" / "greensq-client-suites")

REPLICATED_NSQD = Path(__file__).with_name("replicated_nsqd.py")
# Fetching and installing a release, and a whole suite run, are each bounded (a suite
# takes well under a minute on an idle machine).
INSTALL_TIMEOUT = 600
RUN_TIMEOUT = 300
# A suite's timeouts assume a machine of its own (nsqjs gives a new nsqd about 1.5 s to
# answer /ping), but here the rest of the test run shares the cores. So a suite and the
# daemons it starts run at a higher CPU priority: as their session's scheduling group
# (Linux autogroups, where a process's own nice counts only inside its session) and nice.
PRIORITY = -10


class Unavailable(Exception):
    """The suite cannot run here: what is missing (no root, no registry, no node...)."""


@dataclass
class Outcome:
    """One suite run: the tests by outcome, and the runner's output for context."""

    passed: list = field(default_factory=list)
    failed: list = field(default_factory=list)      # (test name, first lines of the failure)
    skipped: list = field(default_factory=list)
    returncode: int = 0
    output: str = ""

    def summary(self):
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"

    def failure_report(self, tail=60):
        lines = [self.summary()]
        lines += [f"FAILED {name}: {message}" for name, message in self.failed]
        lines.append(f"--- last lines of the suite's output (exit {self.returncode}) ---")
        lines += self.output.splitlines()[-tail:]
        return "\n".join(lines)


def greensq_bin_dir():
    """Where this environment's ``nsqd`` and ``nsqlookupd`` console scripts are."""
    scripts = Path(sysconfig.get_path("scripts"))
    for name in ("nsqd", "nsqlookupd"):
        if not (scripts / name).exists():
            raise Unavailable(f"greensq's {name} console script is not in {scripts}")
    return scripts


def replicated_daemons(daemons, directory):
    """A bin directory like ``daemons`` whose ``nsqd`` has a replica (another nsqd of
    ``daemons``, see replicated_nsqd.py): a suite run with it tests replication too."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "nsqd"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                       f"{shlex.quote(str(REPLICATED_NSQD))} "
                       f"{shlex.quote(str(Path(daemons) / 'nsqd'))} \"$@\"\n")
    wrapper.chmod(0o755)
    (directory / "nsqlookupd").symlink_to(Path(daemons) / "nsqlookupd")
    return directory


def check_namespace_support():
    if os.geteuid() != 0:
        raise Unavailable("needs root for a private network namespace (unshare --net)")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise Unavailable(f"no {tool} command")


def fetch(args, cwd, what):
    """Run a registry client (pip, npm); a failure means the release cannot be had here."""
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise Unavailable(f"{what} failed (exit {proc.returncode}):\n{tail}")


def unpack(archive, sha256):
    """Check a fetched release against its pinned digest, then unpack it beside itself."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != sha256:
        raise AssertionError(f"{archive.name} has sha256 {digest}, expected {sha256}")
    with tarfile.open(archive) as tar:
        tar.extractall(archive.parent, filter="data")


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached(name, prepare):
    """The directory ``CACHE/name``, filled once by ``prepare(directory)``.

    A directory is only published once ``prepare`` returned, so an interrupted or failed
    preparation is never taken for a ready one; a lock keeps two test runs from preparing
    the same one at once."""
    target = CACHE / name
    with _locked(CACHE / f"{name}.lock"):
        if not target.is_dir():
            work = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=CACHE))
            try:
                prepare(work)
                work.rename(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return target


def run_in_netns(command, cwd, daemons, tmp_dir):
    """Run ``command`` in a new network namespace with ``lo`` up and ``daemons`` (a bin
    directory) first on PATH, at ``PRIORITY``; return ``(exit code, output)``.

    The suite, and every daemon it starts, is in a process group of its own, killed once
    the suite is over, so nothing it left running outlives the run."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "COV_"))}
    env["PATH"] = f"{daemons}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["TMPDIR"] = str(tmp_dir)
    shell = (f"(echo {PRIORITY} > /proc/self/autogroup) 2>/dev/null; "
             'ip link set lo up && exec "$@"')
    proc = subprocess.Popen(["unshare", "--net", "--", "nice", "-n", str(PRIORITY),
                             "sh", "-c", shell, "sh", *command],
                            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        output, _ = proc.communicate()
        output += f"\n(suite killed after {RUN_TIMEOUT}s)\n".encode()
    finally:
        _kill_group(proc.pid)
    return proc.returncode, output.decode("utf-8", "replace")


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_junit(path, returncode, output):
    """An ``Outcome`` from a JUnit XML report (pytest's or mocha's xunit reporter)."""
    outcome = Outcome(returncode=returncode, output=output)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        outcome.failed.append(("(suite)", f"no readable JUnit report at {path}: {exc}"))
        return outcome
    for case in root.iter("testcase"):
        name = " :: ".join(part for part in (case.get("classname"), case.get("name")) if part)
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            outcome.failed.append((name, _first_lines(problem)))
        elif case.find("skipped") is not None:
            outcome.skipped.append(name)
        else:
            outcome.passed.append(name)
    if returncode != 0 and not outcome.failed:
        outcome.failed.append(("(suite)", f"exited {returncode} with no failed test reported"))
    return outcome


def _first_lines(element, count=3, width=400):
    """A failure's message, else the start of its text (a traceback, a stack)."""
    text = (element.get("message") or element.text or "").strip()
    return " | ".join(line.strip() for line in text.splitlines()[:count])[:width]
