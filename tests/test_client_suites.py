"""The real client libraries' own test suites pass against greensq's daemons: gnsq 1.0.2's
whole pytest suite and nsqjs 0.13.0's mocha integration tests, each in a private network
namespace (see tests/clients/). A failure names the suite's failing tests.
"""

import pytest

from clients import gnsq_suite, nsqjs_suite
from clients.suite import Unavailable, check_namespace_support, greensq_bin_dir
from support import cannot_run

pytestmark = pytest.mark.slow   # client suites in network namespaces


@pytest.mark.parametrize("suite", [gnsq_suite, nsqjs_suite], ids=["gnsq", "nsqjs"])
def test_client_suite_passes(suite, tmp_path):
    try:
        check_namespace_support()
        daemons = greensq_bin_dir()
        source = suite.prepare()
    except Unavailable as exc:
        cannot_run(str(exc))
    outcome = suite.run(source, daemons, tmp_path)
    if outcome.failed or len(outcome.passed) != suite.TESTS:
        pytest.fail(f"expected {suite.TESTS} passed; {outcome.failure_report()}", pytrace=False)
