"""nsqjs 0.13.0's own integration tests (mocha), from its npm tarball.

``test/z_integration_test.js`` starts ``nsqd`` on NSQ's fixed ports (4150/4151, moving up
50 per test) with ``--tls-cert``, so every nsqd also binds the default HTTPS address
0.0.0.0:4152, and SIGKILLs it after each test. The tarball's other test files are unit
tests of the library against mocks (sinon, nock) that never reach a daemon; some of them
race 10-40 ms timers and fail now and then on a busy machine with no nsqd at all.
``npm install`` in the unpacked tarball brings the dependencies and devDependencies
(mocha, should, p-event, ...) into the cache.
"""

import shutil

from .suite import Unavailable, cached, fetch, read_junit, run_in_netns, unpack

VERSION = "0.13.0"
TARBALL = f"nsqjs-{VERSION}.tgz"
TARBALL_SHA256 = "a459c767ecf96a673cda98b43ec45357df0901ef9e6e1456ff771d4bb6b950f3"
SPEC = "test/z_integration_test.js"
TESTS = 19


def prepare():
    """The unpacked package with its ``node_modules`` (cached)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise Unavailable(f"no {tool} command")
    return cached(f"nsqjs-{VERSION}", _install) / "package"


def _install(work):
    fetch(["npm", "pack", f"nsqjs@{VERSION}"], work, f"npm pack nsqjs@{VERSION}")
    unpack(work / TARBALL, TARBALL_SHA256)
    fetch(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"],
          work / "package", f"npm install (nsqjs {VERSION}'s dependencies)")


def run(package, daemons, tmp_dir):
    report = tmp_dir / "nsqjs-xunit.xml"
    # `npm test` is `mocha -R spec -b`. Without -b every failure is reported; --exit ends
    # the run when the tests are over, even when a failed hook left an nsqd running.
    command = ["node", "node_modules/mocha/bin/mocha", "--exit", "--reporter", "xunit",
               "--reporter-option", f"output={report}", SPEC]
    code, output = run_in_netns(command, package, daemons, tmp_dir)
    return read_junit(report, code, output)
