"""A data path nsqd cannot write: at start, when the disk fills up, when permission is
revoked while nsqd runs, and at shutdown.

As Go's nsqd, greensq refuses to start when it cannot write ``nsqd.dat`` (``FATAL:
failed to persist metadata - ...``, exit 1). While it runs, a publish whose write fails
is refused (``E_PUB_FAILED``, HTTP 503 ``EXITING``), ``/stats`` health says ``NOK - ...``
(and ``/ping`` answers 500 with it) until writing works again; a shutdown that cannot
write everything says what it lost and exits 1. Whatever the failure, every message that
was acknowledged and is on disk is delivered after a restart.

The disk fills up on a small tmpfs the test mounts; permissions bind ``nobody`` (root
ignores them), so those nsqds run as ``nobody``. Both need root: without it the tests
skip, with a reason, except under CI (env ``CI``) where they fail.
"""

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from support import FRAME_ERROR, FRAME_RESPONSE, Daemon, V2Client, consume_expected, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes

NOBODY = 65534
MEM = 10                       # --mem-queue-size: what stays in memory, per queue
BODY_SIZE = 4000
MODES = pytest.mark.parametrize("durable", [False, True], ids=["default", "durable"])


def require(condition, reason):
    """Skip with ``reason`` unless ``condition``; under CI, fail instead."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def root():
    require(os.geteuid() == 0, "needs root (to mount a tmpfs and to run nsqd as nobody)")
    require(shutil.which("setpriv"), "needs setpriv (util-linux) to run nsqd as nobody")


@pytest.fixture
def directories(root):
    """Make directories under /tmp (which ``nobody`` can reach); removed afterwards."""
    made = []

    def make(owner=0, mode=0o755):
        path = tempfile.mkdtemp(prefix="greensq-disk-")
        os.chown(path, owner, owner)
        os.chmod(path, mode)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


class SmallDisk:
    """A tmpfs mounted on ``path``, that the test can fill up and resize."""

    def __init__(self, path):
        self.path = path

    def resize(self, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", self.path], check=True)

    def fill(self):
        """Take the last free byte, so that not even a small file can be written."""
        with open(os.path.join(self.path, "ballast"), "ab", buffering=0) as fh:
            for chunk in (b"\0" * 4096, b"\0"):
                try:
                    while True:
                        fh.write(chunk)
                except OSError:
                    pass

    def empty_ballast(self):
        os.remove(os.path.join(self.path, "ballast"))


@pytest.fixture
def small_disk(directories):
    """A 1 MiB tmpfs, unmounted at the end whatever happened."""
    path = directories()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", path],
                             capture_output=True, text=True)
    require(mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode:
            subprocess.run(["umount", "-l", path], capture_output=True)


class NobodyDaemon(Daemon):
    """nsqd run as ``nobody``, whom file permissions bind."""

    def command(self):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                *super().command()]


@pytest.fixture
def daemons():
    """Start nsqds (``Daemon`` or ``NobodyDaemon``); any still running are stopped."""
    started = []

    def start(data_path, durable, cls=Daemon):
        args = [f"--mem-queue-size={MEM}"] + (["--durable"] if durable else [])
        daemon = cls(data_path, args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


# -- publishing ----------------------------------------------------------------------------

_counter = itertools.count()


def bodies(topic, count):
    return [f"{topic}-{next(_counter)}-".encode().ljust(BODY_SIZE, b".") for _ in range(count)]


def publish(nsqd, topic, batch, over):
    """Publish ``batch`` (``over`` "tcp" or "http"; PUB for one body, MPUB for more): True
    for an OK, False for nsqd's refusal, which must be NSQ's: a fatal ``E_PUB_FAILED``
    (``E_MPUB_FAILED``) error, or HTTP 503 ``{"message": "EXITING"}``."""
    verb = "PUB" if len(batch) == 1 else "MPUB"
    if over == "http":
        path = f"/{verb.lower()}?topic={topic}" + ("&binary=true" if verb == "MPUB" else "")
        payload = batch[0] if verb == "PUB" else b"".join(
            [len(batch).to_bytes(4, "big")] + [len(b).to_bytes(4, "big") + b for b in batch])
        status, _, body = nsqd.http("POST", path, payload)
        if status == 200:
            assert body == b"OK"
            return True
        assert (status, json.loads(body)) == (503, {"message": "EXITING"}), (status, body)
        return False
    client = V2Client(nsqd.tcp_port)
    try:
        kind, data = client.pub(topic, batch[0]) if verb == "PUB" else client.mpub(topic, batch)
        if (kind, data) == (FRAME_RESPONSE, b"OK"):
            return True
        assert kind == FRAME_ERROR and data.startswith(b"E_%s_FAILED %s failed " % (
            verb.encode(), verb.encode())), (kind, data)
        assert client.is_closed(), "the refusal is fatal: the connection is closed"
        return False
    finally:
        client.close()


def publish_all(nsqd, topic, count):
    """``count`` single PUBs that must all be acknowledged; their bodies."""
    acked = []
    for batch, over in zip([[body] for body in bodies(topic, count)],
                           itertools.cycle(["tcp", "http"])):
        assert publish(nsqd, topic, batch, over), nsqd.log_text()[-3000:]
        acked.extend(batch)
    return acked


def publish_until_refused(nsqd, topic, limit=2000):
    """PUB, MPUB, /pub and /mpub in turn until one is refused; the acknowledged bodies."""
    acked = []
    ways = itertools.cycle([(1, "tcp"), (3, "tcp"), (1, "http"), (3, "http")])
    for count, over in itertools.islice(ways, limit):
        batch = bodies(topic, count)
        if not publish(nsqd, topic, batch, over):
            return acked
        acked.extend(batch)
    raise AssertionError(f"{limit} publishes and none refused; log:\n{nsqd.log_text()[-3000:]}")


# -- health --------------------------------------------------------------------------------

def health(nsqd):
    return nsqd.stats()["health"]


def assert_unhealthy(nsqd, reason):
    """/stats says NSQ's ``NOK - <error>`` and /ping answers 500 with the same text."""
    text = health(nsqd)
    assert text.startswith("NOK - ") and reason in text, text
    status, _, body = nsqd.http("GET", "/ping")
    assert (status, json.loads(body)) == (500, {"message": text})


