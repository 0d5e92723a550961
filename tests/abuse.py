"""What the other clients of a daemon see while one client abuses it.

``StallMonitor`` is a thread that, on connections of its own, keeps doing a ``GET /ping``
and a PUB round trip (a few milliseconds apart) and records the slowest of each. A
round trip still waiting when the monitor stops counts with the time it has waited so
far, so a daemon that never answers again fails as clearly as a slow one.
"""

import http.client
import threading
import time

from support import FRAME_RESPONSE, V2Client

PROBE_TOPIC = "stall_probe"


class StallMonitor:
    """``with StallMonitor(nsqd) as monitor: <abuse>`` then ``monitor.check(bound)``."""

    def __init__(self, daemon, pause=0.005, timeout=60.0):
        self.daemon = daemon
        self.pause = pause
        self.timeout = timeout
        self.worst = {"ping": 0.0, "pub": 0.0}
        self.rounds = 0
        self.errors = []
        self._stop = threading.Event()
        self._current = None            # (probe name, start time) while one is under way
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._http = http.client.HTTPConnection(
            "127.0.0.1", self.daemon.http_port, timeout=self.timeout)
        self._tcp = V2Client(self.daemon.tcp_port, timeout=self.timeout)
        self._probe("ping", self._ping)     # both connections up before the abuse starts
        self._probe("pub", self._pub)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(self.timeout)
        current = self._current
        if current is not None:             # a round trip that never ended
            name, started = current
            self._record(name, time.monotonic() - started)
            self.errors.append(f"{name} still waiting for its answer")
        self._http.close()
        self._tcp.close()

    def _run(self):
        while not self._stop.is_set():
            self._probe("ping", self._ping)
            self._probe("pub", self._pub)
            self.rounds += 1
            self._stop.wait(self.pause)

    def _probe(self, name, round_trip):
        started = time.monotonic()
        self._current = (name, started)
        try:
            round_trip()
        except Exception as exc:            # a dropped or stuck connection: recorded
            self.errors.append(f"{name}: {exc!r}")
            self._stop.set()
        else:
            self._current = None
        self._record(name, time.monotonic() - started)

    def _record(self, name, seconds):
        self.worst[name] = max(self.worst[name], seconds)

    def _ping(self):
        self._http.request("GET", "/ping")
        response = self._http.getresponse()
        body = response.read()
        assert (response.status, body) == (200, b"OK"), (response.status, body)

    def _pub(self):
        frame = self._tcp.pub(PROBE_TOPIC, b"probe")
        assert frame == (FRAME_RESPONSE, b"OK"), frame

    def check(self, bound=1.0):
        """Every round trip answered, none slower than ``bound`` seconds."""
        assert not self.errors, (self.errors, self.worst)
        assert self.rounds > 0, "the monitor never completed a round"
        assert max(self.worst.values()) < bound, (
            f"other clients stalled: worst /ping {self.worst['ping']:.2f} s, "
            f"worst PUB {self.worst['pub']:.2f} s (bound {bound} s)")


def worker_rss(daemon):
    """The worker's resident memory as nsqd reports it (``heap_in_use_bytes``)."""
    return daemon.stats(include_mem="true")["memory"]["heap_in_use_bytes"]


def worker_peak_rss(pid):
    """The most resident memory the process has ever had (``VmHWM``), in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")
