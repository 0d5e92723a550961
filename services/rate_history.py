"""The rolling history behind nsqadmin's live graphs: message rates and depths of every
topic and channel on every node, sampled at each poll of the cluster.

Samples are kept per node (``(node, topic, None)`` for a topic, ``(node, topic, channel)``
for a channel), because rates only make sense per node: a node's rate is the growth of its
``message_count`` since the previous sample, and a counter that went down (a restart, a
topic deleted and created again) gives no rate for that step rather than a negative one.
Rates of a topic, a channel or a node are sums of per-node rates at each step, so a node
that stops answering leaves a gap in its own line and lowers the sum, instead of turning
the sum into a cliff and a spike.

Memory is bounded: every series holds one value per step of the window, and a series that
has had no sample for a whole window is dropped.
"""

from collections import deque


class _Series:
    __slots__ = ("rates", "depths", "last_count", "last_time")

    def __init__(self, length, steps):
        self.rates = deque([None] * steps, maxlen=length)
        self.depths = deque([None] * steps, maxlen=length)
        self.last_count = None
        self.last_time = None

    def add(self, when, count, depth):
        rate = None
        if self.last_count is not None and count >= self.last_count and when > self.last_time:
            rate = (count - self.last_count) / (when - self.last_time)
        self.rates.append(rate)
        self.depths.append(depth)
        self.last_count, self.last_time = count, when

    def skip(self):
        self.rates.append(None)
        self.depths.append(None)

    def empty(self):
        return all(value is None for value in self.depths)


def _sum_columns(columns):
    """Element-wise sum of equal-length sequences with gaps (None); all gaps -> None."""
    total = None
    for column in columns:
        if total is None:
            total = list(column)
            continue
        for i, value in enumerate(column):
            if value is not None:
                total[i] = value if total[i] is None else total[i] + value
    return total


class RateHistory:
    """Samples at shared time steps; ``points`` steps are kept."""

    def __init__(self, points):
        self.points = points
        self.times = deque(maxlen=points)
        self.series = {}

    def record(self, when, samples):
        """One step: ``samples`` maps ``(node, topic, channel_or_None)`` to
        ``(message_count, depth)`` for everything the poll saw at time ``when``."""
        steps = len(self.times)
        self.times.append(when)
        for key, (count, depth) in samples.items():
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = _Series(self.points, steps)
            series.add(when, count, depth)
        for key in [k for k in self.series if k not in samples]:
            series = self.series[key]
            series.skip()
            if series.empty():
                del self.series[key]

    def combined(self, rate_keys, depth_keys=None, last=None):
        """``{"rate": [...], "depth": [...]}``: rates summed over ``rate_keys``, depths
        over ``depth_keys`` (the same keys by default), for the ``last`` steps."""
        depth_keys = rate_keys if depth_keys is None else depth_keys
        gaps = [None] * len(self.times)
        rates = _sum_columns(self.series[k].rates for k in rate_keys) or gaps
        depths = _sum_columns(self.series[k].depths for k in depth_keys) or gaps
        if last is not None:
            rates, depths = rates[-last:], depths[-last:]
        return {"rate": [None if r is None else round(r, 2) for r in rates], "depth": depths}

    def step_times(self, last=None):
        times = list(self.times)
        return times[-last:] if last is not None else times
