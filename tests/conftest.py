"""Fixtures: a running nsqd per test, on free ports with a temporary data directory."""

import pytest

from support import Daemon, ToolProcess, nsqlookupd_daemon


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
