"""Fixtures: a running nsqd per test, on free ports with a temporary data directory."""

import os

import pytest

from support import Daemon, NetNamespace, ToolProcess, nsqlookupd_daemon

# Modules whose tests share one expensive module fixture (the deploy tests: one cluster of
# hosts) and so must run on one xdist worker, in order. xdist's own xdist_group marks do
# not work with this pytest (xdist renames items through an attribute pytest 9 dropped).
ONE_WORKER_MODULES = {"tests/test_deploy.py"}


def pytest_collection_modifyitems(items):
    """ONE_WORKER_MODULES first: the worker that takes one is busy longest, so it starts
    first while the other workers share the rest."""
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
def lookupd_factory(tmp_path):
    """Start nsqlookupd processes with extra flags; all are stopped after the test."""
    yield from _daemon_factory(nsqlookupd_daemon, "lookupd", tmp_path)


@pytest.fixture
def nsqd(nsqd_factory):
    return nsqd_factory()


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
