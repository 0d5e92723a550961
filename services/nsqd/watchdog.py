"""One greenlet that keeps time for every V2 client: heartbeats and read deadlines.

No read or write in a client carries a timer of its own. Heartbeats are kept in a heap by
due time and leave within a millisecond or two of it (clients check: ansq expects exactly
one heartbeat 1.1 s after an IDENTIFY with ``heartbeat_interval`` 1000). Read deadlines
(a command must arrive within two heartbeat intervals) change with every command, so they
are not scheduled: a sweep over the clients once a second enforces them, which is
precise enough for a deadline of two seconds or more.

A client has at most one live entry in the heap. Rescheduling (every IDENTIFY restarts
the ticker) or cancelling (a closed connection) empties the old entry in place, so the
heap never keeps a closed client alive, and the heap is rebuilt without the empty
entries once they are half of it: it stays within about twice the number of clients
however often they reschedule.
"""

import heapq
import itertools
import time

import gevent
from gevent.event import Event

SWEEP_INTERVAL = 1.0
MIN_COMPACTION = 64       # empty entries tolerated before the heap is worth rebuilding


class Watchdog:
    """Sessions call ``schedule`` when their next heartbeat changes and ``cancel`` when
    they end; the watchdog calls ``client.heartbeat(now)`` when it is due (which returns
    the next due time, or None) and ``client.check_read_deadline(now)`` on every sweep."""

    def __init__(self, clients):
        self.clients = clients            # the live set, swept for read deadlines
        self._heap = []                   # [due, seq, client or None once lapsed]
        self._entries = {}                # client -> its live heap entry
        self._lapsed = 0                  # entries in the heap whose client is None
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
        """``client``'s next heartbeat is at ``due`` (monotonic); its earlier one lapses."""
        self.cancel(client)
        self._push(client, due)
        if due < self._sleeping_until:
            self._wake.set()

    def cancel(self, client):
        """No more heartbeats for ``client`` (until it schedules one again)."""
        entry = self._entries.pop(client, None)
        if entry is None:
            return
        entry[2] = None
        self._lapsed += 1
        heap = self._heap
        if self._lapsed > MIN_COMPACTION and self._lapsed * 2 > len(heap):
            heap[:] = [live for live in heap if live[2] is not None]
            heapq.heapify(heap)
            self._lapsed = 0

    def _push(self, client, due):
        entry = [due, next(self._seq), client]
        self._entries[client] = entry
        heapq.heappush(self._heap, entry)

    def _run(self):
        heap = self._heap
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while True:
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, client = heapq.heappop(heap)
                if client is None:
                    self._lapsed -= 1
                    continue
                del self._entries[client]
                following = client.heartbeat(now)
                if following is not None:
                    self._push(client, following)
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                for client in list(self.clients):
                    client.check_read_deadline(now)
            self._sleeping_until = min(next_sweep, heap[0][0] if heap else next_sweep)
            self._wake.clear()
            self._wake.wait(max(0.0, self._sleeping_until - time.monotonic()))
            self._sleeping_until = float("-inf")
