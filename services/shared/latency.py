"""End-to-end processing latency percentiles (``--e2e-processing-latency-percentile``).

A channel records, for every message FINished, the time from its publish to its FIN, and
``/stats`` and statsd report the configured percentiles over the last
``--e2e-processing-latency-window-time``. As in NSQ, the window is two halves: samples go
into the current half, a query reads both, and every half-window the older half is
dropped, so a query covers between one half and the whole window.

Each half is a histogram over logarithmic buckets (about 1% apart), not a list of
samples: memory stays bounded whatever the rate, and a query costs one pass over the
buckets in use. Recording a FIN batch reads the clock once and works per run of
messages with one publish timestamp (an MPUB's messages share one): a logarithm and a
dictionary update per run, a comparison per message. Reported values are the bucket's
middle, within 1% of the true latency.
"""

import math
import time
from collections import Counter
from itertools import chain
from operator import attrgetter

_GAMMA = 1.02
_INVERSE_LOG_GAMMA = 1.0 / math.log(_GAMMA)
_timestamp = attrgetter("timestamp")
_END = (None,)     # ends the last run of timestamps
_log = math.log

NO_LATENCY = {"count": 0, "percentiles": None}   # NSQ's document when nothing is tracked


def _bucket_value(index):
    """The middle of a bucket, in whole nanoseconds."""
    return round(_GAMMA ** (index + 0.5)) if index else 1


def go_number(value):
    """A float as Go's JSON writes it: integral values without ``.0``."""
    return int(value) if value == int(value) else value


class LatencyWindow:
    """The sliding-window latency histogram of one channel."""

    __slots__ = ("percentiles", "half_window", "_current", "_previous", "_moved_at",
                 "_move_due")

    def __init__(self, window_seconds, percentiles):
        self.percentiles = list(percentiles)
        self.half_window = int(window_seconds * 1e9 / 2)      # ns
        self._current = {}
        self._previous = {}
        self._moved_at = time.time_ns()
        self._move_due = self._moved_at + self.half_window

    def record(self, msgs, now_ns=None):
        """Count the latency of each FINished message (publish time to ``now_ns``)."""
        if now_ns is None:
            now_ns = time.time_ns()
        if now_ns > self._move_due:
            self._move_window(now_ns)
        current = self._current
        run_timestamp, run = None, 0
        for timestamp in chain(map(_timestamp, msgs), _END):
            if timestamp == run_timestamp:
                run += 1
                continue
            if run:     # a run of equal timestamps ended: count it in its bucket
                latency = now_ns - run_timestamp
                index = int(_log(latency) * _INVERSE_LOG_GAMMA) if latency > 1 else 0
                current[index] = current.get(index, 0) + run
            run_timestamp, run = timestamp, 1

    def _move_window(self, now_ns):
        half = self.half_window
        while now_ns > self._moved_at + half:
            self._previous, self._current = self._current, {}
            self._moved_at += half
            if now_ns > self._moved_at + half * 2:    # idle for long: start over
                self._previous = {}
                self._moved_at = now_ns
        self._move_due = self._moved_at + half

    def buckets(self):
        """Both halves' counts, merged: ``{bucket: count}``."""
        self._move_window(time.time_ns())
        merged = Counter(self._previous)
        merged.update(self._current)
        return merged

    def result(self):
        """Go's ``{"count": N, "percentiles": [{"quantile": q, "value": ns}, ...]}``."""
        return result_of(self.buckets(), self.percentiles)


def result_of(buckets, percentiles):
    """The percentiles of merged bucket counts (a channel's, or a topic's channels')."""
    count = sum(buckets.values())
    values = []
    if count:
        ordered = sorted(buckets.items())
        targets = sorted(range(len(percentiles)), key=lambda i: percentiles[i])
        found = [0] * len(percentiles)
        seen = 0
        position = 0
        for i in targets:
            rank = max(1, math.ceil(percentiles[i] * count))
            while seen < rank:
                seen += ordered[position][1]
                position += 1
            found[i] = _bucket_value(ordered[position - 1][0])
        values = found
    else:
        values = [0] * len(percentiles)
    return {"count": count,
            "percentiles": [{"quantile": go_number(q), "value": v}
                            for q, v in zip(percentiles, values)]}


def topic_result(windows, percentiles):
    """A topic's percentiles over all its channels' windows; NSQ's null ones when it has
    no channel (or percentiles are off)."""
    windows = [w for w in windows if w is not None]
    if not windows:
        return NO_LATENCY
    merged = Counter()
    for window in windows:
        merged.update(window.buckets())
    return result_of(merged, percentiles)


def nanoseconds_to_human(value):
    """NSQ's rendering of a latency in the text ``/stats`` (``1.2ms``, ``850.0us``)."""
    for scale, suffix in ((1e9, "s"), (1e6, "ms"), (1e3, "us")):
        if value > scale:
            return f"{value / scale:0.1f}{suffix}"
    return f"{value:0.1f}ns"


def human_percentiles(result):
    """The ``e2e%:`` column: each percentile's value, comma-separated."""
    return ", ".join(nanoseconds_to_human(p["value"]) for p in result["percentiles"] or ())
