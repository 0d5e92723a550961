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
