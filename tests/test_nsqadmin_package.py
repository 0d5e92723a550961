"""nsqadmin as it ships: its templates and assets inside the built wheel and found from an
installed copy (not the source tree), the app served by a plain ``gunicorn`` command, and
a daemon that is gone at once when its PID is killed."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from go_nsq_fakes import FakeNsqd, load_fixture
from support import children, nsqadmin_daemon, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes

REPO = Path(__file__).resolve().parent.parent
ASSETS = ("static/nsqadmin.css", "static/nsqadmin.js", "templates/base.html",
          "templates/topics.html", "templates/topic.html", "templates/channel.html",
          "templates/nodes.html", "templates/node.html", "templates/counter.html",
          "templates/lookup.html", "templates/error.html", "templates/macros.html")

# Runs in a fresh interpreter: forget the editable install, import greensq from the
# installed copy only, and render a page from its packaged files.
CHECK_INSTALLED = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not type(f).__module__.startswith("__editable__")
                    and not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks
                     if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()
sys.path.insert(0, sys.argv[1])
from greensq.http import nsqadmin_api, nsqadmin_pages
assert nsqadmin_pages.TEMPLATES.startswith(sys.argv[1]), nsqadmin_pages.TEMPLATES
static = nsqadmin_api.Static(nsqadmin_api.STATIC)
assert static.load("nsqadmin.js") and static.load("nsqadmin.css")
html = nsqadmin_pages.make_environment().get_template("counter.html").render(
    title="Counter", total=1234, base="", asset=lambda name: name, warnings=[])
print(nsqadmin_pages.TEMPLATES, "1,234" in html)
"""


def test_assets_ship_in_the_wheel_and_load_when_installed(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("actors", "services", "http", "client"):
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("greensq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("greensq/http/__init__") for n in names)
    for asset in ASSETS:
        assert f"greensq/http/nsqadmin_assets/{asset}" in names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-c", CHECK_INSTALLED, str(site)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(site / "greensq/http/nsqadmin_assets/templates"), "True"]


def test_plain_gunicorn_serves_the_app(tmp_path):
    nsqd = FakeNsqd()
    nsqd.documents = load_fixture("go_cluster.json", {"NSQD0_PORT": nsqd.port,
                                                      "NSQD1_PORT": 0})["nsqd"][0]
    nsqd.start()
    env = dict(os.environ, NSQADMIN_OPTS=f"--nsqd-http-address={nsqd.address}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:0",
         "--log-level", "info", "greensq.http.nsqadmin_app:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True)
    try:
        port = None
        for line in proc.stderr:
            if "Listening at: http://127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1].split()[0])
                break
        assert port, "gunicorn did not start"

        def topics():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/topics", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                return None

        doc = wait_until(topics, message="the app to answer")
        assert doc == {"topics": ["events", "metrics", "orders"], "message": ""}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        nsqd.stop()


def test_killing_the_pid_ends_nsqadmin(tmp_path):
    admin = nsqadmin_daemon(["--nsqd-http-address=127.0.0.1:1"]).start()
    [worker] = wait_until(lambda: children(admin.proc.pid), message="the worker")
    admin.proc.send_signal(signal.SIGKILL)
    admin.proc.wait()

    def gone():
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, message="the worker to die with its arbiter")
    with socket.socket() as sock:
        # As a daemon binds: free of listeners, whatever closed connections wait out
        # TIME_WAIT on it (the harness's own requests, say).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", admin.http_port))      # the port is free again
