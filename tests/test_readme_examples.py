"""The examples of README.md and client/README.md, run as written against real daemons.

Every ```python block of the two READMEs is either run here as a script (the complete
examples, in ``EXAMPLES``) or listed in ``FRAGMENTS`` (pieces of a program the reader
writes); a new block must be one or the other. A script runs against an nsqlookupd and an
nsqd on free ports, with only its addresses rewritten (``127.0.0.1:4150`` becomes that
nsqd's TCP port, and so on); it runs unbuffered, as at a terminal, and a script that runs
until Ctrl-C gets SIGINT once it has shown what it does.

README.md's first command ends with ``.venv/bin/greensq-local``: that runs, with its
fixed ports, in a private network namespace, and README.md's client example runs there
against it with nothing rewritten.
"""

import json
import re
import signal
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from support import CommandProcess, V2Client, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
READMES = ("README.md", "client/README.md")

# name: (README, a piece of text only its block has)
EXAMPLES = {
    "client": ("README.md", 'Producer(["127.0.0.1:4150"]).publish("events", b"hello")'),
    "on_asyncio": ("README.md", "aio.run(main())"),   # not asyncio.py: it would shadow asyncio
    "testing": ("README.md", "from greensq.http.testing import Daemon"),   # a pytest module
    "imports": ("client/README.md", "from greensq.client import Producer, Consumer\n"),
    "publishing": ("client/README.md", "producer.deferred_publish("),
    "metrics": ("client/README.md", "WSGIServer("),
    "worker": ("client/README.md", "def resize_image(message):"),
    "pubsub": ("client/README.md", "def subscriber(name):"),
    "archiving": ("client/README.md", "def flush_every_second():"),
    "http_clients": ("client/README.md", "NsqdHTTPClient("),
}
FRAGMENTS = [
    # Consuming: process() and log are the reader's own.
    ("client/README.md", "process(message.body)"),
    # On asyncio: store() is the reader's own (README.md's asyncio example runs).
    ("client/README.md", "await store(message.body)"),
]
ADDRESS = re.compile(r'127\.0\.0\.1(:|", )(\d+)')   # "127.0.0.1:4150", ("127.0.0.1", 8080)


def python_blocks(readme):
    text = (REPO / readme).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


def example(name):
    readme, marker = EXAMPLES[name]
    (block,) = [block for block in python_blocks(readme) if marker in block]
    return block


def test_every_python_block_is_run_or_a_known_fragment():
    known = list(EXAMPLES.values()) + FRAGMENTS
    for readme in READMES:
        for block in python_blocks(readme):
            matches = [marker for where, marker in known if where == readme and marker in block]
            assert len(matches) == 1, f"{readme}: run or list this example:\n{block}"


class Cluster:
    """An nsqlookupd and an nsqd registered with it, on free ports."""

    def __init__(self, lookupd, nsqd):
        self.lookupd, self.nsqd = lookupd, nsqd
        self.ports = {4150: nsqd.tcp_port, 4151: nsqd.http_port,
                      4160: lookupd.tcp_port, 4161: lookupd.http_port}

    def script(self, tmp_path, name, **ports):
        """Start example ``name`` with its addresses rewritten (``ports`` adds any other
        port it uses); a CommandProcess."""
        mapping = {**self.ports, **{int(old): new for old, new in ports.items()}}

        def rewrite(match):
            port = int(match[2])
            assert port in mapping, f"example {name} uses port {port}: give it one"
            return f"127.0.0.1{match[1]}{mapping[port]}"

        path = tmp_path / f"{name}.py"
        path.write_text(ADDRESS.sub(rewrite, example(name)))
        return CommandProcess([sys.executable, "-u", str(path)], cwd=tmp_path).start()

    def channel(self, topic, channel):
        return self.nsqd.channel_stats(topic, channel) or {}

    def finished(self, topic, channel, count):
        """True once ``count`` messages went through the channel and none is left."""
        stats = self.channel(topic, channel)
        return (stats.get("message_count") == count and stats["depth"] == 0
                and stats["in_flight_count"] == 0)


@pytest.fixture
def cluster(lookupd_factory, nsqd_factory):
    lookupd = lookupd_factory()
    nsqd = nsqd_factory(f"--lookupd-tcp-address=127.0.0.1:{lookupd.tcp_port}",
                        "--broadcast-address=127.0.0.1")
    return Cluster(lookupd, nsqd)


def run_to_the_end(process, timeout=60):
    status = process.wait(timeout)
    assert status == 0, process.log_text()
    assert process.log_text() == ""
    return process.stdout_lines()


def interrupt(process):
    """Ctrl-C, as the reader would; the script must end."""
    process.stop(signal.SIGINT, timeout=30)


