"""nsqlookupd's ``GET /metrics``: its registrations."""

from greensq.services.shared.metrics import Exposition, label_value, open_families


def lookupd_metrics(lookupd):
    """nsqlookupd's /metrics (bytes): its registrations."""
    registrations = list(lookupd.db.registrations.items())
    out = Exposition()
    nodes, topics, channels = open_families(out, [
        ("nsq_lookupd_nodes", "gauge", "nsqd nodes connected."),
        ("nsq_lookupd_topics", "gauge", "Topics registered."),
        ("nsq_lookupd_channels", "gauge", "Channels registered.")])
    producers = out.family("nsq_lookupd_topic_producers", "gauge",
                           "nsqd nodes registered for the topic.")
    counts = {"client": 0, "topic": 0, "channel": 0}
    for (category, key, _), registered in registrations:
        counts[category] = counts.get(category, 0) + 1
        if category == "topic":
            producers.sample(f'topic="{label_value(key)}"', len(registered))
    nodes.sample("", len(lookupd.db.registrations.get(("client", "", ""), {})))
    topics.sample("", counts["topic"])
    channels.sample("", counts["channel"])
    return out.text()
