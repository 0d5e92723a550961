"""What nsqadmin asks the cluster: topics, channels, nodes and stats from nsqlookupd and
nsqd, and the administrative actions fanned out to them.

Requests to several nodes run concurrently (one greenlet each). A query that some nodes
answer returns what they said together with the failures (``Failures``, one entry per
node, each naming the node); one that no node answers raises ``ClusterUnavailable`` with
Go's text (``failed to query any nsqd: ...``). Results are in Go clusterinfo's shapes
(see ``cluster_stats``).
"""

import logging
from urllib.parse import quote, urlencode

from gevent.pool import Pool

from greensq.services.shared import cluster_stats as shapes
from greensq.services.shared.cluster_http import UpstreamError

log = logging.getLogger("greensq")

# At most this many requests at once for one query (e.g. one /lookup per topic).
FANOUT = 32


class Failures(list):
    """The UpstreamErrors of one query; ``str()`` is Go's joined error text."""

    def __str__(self):
        return "\n".join(str(err) for err in self)

    def addresses(self):
        return [err.address for err in self]


class ClusterUnavailable(Exception):
    """No node answered a query (Go answers the API request with 502 UPSTREAM_ERROR)."""


def _qs(**params):
    return urlencode(params, quote_via=quote)


class NodeStats:
    """``/stats`` of several nsqd: Go's ``TopicStats`` list, the ``ChannelStats`` map,
    and per node what the pages show beside them (``start_time``, ``version``, and
    greensq's ``replication``: None on an nsqd without replicas or copies)."""

    def __init__(self):
        self.topics = []
        self.channels = {}
        self.meta = {}
        self.failures = Failures()


