"""The rolling history behind nsqadmin's live graphs: message rates and depths of every
topic and channel on every node, sampled at each poll of the cluster.

Samples are kept per node (``(node, topic, None)`` for a topic, ``(node, topic, channel)``
for a channel), because rates only make sense per node: a node's rate is the growth of its
counters since the previous sample, and a counter that went down (a restart, a topic
deleted and created again) gives no rate for that step rather than a negative one.
Rates of a topic, a channel or a node are sums of per-node rates at each step, so a node
that stops answering leaves a gap in its own line and lowers the sum, instead of turning
the sum into a cliff and a spike.

A topic has two columns: ``rate`` (messages in: the growth of ``message_count``) and
``depth``. A channel has ``rate`` too (its copies of the topic's messages), and what shows
it falling behind: ``requeue`` and ``timeout`` (the growth of ``requeue_count`` and
``timeout_count``) and ``finish``, the rate messages leave the channel. nsqd counts no
finishes per channel (only per connected client, and a client's count goes when it does),
so ``finish`` is derived from what every nsqd reports. A channel holds each message it
received until it leaves, queued (``depth``), in flight or deferred; requeues and timeouts
move messages between those without changing the total. So, between two samples::

    left = Δmessage_count - Δ(depth + in_flight_count + deferred_count)

Messages leave by FIN, and also when the channel is emptied, when greensq moves them to a
dead-letter topic or drops them from a full disk queue: an emptied channel shows as one
step of leaving. A poll can see a message in none of the three places (taken from the
queue, not yet marked in flight), so ``left`` may come out a message or two below zero:
such a step counts 0 and the next one makes up for it.

Memory is bounded: every column holds one value per step of the window, and a series that
has had no sample for a whole window is dropped. A rate of zero is stored as the int 0,
which Python shares, so idle channels cost a pointer per step and column.
"""

from collections import deque
from typing import NamedTuple


class Sample(NamedTuple):
    """What one poll read of one topic or channel on one node."""

    message_count: int
    depth: int
    in_flight_count: int = 0
    deferred_count: int = 0
    requeue_count: int = 0
    timeout_count: int = 0

    @property
    def held(self):
        return self.depth + self.in_flight_count + self.deferred_count


TOPIC_COLUMNS = ("rate", "depth")
CHANNEL_COLUMNS = ("rate", "finish", "requeue", "timeout", "depth")
RATE_COLUMNS = ("rate", "finish", "requeue", "timeout")


def _growths(before, after):
    """Each rate column's growth from one sample to the next; None where a counter went
    down (its channel was deleted and created again)."""
    received = after.message_count - before.message_count
    if received < 0:
        return {}
    growths = {"rate": received, "finish": max(0, received - (after.held - before.held)),
               "requeue": after.requeue_count - before.requeue_count,
               "timeout": after.timeout_count - before.timeout_count}
    return {name: growth for name, growth in growths.items() if growth >= 0}


def _per_second(growth, elapsed):
    rate = round(growth / elapsed, 2)
    return rate if rate else 0


class _Series:
    __slots__ = ("columns", "last", "last_time")

    def __init__(self, names, length, steps):
        self.columns = {name: deque([None] * steps, maxlen=length) for name in names}
        self.last = None
        self.last_time = None

    def add(self, when, sample):
        growths = {}
        if self.last is not None and when > self.last_time:
            elapsed = when - self.last_time
            growths = {name: _per_second(growth, elapsed)
                       for name, growth in _growths(self.last, sample).items()}
        for name, column in self.columns.items():
            column.append(sample.depth if name == "depth" else growths.get(name))
        self.last, self.last_time = sample, when

    def skip(self):
        for column in self.columns.values():
            column.append(None)

    def first_sample(self):
        """The step of this series' oldest sample in the window (None: no sample)."""
        return next((i for i, depth in enumerate(self.columns["depth"]) if depth is not None),
                    None)


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
        """One step: ``samples`` maps ``(node, topic, channel_or_None)`` to the Sample
        the poll read at time ``when``."""
        steps = len(self.times)
        self.times.append(when)
        for key, sample in samples.items():
            series = self.series.get(key)
            if series is None:
                names = TOPIC_COLUMNS if key[2] is None else CHANNEL_COLUMNS
                series = self.series[key] = _Series(names, self.points, steps)
            series.add(when, sample)
        for key in [k for k in self.series if k not in samples]:
            series = self.series[key]
            series.skip()
            if series.first_sample() is None:
                del self.series[key]

    def first_step(self, keys):
        """The oldest step at which any of ``keys`` has a sample (0 without keys), so that
        graphs start where their data does rather than where nsqadmin's history does."""
        firsts = [self.series[key].first_sample() for key in keys]
        return min((step for step in firsts if step is not None), default=0)

    def combined(self, rate_keys, depth_keys=None, start=0):
        """``{"rate": [...], ..., "depth": [...]}`` from step ``start`` on: each rate
        column that every series of ``rate_keys`` has (``rate`` always), summed over
        them, and depths summed over ``depth_keys`` (the same keys by default)."""
        depth_keys = rate_keys if depth_keys is None else depth_keys
        gaps = [None] * len(self.times)
        rate_series = [self.series[key] for key in rate_keys]
        doc = {}
        for name in RATE_COLUMNS:
            if name == "rate" or (rate_series and all(name in s.columns for s in rate_series)):
                total = _sum_columns(s.columns[name] for s in rate_series) or gaps
                doc[name] = [None if r is None else round(r, 2) for r in total[start:]]
        depths = _sum_columns(self.series[key].columns["depth"] for key in depth_keys) or gaps
        doc["depth"] = depths[start:]
        return doc

    def step_times(self, start=0):
        return list(self.times)[start:]
