"""``--status-every`` timing summaries, in the format of NSQ's tools (bitly's timer_metrics).

Every ``status_every`` requests a line like::

    2024/01/02 15:04:05 [aggregate]: finished 250 - 99th: 3.10ms - 95th: 2.04ms - avg: 1.12ms

is logged over the last ``status_every`` timings. As in timer_metrics, the first line
comes with request ``status_every + 1``, when the window wraps; 0 disables it.
"""

import logging
import math
import time

log = logging.getLogger("greensq.tools")


def percentile(percent, ordered):
    """timer_metrics' percentile of a sorted list (0 for an empty one)."""
    if not ordered:
        return 0.0
    index = min(int(math.ceil(percent / 100.0 * len(ordered) + 0.5)), len(ordered) - 1)
    return ordered[index]


class TimerMetrics:
    def __init__(self, status_every, prefix):
        self.status_every = status_every
        self.prefix = prefix
        self.timings = []
        self.position = 0
        if 0 < status_every < 100:
            log.info("Warning: use more than 100 status values for accurate percentiles "
                     "(configured with %d)", status_every)

    def status(self, started):
        """Record the time since ``started`` (a ``time.monotonic()`` value)."""
        if self.status_every:
            self.record(time.monotonic() - started)

    def record(self, seconds):
        self.position += 1
        wrapped = self.position > self.status_every
        if wrapped:
            self.position = 1
        if self.position > len(self.timings):
            self.timings.append(seconds)
        else:
            self.timings[self.position - 1] = seconds
        if wrapped:
            log.info("%s", self.summary())

    def summary(self):
        ordered = sorted(self.timings)
        average = sum(ordered) / len(ordered) if ordered else 0.0
        return (f"{self.prefix} finished {len(ordered)} - "
                f"99th: {percentile(99.0, ordered) * 1000:.2f}ms - "
                f"95th: {percentile(95.0, ordered) * 1000:.2f}ms - "
                f"avg: {average * 1000:.2f}ms")
