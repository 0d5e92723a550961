"""The scripts in bench/ that report the project's figures still import and parse their
command lines: a rename elsewhere in the tree must not leave one broken until the next
time somebody measures."""

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # runs every script in its own process

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(path.name for path in BENCH.glob("*.py") if path.name != "nsqbench.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_shows_its_usage(script):
    result = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=BENCH,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


# A short run of the scripts whose code paths the --help check does not reach, with loads
# small enough to take a few seconds each.
SHORT_RUNS = {
    "footprint": ["footprint.py", "--connections", "20", "--topics", "20", "--channels", "20"],
    "scenarios": ["scenarios.py", "--runfor", "0.5", "--only", "a,b,d"],
    "scenarios with two spins": ["scenarios.py", "--runfor", "0.3", "--only", "d",
                                 "--idle-spin", "0,50us"],
    "replication": ["replication.py", "--runfor", "0.5", "--backlog", "500",
                    "--failover-timeout", "1"],
}


@pytest.mark.parametrize("name", SHORT_RUNS)
def test_bench_script_runs(name):
    result = subprocess.run([sys.executable, *SHORT_RUNS[name]], cwd=BENCH,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
