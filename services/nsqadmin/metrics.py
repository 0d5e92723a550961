"""nsqadmin's ``GET /metrics``: the cluster as nsqadmin last polled it."""

from greensq.services.shared.metrics import Exposition, label_value, open_families


def admin_metrics(admin):
    """nsqadmin's /metrics (bytes): every node's topics and channels as it last polled
    them, so one scrape of nsqadmin covers the cluster."""
    poller = admin.poller
    out = Exposition()
    down = out.family("nsq_admin_nodes_down", "gauge", "Nodes that did not answer the last poll.")
    down.sample("", len(poller.down))
    topic_depth, topic_messages, channel_depth, channel_messages = open_families(out, [
        ("nsq_topic_depth", "gauge", "Messages queued in the topic."),
        ("nsq_topic_messages", "counter", "Messages published to the topic."),
        ("nsq_channel_depth", "gauge", "Messages queued in the channel."),
        ("nsq_channel_messages", "counter", "Messages the channel received.")])
    for (node, topic, channel), sample in sorted(
            poller.latest.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")):
        labels = f'node="{label_value(node)}",topic="{label_value(topic)}"'
        if channel is None:
            topic_depth.sample(labels, sample.depth)
            topic_messages.sample(labels, sample.message_count)
        else:
            labels += f',channel="{label_value(channel)}"'
            channel_depth.sample(labels, sample.depth)
            channel_messages.sample(labels, sample.message_count)
    return out.text()
