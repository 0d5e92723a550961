"""gnsq 1.0.2's own pytest suite, from its PyPI sdist.

Its tests start ``nsqd`` and ``nsqlookupd`` on port 0 and read their ports from the
``listening on`` log lines. What the suite imports (gnsq, six, pytest-timeout for its
``timeout`` marks) comes with greensq's ``test`` extra.
"""

import importlib.util
import sys

from .suite import cached, fetch, read_junit, run_in_netns, unpack

VERSION = "1.0.2"
SDIST = f"gnsq-{VERSION}.tar.gz"
SDIST_SHA256 = "f2bb8cc816ffc449865ab1729eeec8b7524f7a416161cc99db2f44782a002c13"
TESTS = 108     # in the release, so a test that is not collected shows


def prepare():
    """The unpacked sdist (cached), with its ``tests/``."""
    return cached(f"gnsq-{VERSION}", _download) / f"gnsq-{VERSION}"


def _download(work):
    fetch([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--dest", str(work), f"gnsq=={VERSION}"], work, f"pip download gnsq=={VERSION}")
    unpack(work / SDIST, SDIST_SHA256)


def run(source, daemons, tmp_dir):
    missing = [name for name in ("gnsq", "six", "pytest_timeout")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise AssertionError(f"not installed (greensq's test extra): {', '.join(missing)}")
    report = tmp_dir / "gnsq-junit.xml"
    command = [sys.executable, "-m", "pytest", "tests", "--rootdir", str(source),
               "-p", "no:cacheprovider", "-q", f"--junitxml={report}"]
    code, output = run_in_netns(command, source, daemons, tmp_dir)
    return read_junit(report, code, output)

