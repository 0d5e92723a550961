"""The two builds of greensq's hot modules (services/shared/compiled.py): where greensq was
installed with a C compiler, what runs is the compiled modules, and ``GREENSQ_PURE_PYTHON``
runs the same source uncompiled; a daemon says which at start and in ``--version``, and
the protocol and HTTP tests pass on the pure build too."""

import importlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from greensq.actors.topic import Topic
from greensq.services.shared import compiled
from greensq.services.shared.compiled import MODULES, PURE_PYTHON, build, compiled_name
from greensq.services.shared.version import build_word
from support import FROM_INSTALLED_COPY, Daemon, cannot_run

REPO = Path(__file__).resolve().parent.parent


def defined_here(module):
    """The classes and functions a module defines (not those it imports)."""
    return [value for value in vars(module).values()
            if (inspect.isclass(value) or callable(value) and hasattr(value, "__code__")
                or type(value).__name__ == "cython_function_or_method")
            and getattr(value, "__module__", None) in (module.__name__,
                                                       compiled_name(module.__name__))]


def test_the_compiled_modules_are_in_use():
    if PURE_PYTHON:
        pytest.skip("GREENSQ_PURE_PYTHON asks for the pure-Python build")
    if build() != "compiled":
        cannot_run(f"greensq's modules are not compiled here ({build()}): installed "
                   "without a C compiler or Python's headers?")
    for name in MODULES:
        module = importlib.import_module(name)
        assert sys.modules[compiled_name(name)] is not None
        assert module.__name__ == name and module.__file__.endswith(".py")
        definitions = defined_here(module)
        assert definitions, name
        for value in definitions:
            assert value.__module__ == compiled_name(name), (name, value)
    # A class's methods are Cython's functions, not the interpreter's.
    assert type(Topic.on_pub).__name__ == "cython_function_or_method"


@pytest.mark.slow   # starts an interpreter
def test_pure_python_runs_the_source():
    script = ("import sys\n"
              "from greensq.services.shared.compiled import MODULES, build\n"
              "for name in MODULES:\n"
              "    __import__(name)\n"
              "print(build(), sorted(m for m in sys.modules if '._c_' in m))\n"
              "from greensq.actors.topic import Topic\n"
              "print(Topic.__module__, type(Topic.on_pub).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, GREENSQ_PURE_PYTHON="1"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pure Python []", "greensq.actors.topic function"]


def mapped_compiled_modules(pid):
    """The compiled modules (``_c_*.so``) the process ``pid`` has loaded."""
    with open(f"/proc/{pid}/maps") as maps:
        return {os.path.basename(line.split()[-1]).split(".")[0] for line in maps
                if "/_c_" in line and line.rstrip().endswith(".so")}


@pytest.mark.slow   # starts nsqd
def test_nsqd_runs_the_build_it_announces(tmp_path):
    """In the build this test run is on (compiled, or pure inside the test below)."""
    nsqd = Daemon(tmp_path / "data").start()
    try:
        expected = build()
        nsqd.wait_for_log(rf"nsqd v1\.3\.0 \(built w/greensq-[0-9.]+-{build_word()}\)")
        nsqd.http("POST", "/pub?topic=t", b"loaded")   # the core has been imported
        loaded = mapped_compiled_modules(nsqd.worker_pid)
        if expected == "compiled":
            assert loaded == {compiled_name(name).rpartition(".")[2] for name in MODULES}
        elif expected == "pure Python":
            assert loaded == set()
    finally:
        assert nsqd.stop() == 0, nsqd.log_text()


@pytest.mark.slow   # runs pytest in a process
def test_the_protocol_and_http_tests_pass_on_the_pure_build():
    if PURE_PYTHON:
        pytest.skip("this run is the pure-Python build already")
    tests = ["tests/test_protocol_v2.py", "tests/test_http_api.py",
             "tests/test_inproc_protocol.py", "tests/test_inproc_http.py",
             "tests/test_compiled.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:xdist", *tests],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env=dict(os.environ, GREENSQ_PURE_PYTHON="1"))
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    # nsqd ran pure: it said so, and loaded no compiled module
    assert "PASSED tests/test_compiled.py::test_nsqd_runs_the_build_it_announces" in done.stdout
    assert "PASSED tests/test_compiled.py::test_pure_python_runs_the_source" in done.stdout


def test_the_compiled_module_s_own_last_line_does_nothing():
    namespace = {"__name__": compiled_name("greensq.services.shared.wire"), "marker": 1}
    compiled.use_compiled(namespace)
    assert namespace == {"__name__": compiled_name("greensq.services.shared.wire"),
                         "marker": 1}


@pytest.mark.slow   # builds a wheel, runs an interpreter
def test_an_install_without_a_compiler_runs_pure_python(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("actors", "services", "http", "client"):
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps",
         "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, CC=str(tmp_path / "no-such-compiler")))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("greensq-*.whl")
    assert not [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".so")]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "install",
                    "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    script = FROM_INSTALLED_COPY + (
        "from greensq.services.shared.version import version_banner\n"
        "from greensq.actors import topic\n"
        "print(version_banner('nsqd'), topic.__file__.startswith(sys.argv[1]),\n"
        "      type(topic.Topic.on_pub).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script, str(site)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("-pure-python) True function\n"), done.stdout


def test_a_compiled_module_older_than_its_source_is_not_used(tmp_path, caplog):
    """A checkout edited since it was compiled runs what it says, not the old build."""
    if build() != "compiled":
        pytest.skip(f"greensq's modules are not compiled here ({build()})")
    name = "greensq.services.shared.wire"
    compiled_at = os.stat(importlib.util.find_spec(compiled_name(name)).origin).st_mtime
    source = tmp_path / "wire.py"
    source.write_text("")
    for edited_at, runs_compiled in ((compiled_at + 60, False), (compiled_at - 60, True)):
        os.utime(source, (edited_at, edited_at))
        namespace = {"__name__": name, "__file__": str(source)}
        compiled.use_compiled(namespace)
        assert ("StreamReader" in namespace) == runs_compiled
    assert [record.getMessage() for record in caplog.records] == [
        f"{compiled_name(name)} is older than {source}: running the source "
        "(pip install -e . compiles it again)"]