def test_readme_client_example(cluster, tmp_path):
    script = cluster.script(tmp_path, "client")
    try:
        wait_until(lambda: script.stdout_lines() == ["b'hello'"], timeout=30,
                   message="the example to print the message")
        wait_until(lambda: cluster.finished("events", "archive", 1),
                   message="the message finished")
    finally:
        interrupt(script)


def test_readme_asyncio_example(cluster, tmp_path):
    assert run_to_the_end(cluster.script(tmp_path, "on_asyncio")) == ["b'hello'"]
    assert cluster.finished("events", "archive", 1)


@pytest.mark.slow
def test_readme_testing_example_passes_under_pytest(tmp_path):
    path = tmp_path / "test_example.py"
    path.write_text(example("testing"))
    pytest_run = CommandProcess([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 str(path)], cwd=tmp_path).start()
    lines = run_to_the_end(pytest_run, timeout=120)
    assert lines and lines[-1].startswith("1 passed"), lines


def test_imports(cluster, tmp_path):
    assert run_to_the_end(cluster.script(tmp_path, "imports")) == []


def test_publishing(cluster, tmp_path):
    assert run_to_the_end(cluster.script(tmp_path, "publishing")) == []
    assert cluster.nsqd.topic_stats("events")["message_count"] == 5


def test_metrics_collection_from_an_api(cluster, tmp_path):
    port = free_port()
    script = cluster.script(tmp_path, "metrics", **{"8080": port})

    def get():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/users/7", timeout=5) as resp:
                return resp.read()
        except OSError:
            return None

    try:
        assert wait_until(get, timeout=30, message="the API to answer") == b"hello\n"
        reader = V2Client(cluster.nsqd.tcp_port)
        reader.sub("api_requests", "check", rdy=1)
        metric = json.loads(reader.read_message().body)
        assert metric["path"] == "/users/7" and metric["ms"] >= 0
    finally:
        interrupt(script)


def test_the_worker_pattern(cluster, tmp_path):
    script = cluster.script(tmp_path, "worker")
    try:
        cluster.nsqd.http("POST", "/pub?topic=images", b'{"url": "http://example.com/cat.png"}')
        wait_until(lambda: script.stdout_lines() == ["resizing http://example.com/cat.png"],
                   timeout=30, message="the worker to take the job")
        wait_until(lambda: cluster.finished("images", "resizer", 1), message="the job finished")
    finally:
        interrupt(script)


def test_publish_subscribe(cluster, tmp_path):
    lines = run_to_the_end(cluster.script(tmp_path, "pubsub"))
    assert sorted(lines) == ["email got b'greensq released'",
                             "search-index got b'greensq released'"]


def test_archiving(cluster, tmp_path):
    script = cluster.script(tmp_path, "archiving")
    archive = tmp_path / "events.log"
    try:
        cluster.nsqd.http("POST", "/mpub?topic=events", b"one\ntwo\nthree")
        wait_until(lambda: cluster.finished("events", "archive", 3), timeout=30,
                   message="the messages finished once flushed")
        assert sorted(archive.read_bytes().splitlines()) == [b"one", b"three", b"two"]
    finally:
        interrupt(script)


def test_http_clients(cluster, tmp_path):
    lines = run_to_the_end(cluster.script(tmp_path, "http_clients"))
    assert lines == [f"127.0.0.1:{cluster.nsqd.tcp_port}"]
    assert cluster.channel("events", "archive") is not None
    assert cluster.nsqd.topic_stats("events")["message_count"] == 1


def test_first_command_runs_greensq_local_for_the_client_example(netns, tmp_path):
    text = (REPO / "README.md").read_text()
    first = re.search(r"^```sh\n(.*?)\n```$", text, re.M | re.S)[1]
    command = first.split(" && ")[-1]
    assert command == ".venv/bin/greensq-local"
    local_bin = Path(sysconfig.get_path("scripts")) / "greensq-local"
    local = CommandProcess(netns.enter([str(local_bin)]), cwd=tmp_path).start()
    try:
        wait_until(lambda: len(netns.listening()) == 5, timeout=60,
                   message="greensq-local's daemons listening")
        client = tmp_path / "client.py"
        client.write_text(example("client"))
        script = CommandProcess(netns.enter([sys.executable, "-u", str(client)])).start()
        try:
            wait_until(lambda: script.stdout_lines() == ["b'hello'"], timeout=30,
                       message="the client example to print the message")
        finally:
            interrupt(script)
    finally:
        assert local.stop(signal.SIGINT, timeout=60) == 0, local.log_text()
    metadata = json.loads((tmp_path / "data" / "nsqd" / "nsqd.dat").read_text())
    assert metadata["topics"][0]["name"] == "events"
    assert metadata["topics"][0]["channels"][0]["name"] == "archive"
