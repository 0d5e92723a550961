"""The real client libraries' own test suites pass against greensq's daemons: gnsq 1.0.2's
whole pytest suite and nsqjs 0.13.0's mocha integration tests, each in a private network
namespace (see tests/clients/); and again with a replica for every nsqd a suite starts
(README, "Replication"), so that every publish the suites make waits for a replica's
acknowledgement and every change they make reaches it. A failure names the suite's
failing tests.
"""

import pytest

from clients import gnsq_suite, nsqjs_suite
from clients.suite import (Unavailable, check_namespace_support, greensq_bin_dir,
                           replicated_daemons)
from support import cannot_run

pytestmark = pytest.mark.slow   # client suites in network namespaces


@pytest.mark.parametrize("suite, replicated", [
    pytest.param(suite, replicated, id=name + ("-replicated" if replicated else ""))
    for replicated in (False, True)
    for name, suite in (("gnsq", gnsq_suite), ("nsqjs", nsqjs_suite))])
def test_client_suite_passes(suite, replicated, tmp_path):
    try:
        check_namespace_support()
        daemons = greensq_bin_dir()
        source = suite.prepare()
    except Unavailable as exc:
        cannot_run(str(exc))
    if replicated:
        daemons = replicated_daemons(daemons, tmp_path / "bin")
    outcome = suite.run(source, daemons, tmp_path)
    if outcome.failed or len(outcome.passed) != suite.TESTS:
        pytest.fail(f"expected {suite.TESTS} passed; {outcome.failure_report()}", pytrace=False)
    if replicated:   # the primaries reached their replicas (whose logs are under $TMPDIR)
        logs = [path.read_text() for path in tmp_path.glob("replica.*/nsqd.log")]
        assert any("copy complete" in text for text in logs), f"{len(logs)} replicas, no copy"
