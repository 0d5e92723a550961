"""One greenlet that keeps time for every V2 client: heartbeats and read deadlines.

No read or write in a client carries a timer of its own. Heartbeats are kept in a heap by
due time and leave within a millisecond or two of it (clients check: ansq expects exactly
one heartbeat 1.1 s after an IDENTIFY with ``heartbeat_interval`` 1000). Read deadlines
(a command must arrive within two heartbeat intervals) change with every command, so they
are not scheduled: a sweep over the clients once a second enforces them, which is
precise enough for a deadline of two seconds or more.
"""

import heapq
import itertools
import time

import gevent
from gevent.event import Event

SWEEP_INTERVAL = 1.0


class Watchdog:
    """Sessions call ``schedule`` when their next heartbeat changes; the watchdog calls
    ``client.heartbeat(now)`` when it is due (which returns the next due time, or None)
    and ``client.check_read_deadline(now)`` on every sweep."""

    def __init__(self, clients):
        self.clients = clients            # the live set, swept for read deadlines
        self._heap = []                   # (due, seq, client)
        self._seq = itertools.count()
        self._wake = Event()
        self._sleeping_until = float("inf")
        self._greenlet = None

    def start(self):
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self):
        if self._greenlet is not None:
            self._greenlet.kill()

    def schedule(self, client, due):
        """``client``'s next heartbeat is at ``due`` (monotonic); older entries lapse."""
        heapq.heappush(self._heap, (due, next(self._seq), client))
        if due < self._sleeping_until:
            self._wake.set()

    def _run(self):
        heap = self._heap
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while True:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, _, client = heapq.heappop(heap)
                if due == client.next_heartbeat:     # not superseded, not closed
                    following = client.heartbeat(now)
                    if following is not None:
                        heapq.heappush(heap, (following, next(self._seq), client))
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                for client in list(self.clients):
                    client.check_read_deadline(now)
            self._sleeping_until = min(next_sweep, heap[0][0] if heap else next_sweep)
            self._wake.clear()
            self._wake.wait(max(0.0, self._sleeping_until - time.monotonic()))
            self._sleeping_until = float("-inf")