def wait_healthy(nsqd):
    wait_until(lambda: health(nsqd) == "OK", timeout=30, message="health OK again")
    status, _, body = nsqd.http("GET", "/ping")
    assert (status, body) == (200, b"OK")


def assert_no_traceback(nsqd):
    log = nsqd.log_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]


# -- the tests -----------------------------------------------------------------------------

@MODES
def test_nsqd_refuses_to_start_on_a_data_path_it_cannot_write(directories, daemons, durable):
    nsqd = daemons(directories(owner=0, mode=0o755), durable, NobodyDaemon).start(wait=False)
    assert nsqd.proc.wait(timeout=30) == 1, nsqd.log_text()
    log = nsqd.log_text()
    assert "FATAL: failed to persist metadata - [Errno 13] Permission denied" in log, log
    assert "listening on" not in log, log
    assert_no_traceback(nsqd)


@MODES
def test_a_full_disk_refuses_publishes_until_space_is_freed(small_disk, daemons, durable):
    nsqd = daemons(os.path.join(small_disk.path, "data"), durable).start()
    for path in ("/topic/create?topic=full", "/channel/create?topic=full&channel=ch"):
        assert nsqd.http("POST", path, b"")[0] == 200
    acked = publish_until_refused(nsqd, "full")
    assert len(acked) > MEM
    assert_unhealthy(nsqd, "No space left on device")
    small_disk.fill()                 # not even a small publish fits now, either way
    for over in ("tcp", "http"):
        assert not publish(nsqd, "full", bodies("full", 1), over)

    # A consumer takes some of the channel's memory: the default mode takes new publishes
    # there (durable mode writes them first: refused), and the disk is no healthier.
    consumer = V2Client(nsqd.tcp_port)
    consumer.sub("full", "ch", rdy=5)
    taken = [consumer.read_message() for _ in range(5)]
    assert {msg.body for msg in taken} <= set(acked)
    for batch in [bodies("full", 1) for _ in range(5)]:
        if publish(nsqd, "full", batch, "tcp"):
            acked.extend(batch)
    assert len(acked) == len(set(acked))
    assert_unhealthy(nsqd, "No space left on device")
    # Gone without a FIN: its messages are requeued where there is no room on disk, and
    # must not be lost for it.
    consumer.close()
    wait_until(lambda: nsqd.channel_stats("full", "ch")["in_flight_count"] == 0,
               message="the consumer's messages requeued")

    small_disk.empty_ballast()
    small_disk.resize("8m")
    acked += publish_all(nsqd, "full", 20)
    wait_healthy(nsqd)
    assert nsqd.stop() == 0, nsqd.log_text()[-3000:]
    assert_no_traceback(nsqd)

    nsqd.start()
    consume_expected(nsqd.tcp_port, "full", "ch", acked)


