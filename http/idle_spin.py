"""The hub polls the network for a moment before it sleeps, as Go's runtime spins before
it parks a thread: nsqd's ``--idle-spin``, run in each of its workers."""

import time

from gevent import get_hub


class IdleSpin:
    """Keep the hub polling the network, not sleeping, for ``window`` seconds after it
    last had work.

    A process asleep in ``epoll_wait`` needs tens of microseconds to wake on a virtual
    machine: a client publishing one request at a time waits that much on every request.
    Go's runtime spins for a moment before it parks its threads; this does the same for
    the hub. An active libev idle watcher makes the loop poll without waiting; the idle
    callback stops it once ``window`` has passed without an iteration that had events,
    and a check watcher (run after each poll) starts it again when the loop wakes from
    sleep. So a busy hub runs neither callback, an idle one runs neither after its
    window, and the CPU spent is at most ``window`` per quiet spell.
    """

    def __init__(self, window, loop=None):
        self.window = window
        self.loop = loop or get_hub().loop
        self._idle = self.loop.idle()
        self._woken = self.loop.check()
        for watcher in (self._idle, self._woken):
            watcher.ref = False     # neither keeps the loop running
        self._last_iteration = -2
        self._quiet_since = 0.0
        self._woken.start(self._on_woken)

    @property
    def spinning(self):
        return self._idle.active

    def stop(self):
        self._idle.stop()
        self._woken.stop()

    def _on_woken(self):
        self._woken.stop()
        self._last_iteration = -2
        self._idle.start(self._on_idle)

    def _on_idle(self):
        iteration = self.loop.iteration
        now = time.perf_counter()
        if iteration != self._last_iteration + 1:   # the iterations between had events
            self._quiet_since = now
        self._last_iteration = iteration
        if now - self._quiet_since >= self.window:
            self._idle.stop()
            self._woken.start(self._on_woken)
