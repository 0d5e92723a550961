"""Fixtures: a running nsqd per test, on free ports with a temporary data directory; and
the two tiers: tests marked ``slow`` start processes, the others (the fast tier, run with
``-m "not slow"``) must not, and fail if they do."""

import os
import sys

import pytest

from inprocess import InProcessNsqd, InProcessNsqlookupd
from support import Daemon, NetNamespace, ToolProcess, go_nsqd_binary, nsqlookupd_daemon

# Modules whose tests share one expensive module fixture (the deploy tests: one cluster of
# hosts; the container tests: one image and its compose cluster) and so must run on one
# xdist worker, in order. xdist's own xdist_group marks do
# not work with this pytest (xdist renames items through an attribute pytest 9 dropped).
ONE_WORKER_MODULES = {"tests/test_deploy.py", "tests/test_container.py"}


# The fixtures below that start processes: a test that uses one, directly or through
# another fixture, is marked slow. Tests that start processes otherwise carry the mark
# themselves (FastTierGuard fails them if they do not).
PROCESS_FIXTURES = frozenset({"nsqd", "nsqd_factory", "go_nsqd_factory", "lookupd_factory",
                              "tool_factory", "netns"})


@pytest.hookimpl(tryfirst=True)   # before ``-m`` selects by mark
def pytest_collection_modifyitems(items):
    """Mark the tests that use PROCESS_FIXTURES slow; then ONE_WORKER_MODULES first: the
    worker that takes one is busy longest, so it starts first while the others share the
    rest."""
    for item in items:
        if PROCESS_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in ONE_WORKER_MODULES)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``-n``, schedule like xdist's default (each test on any worker), except that
    each module of ONE_WORKER_MODULES goes whole to one worker."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneWorkerModules(config, log)


# The audit events of starting a process: subprocess, fork, exec, spawn, system.
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn",
                            "os.spawn", "os.exec", "os.system"})


class FastTierGuard:
    """Refuses a process started by a test not marked ``slow`` (its setup, call and
    teardown), and fails that test even if it swallowed the refusal: nothing that starts
    a process can run in the fast tier unnoticed."""

    def __init__(self):
        self.item = None      # the running test, while it is a fast one
        self.started = []     # what it tried to start

    def audit(self, event, args):
        if event in PROCESS_EVENTS and self.item is not None:
            self.started.append(event)
            raise RuntimeError(f"{self.item.nodeid} started a process ({event}) but is not "
                               "marked slow")


FAST_TIER_GUARD = FastTierGuard()


def pytest_configure(config):
    sys.addaudithook(FAST_TIER_GUARD.audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    FAST_TIER_GUARD.item = None if item.get_closest_marker("slow") else item
    FAST_TIER_GUARD.started = []
    try:
        return (yield)
    finally:
        FAST_TIER_GUARD.item = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    if FAST_TIER_GUARD.started:
        pytest.fail(f"started a process ({', '.join(FAST_TIER_GUARD.started)}): a test that "
                    "starts processes belongs to the slow tier (mark it slow)", pytrace=False)
    return result


def _daemon_factory(make, prefix, tmp_path):
    """A fixture body: start daemons made by ``make``; stop them all after the test."""
    started = []

    def start(*args, data_path=None, **kwargs):
        path = data_path or tmp_path / f"{prefix}{len(started)}"
        daemon = make(path, args, **kwargs)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


@pytest.fixture
def nsqd_factory(tmp_path):
    """Start nsqd processes with extra flags; all are stopped at the end of the test."""
    yield from _daemon_factory(Daemon, "data", tmp_path)


@pytest.fixture
def go_nsqd_factory(tmp_path):
    """Start Go nsqd processes (the binary $GREENSQ_GO_NSQD names); skips the test when
    there is none."""
    binary = go_nsqd_binary()
    if binary is None:
        pytest.skip("no Go nsqd: set GREENSQ_GO_NSQD to the path of a Go nsqd 1.3.0")
    yield from _daemon_factory(lambda path, args, **kw: Daemon(path, args, binary=binary, **kw),
                               "go-data", tmp_path)


@pytest.fixture
def lookupd_factory(tmp_path):
    """Start nsqlookupd processes with extra flags; all are stopped after the test."""
    yield from _daemon_factory(nsqlookupd_daemon, "lookupd", tmp_path)


@pytest.fixture
def nsqd(nsqd_factory):
    return nsqd_factory()


def _inproc_factory(make):
    """A fixture body: build in-process daemons (tests/inprocess.py) with ``make``; close
    them all after the test, which fails it if any left a greenlet running."""
    started = []

    def start(*args, **kwargs):
        daemon = make(*args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    errors = []
    for daemon in started:
        try:
            daemon.close()
        except AssertionError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def inproc_nsqd_factory():
    """nsqd cores in this process with extra flags (the fast tier); closed after the test."""
    yield from _inproc_factory(InProcessNsqd)


@pytest.fixture
def inproc_nsqd(inproc_nsqd_factory):
    return inproc_nsqd_factory()


@pytest.fixture
def inproc_lookupd_factory():
    """nsqlookupd cores in this process with extra flags; closed after the test."""
    yield from _inproc_factory(InProcessNsqlookupd)


@pytest.fixture
def inproc_lookupd(inproc_lookupd_factory):
    return inproc_lookupd_factory()


@pytest.fixture
def inproc_server(inproc_shared):
    """The test module's shared in-process daemon (its module-scoped ``inproc_shared``
    fixture); the connections this test opened are closed after it."""
    yield inproc_shared
    inproc_shared.disconnect()


@pytest.fixture
def tool_factory():
    """Start NSQ utilities (``tool_factory("nsq_tail", "--topic=t", ...)``); any still
    running after the test are killed."""
    started = []

    def start(name, *args, stdin=None):
        tool = ToolProcess(name, args, stdin)
        started.append(tool)
        return tool.start()

    yield start
    for tool in started:
        if tool.proc.poll() is None:
            tool.kill()


@pytest.fixture
def netns():
    """A private network namespace (support.NetNamespace), for what must use NSQ's fixed
    ports. Skipped where it cannot be made, except under CI (which runs as root)."""
    reason = NetNamespace.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"no network namespace in CI: {reason}")
        pytest.skip(reason)
    namespace = NetNamespace()
    yield namespace
    namespace.close()