@MODES
def test_a_shutdown_on_a_full_disk_says_what_it_lost(small_disk, daemons, durable):
    nsqd = daemons(os.path.join(small_disk.path, "data"), durable).start()
    in_memory = publish_all(nsqd, "lost", MEM)     # no channel: the topic keeps them
    on_disk = publish_until_refused(nsqd, "lost")
    assert on_disk
    small_disk.fill()
    assert nsqd.stop() == 1, nsqd.log_text()[-3000:]
    log = nsqd.log_text()
    assert "ERROR: failed to persist metadata - [Errno 28] No space left on device" in log
    if not durable:      # durable mode has every acknowledged message on disk already
        assert ("ERROR: topic lost: failed to write messages to backend at shutdown - "
                f"[Errno 28] No space left on device; {MEM} messages lost") in log, log
    assert_no_traceback(nsqd)

    nsqd.start(wait=False)                        # a full disk at start: a FATAL, exit 1
    assert nsqd.proc.wait(timeout=30) == 1, nsqd.log_text()
    assert "FATAL: failed to persist metadata - [Errno 28] No space left on device" \
        in nsqd.log_text()
    assert_no_traceback(nsqd)

    small_disk.empty_ballast()
    small_disk.resize("8m")
    nsqd.start()
    consume_expected(nsqd.tcp_port, "lost", "ch", on_disk + (in_memory if durable else []))


@MODES
def test_permission_revoked_while_running(directories, daemons, durable):
    data = directories(owner=NOBODY, mode=0o700)
    nsqd = daemons(data, durable, NobodyDaemon).start()
    kept = publish_all(nsqd, "kept", MEM + 20)   # its segment is open: it stays writable
    assert nsqd.http("POST", "/topic/create?topic=emptied", b"")[0] == 200

    os.chmod(data, 0o500)         # no new file: a new queue's first segment is refused
    fresh = publish_until_refused(nsqd, "fresh")
    assert len(fresh) <= (0 if durable else MEM), "memory may take some, never the disk"
    assert_unhealthy(nsqd, "Permission denied")
    status, _, body = nsqd.http("POST", "/topic/empty?topic=emptied", b"")
    assert (status, json.loads(body)) == (500, {"message": "INTERNAL_ERROR"})

    os.chmod(data, 0o700)
    fresh += publish_all(nsqd, "fresh", 20)
    wait_healthy(nsqd)

    os.chmod(data, 0o500)         # neither nsqd.dat nor the queues' metadata can be written
    assert nsqd.stop(signal.SIGINT) == 1, nsqd.log_text()[-3000:]   # SIGINT as SIGTERM
    log = nsqd.log_text()
    assert "ERROR: failed to persist metadata - [Errno 13] Permission denied" in log, log
    assert_no_traceback(nsqd)

    os.chmod(data, 0o700)
    nsqd.start()
    consume_expected(nsqd.tcp_port, "kept", "ch", kept)
    consume_expected(nsqd.tcp_port, "fresh", "ch", fresh)