class ClusterInfo:
    def __init__(self, client):
        self.client = client

    # -- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _gather(addresses, call):
        """``call(address)`` for every address at once (at most FANOUT at a time):
        ``(answers, failures)``, ``answers`` being ``[(address, result)]`` in order."""
        def guarded(address):
            try:
                return call(address), None
            except UpstreamError as err:
                return None, err

        answers, failures = [], Failures()
        for address, (result, err) in zip(addresses, Pool(FANOUT).imap(guarded, addresses)):
            if err is not None:
                failures.append(err)
            else:
                answers.append((address, result))
        return answers, failures

    def _each(self, addresses, call, kind):
        """``_gather``, raising ClusterUnavailable when no node answered (also when there
        was none to ask, as Go does)."""
        answers, failures = self._gather(addresses, call)
        if len(failures) == len(addresses):
            raise ClusterUnavailable(f"failed to query any {kind}: {failures}")
        return answers, failures

    def _get(self, address, path):
        log.debug("CI: querying %s", f"http://{address}{path}")
        return self.client.get_json(address, path)

    def _post_all(self, addresses, path):
        """POST ``path`` to every address; the failures (none raises)."""
        def post(address):
            log.debug("CI: querying %s", f"http://{address}{path}")
            self.client.post(address, path)

        return self._gather(addresses, post)[1]

    # -- nsqlookupd ---------------------------------------------------------------------

    def lookupd_topics(self, lookupds):
        answers, failures = self._each(
            lookupds, lambda a: shapes.items(self._get(a, "/topics").get("topics")),
            "nsqlookupd")
        return sorted({t for _, topics in answers for t in topics}) or None, failures

    def lookupd_topic_channels(self, topic, lookupds):
        answers, failures = self._each(
            lookupds, lambda a: shapes.items(
                self._get(a, f"/channels?{_qs(topic=topic)}").get("channels")),
            "nsqlookupd")
        return sorted({c for _, channels in answers for c in channels}) or None, failures

    def lookupd_producers(self, lookupds):
        def nodes(address):
            doc = self._get(address, "/nodes")
            return [shapes.producer_from_lookupd(p) for p in shapes.items(doc.get("producers"))]

        answers, failures = self._each(lookupds, nodes, "nsqlookupd")
        return shapes.merge_lookupd_producers(answers), failures

    def lookupd_topic_lookup(self, topic, lookupds):
        """``/lookup?topic=``: the topic's producers (one per nsqd) and channels."""
        def lookup(address):
            return self._get(address, f"/lookup?{_qs(topic=topic)}")

        answers, failures = self._each(lookupds, lookup, "nsqlookupd")
        producers, channels = {}, set()
        for _, doc in answers:
            channels.update(c for c in shapes.items(doc.get("channels")) if isinstance(c, str))
            for entry in shapes.items(doc.get("producers")):
                prod = shapes.producer_from_lookupd(entry)
                producers.setdefault(shapes.http_address(prod), prod)
        return list(producers.values()), sorted(channels), failures

    # -- nsqd ---------------------------------------------------------------------------

    def _nsqd_producer(self, address, topic=None):
        """The producer an nsqd describes itself as, or None if it lacks ``topic`` (asked
        in Go's order, so the same request fails first)."""
        if topic is None:
            info = self._get(address, "/info")
            stats = self._get(address, "/stats?format=json&include_clients=false")
        else:
            stats = self._get(address, f"/stats?{_qs(format='json', topic=topic)}"
                                       "&include_clients=false")
            if not any(t.get("topic_name") == topic for t in shapes.items(stats.get("topics"))):
                return None
            info = self._get(address, "/info")
        return shapes.producer_from_nsqd(address, info, stats)

    def nsqd_topics(self, nsqds):
        answers, failures = self._each(
            nsqds, lambda a: self._get(a, "/stats?format=json"), "nsqd")
        names = {t.get("topic_name") for _, stats in answers
                 for t in shapes.items(stats.get("topics")) if isinstance(t, dict)}
        return sorted(n for n in names if isinstance(n, str)) or None, failures

    def nsqd_producers(self, nsqds, topic=None):
        answers, failures = self._each(
            nsqds, lambda a: self._nsqd_producer(a, topic), "nsqd")
        return [prod for _, prod in answers if prod is not None], failures

    def stats(self, producers, topic="", channel="", include_clients=True):
        """``/stats`` of each producer, as Go's GetNSQDStats: a NodeStats. Channels are
        keyed by name when ``topic`` is given, else by ``topic:channel``."""
        query = {"format": "json"}
        if topic:
            query["topic"] = topic
            if channel:
                query["channel"] = channel
        if not include_clients:
            query["include_clients"] = "false"
        path = f"/stats?{_qs(**query)}"
        by_address = {shapes.http_address(p): p for p in producers}
        answers, failures = self._each(list(by_address), lambda a: self._get(a, path), "nsqd")
        result = NodeStats()
        result.failures = failures
        per_channel = {}
        for address, doc in answers:
            hostname = by_address[address]["hostname"]
            result.meta[address] = {"start_time": doc.get("start_time"),
                                    "version": doc.get("version"),
                                    "health": doc.get("health"),
                                    "replication": doc.get("replication")}
            for entry in shapes.items(doc.get("topics")):
                if not isinstance(entry, dict) or (topic and entry.get("topic_name") != topic):
                    continue
                stats = shapes.topic_stats(entry, address, hostname)
                result.topics.append(stats)
                for chan in shapes.items(stats["channels"]):
                    key = chan["channel_name"] if topic else (
                        f"{stats['topic_name']}:{chan['channel_name']}")
                    per_channel.setdefault(key, []).append(chan)
        result.topics.sort(key=lambda t: (t["hostname"], t["node"], t["topic_name"]))
        for key, found in per_channel.items():
            result.channels[key] = shapes.aggregate_channel(
                found[0]["topic_name"], found[0]["channel_name"], found)
        return result

    # -- either source ------------------------------------------------------------------

    def producers(self, lookupds, nsqds):
        if lookupds:
            return self.lookupd_producers(lookupds)
        return self.nsqd_producers(nsqds)

    def topic_producers(self, topic, lookupds, nsqds):
        if lookupds:
            producers, _, failures = self.lookupd_topic_lookup(topic, lookupds)
            return producers, failures
        return self.nsqd_producers(nsqds, topic)

    def topics(self, lookupds, nsqds):
        if lookupds:
            return self.lookupd_topics(lookupds)
        return self.nsqd_topics(nsqds)

    # -- actions: each returns the Failures of the nodes that did not do it, and raises
    # ClusterUnavailable where Go gives up (no node to ask about the topic answered) ------

    def _addresses(self, producers):
        return [shapes.http_address(p) for p in producers]

    def _topic_producer_addresses(self, topic, lookupds, nsqds, failures):
        producers, found_failures = self.topic_producers(topic, lookupds, nsqds)
        failures.extend(found_failures)
        return self._addresses(producers)

    def create_topic_channel(self, topic, channel, lookupds, nsqds):
        """Register the topic (and channel) with every lookupd and create the channel on
        the nsqd that have the topic. Without lookupds, create both on every nsqd."""
        failures = Failures()
        if lookupds:
            failures += self._post_all(lookupds, f"/topic/create?{_qs(topic=topic)}")
            if channel:
                path = f"/channel/create?{_qs(topic=topic, channel=channel)}"
                failures += self._post_all(lookupds, path)
                producers, _, found = self.lookupd_topic_lookup(topic, lookupds)
                failures += found
                failures += self._post_all(self._addresses(producers), path)
            return failures
        failures += self._post_all(nsqds, f"/topic/create?{_qs(topic=topic)}")
        if channel:
            failures += self._post_all(
                nsqds, f"/channel/create?{_qs(topic=topic, channel=channel)}")
        return failures

    def delete(self, topic, channel, lookupds, nsqds):
        """Delete the topic (or, given ``channel``, the channel) from every lookupd and
        from every nsqd that has the topic (found first, before it is gone)."""
        failures = Failures()
        addresses = self._topic_producer_addresses(topic, lookupds, nsqds, failures)
        if channel:
            path = f"/channel/delete?{_qs(topic=topic, channel=channel)}"
        else:
            path = f"/topic/delete?{_qs(topic=topic)}"
        failures += self._post_all(lookupds, path)
        failures += self._post_all(addresses, path)
        return failures

    def node_action(self, uri, topic, channel, lookupds, nsqds):
        """pause / unpause / empty (``uri`` like ``topic/pause``) on every nsqd with the
        topic."""
        failures = Failures()
        addresses = self._topic_producer_addresses(topic, lookupds, nsqds, failures)
        params = {"topic": topic} if not channel else {"topic": topic, "channel": channel}
        failures += self._post_all(addresses, f"/{uri}?{_qs(**params)}")
        return failures

    def tombstone_topic_producer(self, topic, node, lookupds):
        """Tombstone ``node``'s registration of the topic on every lookupd, then delete
        the topic on that nsqd."""
        failures = self._post_all(lookupds, f"/topic/tombstone?{_qs(topic=topic, node=node)}")
        producers, found = self.nsqd_producers([node])
        failures += found
        failures += self._post_all(self._addresses(producers), f"/topic/delete?{_qs(topic=topic)}")
        return failures
