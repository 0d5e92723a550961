"""Run a client suite by hand and print its outcome: from ``tests/``,
``python -m clients gnsq|nsqjs [--runs N] [--daemons DIR] [--replicated]``."""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import gnsq_suite, nsqjs_suite
from .suite import check_namespace_support, greensq_bin_dir, replicated_daemons

SUITES = {"gnsq": gnsq_suite, "nsqjs": nsqjs_suite}


def main():
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--daemons", type=Path,
                        help="a directory with the nsqd and nsqlookupd to test "
                             "(default: greensq's console scripts)")
    parser.add_argument("--replicated", action="store_true",
                        help="give every nsqd the suite starts a replica")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    check_namespace_support()
    source = suite.prepare()
    daemons = args.daemons or greensq_bin_dir()
    clean = True
    for number in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix=f"{args.suite}-suite.") as tmp:
            started = time.monotonic()
            bin_dir = replicated_daemons(daemons, Path(tmp) / "bin") if args.replicated \
                else daemons
            outcome = suite.run(source, bin_dir, Path(tmp))
        print(f"{args.suite} run {number}: {outcome.summary()} "
              f"in {time.monotonic() - started:.1f}s", flush=True)
        for name, message in outcome.failed:
            print(f"  FAILED {name}: {message}", flush=True)
        clean = clean and not outcome.failed
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
