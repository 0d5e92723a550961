"""Prometheus' text exposition format, as the three daemons' ``GET /metrics`` write it
(services/nsqd/metrics.py, services/nsqlookupd/metrics.py, services/nsqadmin/metrics.py).

The process-wide metrics (``process_*``, ``python_info``, ``python_gc_*``) are
prometheus-client's collectors, written by its ``generate_latest``. A daemon's own series,
tens of thousands of lines for a busy nsqd's topics and channels, are written straight
into the same text format by ``Exposition``: prometheus-client builds an object per
sample and escapes every label of every line, which makes a scrape of 10,000 channels
take seconds of CPU (bench/metrics_scrape.py), while here label sets are built once and
each line is one string format. The hub gets a turn between families (and, in nsqd,
every ``YIELD_EVERY`` channels), so publishers and consumers keep being served during a
scrape. The output is checked with prometheus-client's own parser in the tests.

Names follow Prometheus' conventions (``nsq_channel_depth``,
``nsq_channel_messages_total``, ``nsq_topic_e2e_processing_latency_seconds``).
"""

import functools

import gevent

from greensq.services.shared.deferred import deferred_import

# Loaded at the first scrape: the library and what it imports (http.client, email,
# snappy...) would cost a daemon that is never scraped about 1 MiB and 16 ms of startup.
prometheus_client = deferred_import("prometheus_client")

YIELD_EVERY = 200


class _ProcessMetrics:
    """prometheus-client's process, platform and GC collectors (registered with a
    registry of their own, as the GC collector insists on one)."""

    def __init__(self):
        registry = prometheus_client.CollectorRegistry()
        self.collectors = (prometheus_client.ProcessCollector(registry=registry),
                           prometheus_client.PlatformCollector(registry=registry),
                           prometheus_client.GCCollector(registry=registry))

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


@functools.cache
def _process_metrics():
    return _ProcessMetrics()


def content_type():
    """The text exposition format's Content-Type, as prometheus-client names it."""
    return prometheus_client.CONTENT_TYPE_LATEST


def let_others_run():
    """Give the hub a full turn, sockets and timers included: a greenlet that sleeps 0
    may run again before the loop polls, a positive delay waits for its next turn."""
    gevent.sleep(1e-6)


def label_value(text):
    """A label value as the text format quotes it."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """The text format, family by family: ``family`` opens one and returns the list its
    sample lines go to, ``sample`` writes one; ``text`` renders the families in the
    order they were opened, then the process metrics."""

    def __init__(self):
        self._families = []

    def family(self, name, kind, documentation):
        """A family's sample list; a counter's samples are named ``<name>_total``."""
        sample_name = f"{name}_total" if kind == "counter" else name
        lines = [f"# HELP {sample_name} {documentation}\n",
                 f"# TYPE {sample_name} {kind}\n"]
        self._families.append(lines)
        return _Family(sample_name, lines)

    def text(self):
        """The whole exposition (bytes), yielding to the hub between families."""
        parts = []
        for lines in self._families:
            parts.append("".join(lines).encode())
            let_others_run()
        parts.append(prometheus_client.generate_latest(_process_metrics()))
        return b"".join(parts)


class _Family:
    __slots__ = ("name", "head", "lines")

    def __init__(self, sample_name, lines):
        self.name = sample_name
        self.head = sample_name + "{"
        self.lines = lines

    def sample(self, labels, value):
        """One line; ``labels`` is a rendered label set (``a="x",b="y"``) or empty."""
        if labels:
            self.lines.append(f"{self.head}{labels}}} {value}\n")
        else:
            self.lines.append(f"{self.name} {value}\n")


def open_families(out, series):
    """The families of ``series`` (``(name, kind, documentation)`` each), opened in order."""
    return [out.family(name, kind, doc) for name, kind, doc in series]
