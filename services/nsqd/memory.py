"""nsqd's memory figures under NSQ's keys, measured for a Python process.

Go's ``/stats`` reports its runtime's heap; the closest figures a Python process has:

============================  ===========================================================
``heap_objects``              memory blocks allocated by Python's object allocator
                              (``sys.getallocatedblocks``): roughly the live objects
``heap_in_use_bytes``         resident set size (RSS) of the process
``heap_idle_bytes``           bytes the C allocator holds free for reuse (glibc
                              ``mallinfo2``; 0 elsewhere)
``heap_released_bytes``       0: Python does not report memory returned to the system
``gc_pause_usec_100/99/95``   percentiles of the cyclic garbage collector's last 256
                              pauses, in microseconds (as Go's last 256 GC pauses)
``next_gc_bytes``             0: Python's collector is triggered by allocation counts,
                              not by a heap size
``gc_total_runs``             collections of every generation since start
============================  ===========================================================
"""

import ctypes
import gc
import os
import sys
import time
from collections import deque

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_PAUSES_KEPT = 256


class GcPauses:
    """The durations of the last collections, timed by a ``gc.callbacks`` hook."""

    def __init__(self):
        self.pauses_ns = deque(maxlen=_PAUSES_KEPT)
        self._started = None
        self.installed = False

    def install(self):
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True

    def _callback(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started is not None:
            self.pauses_ns.append(time.perf_counter_ns() - self._started)
            self._started = None

    def percentile_usec(self, percent):
        """Go's pick: the pause at index floor(percent/100 * n + 0.5), in microseconds."""
        pauses = sorted(self.pauses_ns)
        if not pauses:
            return 0
        index = min(len(pauses) - 1, int(percent / 100.0 * len(pauses) + 0.5))
        return pauses[index] // 1000


GC_PAUSES = GcPauses()


def resident_bytes():
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL(None)   # the process's own symbols, libc's included
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    return mallinfo2


_mallinfo2 = _load_mallinfo2()


def malloc_free_bytes():
    return _mallinfo2().fordblks if _mallinfo2 is not None else 0


def gc_total_runs():
    return sum(generation["collections"] for generation in gc.get_stats())


def memory_stats():
    """The ``memory`` object of ``/stats``, with Go's keys in Go's order."""
    return {
        "heap_objects": sys.getallocatedblocks(),
        "heap_idle_bytes": malloc_free_bytes(),
        "heap_in_use_bytes": resident_bytes(),
        "heap_released_bytes": 0,
        "gc_pause_usec_100": GC_PAUSES.percentile_usec(100.0),
        "gc_pause_usec_99": GC_PAUSES.percentile_usec(99.0),
        "gc_pause_usec_95": GC_PAUSES.percentile_usec(95.0),
        "next_gc_bytes": 0,
        "gc_total_runs": gc_total_runs(),
    }
