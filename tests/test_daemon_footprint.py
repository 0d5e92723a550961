"""What a daemon's two processes load: the arbiter stays small, the worker has the rest.

The arbiter (the PID that was started) binds, locks and supervises; gevent, greenlet and
Falcon belong to the worker, imported after the fork, so the arbiter does not hold them
and the worker does not copy them. Modules the dependencies import but no daemon uses
are deferred, and still work the moment something does use them. Files a daemon does not
need are not read.
"""

import os
import shutil
import signal
import ssl
import subprocess
import sys

import pytest

from support import Daemon, children, nsqadmin_daemon, nsqlookupd_daemon, wait_until

pytestmark = [
    pytest.mark.slow,   # starts daemon processes
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps"),
]

WORKER_LIBRARIES = ("/gevent/", "/greenlet/", "/falcon/")


def mapped_files(pid):
    with open(f"/proc/{pid}/maps") as fh:
        return {line.split()[-1] for line in fh if "/" in line}


def libraries(paths):
    return sorted(path for path in paths if any(part in path for part in WORKER_LIBRARIES))


@pytest.mark.parametrize("make", [
    lambda tmp_path: Daemon(tmp_path / "data"),
    lambda tmp_path: nsqlookupd_daemon(None),
    lambda tmp_path: nsqadmin_daemon(["--nsqd-http-address=127.0.0.1:4151"]),
], ids=["nsqd", "nsqlookupd", "nsqadmin"])
def test_gevent_and_falcon_are_loaded_by_the_worker_only(tmp_path, make):
    daemon = make(tmp_path).start()
    try:
        assert daemon.http("GET", "/ping")[0] == 200
        worker = wait_until(lambda: children(daemon.proc.pid), message="the worker")[0]
        assert libraries(mapped_files(daemon.proc.pid)) == []
        worker_libraries = libraries(mapped_files(worker))
        for part in WORKER_LIBRARIES:
            assert any(part in path for path in worker_libraries), part
    finally:
        daemon.stop()


DEFERRED_USES = """
import greensq.http.launcher
from greensq.http.unused_modules import UNUSED
deferred = sorted(name for name in UNUSED if type(sys.modules[name]).__name__ == "DeferredModule")
print(",".join(deferred))

import argparse, email.utils, html, importlib.metadata, logging.handlers, urllib.request
import xml.etree.ElementTree as et
from html import unescape

print(html.escape("<a>"), unescape("&lt;"))
print(argparse.ArgumentParser(prog="p").prog)
print(email.utils.formatdate(0, usegmt=True))
print(importlib.metadata.version("gunicorn") != "")
print(logging.handlers.RotatingFileHandler.__name__)
print(et.tostring(et.Element("e")).decode())
print(urllib.request.Request("http://127.0.0.1/x").host)

import bz2, glob, locale, lzma
import email.base64mime, email.header, email.parser, email.quoprimime

print(bz2.decompress(bz2.compress(b"b")) + lzma.decompress(lzma.compress(b"l")))
print(glob.escape("a*"), locale.normalize("C"))
print(email.parser.Parser().parsestr("Subject: s\\n\\n")["Subject"], email.header.Header("h").encode())
print(email.base64mime.body_encode(b"x").strip(), email.quoprimime.header_encode(b"a b"))
print(sorted(name for name in UNUSED if type(sys.modules[name]).__name__ != "module"))
"""


def test_deferred_modules_work_when_used():
    out = subprocess.run([sys.executable, "-c", "import sys\n" + DEFERRED_USES],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert lines[0].split(",") == sorted(
        ["argparse", "email.utils", "html", "importlib.metadata", "logging.handlers",
         "urllib.request", "xml.etree.ElementTree", "glob", "email.parser", "email.feedparser",
         "email.header", "email.quoprimime", "email.base64mime", "bz2", "lzma", "locale"])
    assert lines[1:] == ["&lt;a&gt; <", "p", "Thu, 01 Jan 1970 00:00:00 GMT", "True",
                         "RotatingFileHandler", "<e />", "127.0.0.1", "b'bl'", "a[*] C",
                         "s h", "eA== =?iso-8859-1?q?a_b?=", "[]"]



def opened_until_first_ping(daemon, trace):
    """Every file ``daemon``'s processes open until it answers /ping (``strace -f``)."""
    command = daemon.command()
    daemon.command = lambda: [shutil.which("strace"), "-f", "-qq", "-e", "trace=open,openat",
                              "-o", str(trace), *command]
    daemon.start()
    try:
        assert daemon.http("GET", "/ping")[0] == 200
    finally:
        arbiter = wait_until(lambda: children(daemon.proc.pid), message="the arbiter")[0]
        os.kill(arbiter, signal.SIGTERM)
        daemon.proc.wait(30)
    opened = trace.read_text()
    assert "/falcon/" in opened   # the worker's opens are in the trace
    return opened


needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


@needs_strace
@pytest.mark.skipif(not os.path.exists("/etc/mime.types"), reason="no system mime.types")
def test_the_worker_does_not_read_the_system_mime_types(tmp_path):
    # Falcon copies mimetypes' table; Python's own is enough for the daemons, and reading
    # the system's file costs every worker start about 2 ms and 0.4 MB.
    opened = opened_until_first_ping(Daemon(tmp_path / "data"), tmp_path / "trace")
    assert "/etc/mime.types" not in opened


@needs_strace
@pytest.mark.skipif(ssl.get_default_verify_paths().cafile is None, reason="no system CA file")
def test_nsqadmin_loads_the_system_cas_at_its_first_https_request_only(tmp_path):
    # Loading them costs about 20 ms of CPU; nodes on plain HTTP never need them.
    opened = opened_until_first_ping(nsqadmin_daemon(["--nsqd-http-address=127.0.0.1:4151"]),
                                     tmp_path / "trace")
    assert ssl.get_default_verify_paths().cafile not in opened
