"""The greenlet that samples the cluster for nsqadmin's live graphs.

Every ``interval`` seconds it asks the cluster for its nodes (from the lookupds, or the
configured nsqd), reads each node's ``/stats`` (without clients) and records every
topic's and channel's counters and depths in the RateHistory. A node that does not
answer is recorded as a gap and listed in ``down``. Each node's replication (its
replicas and the copies it keeps, README "Replication") is kept from the last poll for
the nodes list, which asks no nsqd for its ``/stats``.
"""

import logging
import time

import gevent

from greensq.services.nsqadmin.rate_history import Sample
from greensq.services.shared.cluster_stats import http_address
from greensq.services.shared.clusterinfo import ClusterUnavailable

log = logging.getLogger("greensq")


def samples_of(node_stats):
    """``{(node, topic, channel|None): Sample}`` from a NodeStats."""
    samples = {}
    for topic in node_stats.topics:
        name, node = topic["topic_name"], topic["node"]
        samples[(node, name, None)] = Sample(topic["message_count"], topic["depth"])
        for channel in topic["channels"] or []:
            samples[(node, name, channel["channel_name"])] = Sample(
                channel["message_count"], channel["depth"], channel["in_flight_count"],
                channel["deferred_count"], channel["requeue_count"], channel["timeout_count"])
    return samples


class ClusterPoller:
    def __init__(self, cluster, history, sources, interval):
        self.cluster = cluster
        self.history = history
        self.sources = sources      # () -> (lookupd addresses, nsqd addresses)
        self.interval = interval
        self.down = []
        self.latest = {}     # the last poll's samples (nsqadmin's /metrics)
        self.replication = {}    # node -> its /stats' replication, from the last poll
        self.greenlet = None

    def start(self):
        self.greenlet = gevent.spawn(self._run)

    def stop(self):
        if self.greenlet is not None:
            self.greenlet.kill()

    def poll_once(self):
        lookupds, nsqds = self.sources()
        samples, down, replication = {}, [], {}
        try:
            producers, failures = self.cluster.producers(lookupds, nsqds)
            down += failures.addresses()
        except ClusterUnavailable as exc:
            log.debug("graphs: %s", exc)
            producers, down = [], list(lookupds or nsqds)
        if producers:
            try:
                stats = self.cluster.stats(producers, include_clients=False)
                samples = samples_of(stats)
                replication = {node: meta["replication"] for node, meta in stats.meta.items()
                               if meta["replication"] is not None}
                down += stats.failures.addresses()
            except ClusterUnavailable as exc:
                log.debug("graphs: %s", exc)
                down += [http_address(p) for p in producers]
        self.history.record(time.time(), samples)
        self.latest = samples
        self.replication = replication
        self.down = down

    def _run(self):
        while True:
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:
                log.exception("graphs: polling the cluster failed")
            gevent.sleep(max(0.0, self.interval - (time.monotonic() - started)))
