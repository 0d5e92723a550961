"""Fixtures: a running nsqd per test, on free ports with a temporary data directory."""

import pytest

from support import Daemon


@pytest.fixture
def nsqd_factory(tmp_path):
    """Start nsqd processes with extra flags; all are stopped at the end of the test."""
    started = []

    def start(*args, data_path=None, **kwargs):
        daemon = Daemon(data_path or tmp_path / f"data{len(started)}", args, **kwargs)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


@pytest.fixture
def nsqd(nsqd_factory):
    return nsqd_factory()
