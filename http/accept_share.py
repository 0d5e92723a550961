"""Processes that accept on one listener share its connections fairly (nsqd's HTTP
workers on the HTTP port).

The kernel wakes every process waiting on a shared listener when connections arrive,
and the one already awake would take a burst of them (a client's pool of keep-alive
connections) alone. So each process publishes how many connections it serves in a table
the arbiter shares with them all (memory mapped before the fork), and after each accept
a process that serves more than ``AHEAD_BY`` connections beyond the least busy of the
others leaves the listener to them for a moment, again and again while it stays ahead, up to
``MAX_PAUSES`` times: a process that is busy or not scheduled yet catches up when it
runs, and one that hangs slows the others' accepts by a few milliseconds only.
"""

import mmap

AHEAD_BY = 2            # connections a process may serve beyond another without pausing
PAUSE = 0.001           # seconds a process ahead of the others leaves the listener
MAX_PAUSES = 20         # then it accepts anyway
NOT_SERVING = 1 << 62   # the count of a slot whose process is starting: nobody waits for it


class ConnectionCounts:
    """``slots`` counters in shared memory: made in the arbiter, inherited by the forked
    workers; each worker writes its own slot and reads the others'."""

    def __init__(self, slots):
        self.slots = slots
        self._memory = mmap.mmap(-1, 8 * slots)
        self.counts = memoryview(self._memory).cast("q")

    def set(self, slot, count):
        self.counts[slot] = count

    def ahead(self, slot):
        """True while ``slot`` serves more than ``AHEAD_BY`` connections beyond another."""
        counts = self.counts
        mine = counts[slot] - AHEAD_BY
        return any(mine > counts[other] for other in range(self.slots) if other != slot)


class AcceptShare:
    """One worker's side: its ``slot`` of ``counts``."""

    def __init__(self, counts, slot):
        self.counts = counts
        self.slot = slot
        counts.set(slot, 0)

    def serving(self, count):
        self.counts.set(self.slot, count)

    def ahead(self):
        return self.counts.ahead(self.slot)
