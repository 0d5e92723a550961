"""Notifications of admin actions: the JSON document Go's nsqadmin POSTs to
``--notification-http-endpoint`` after each action, sent by one background greenlet so an
action never waits for (or fails because of) the endpoint.

The queue is bounded; when the endpoint is slower than the actions, the newest
notifications are dropped with a log line rather than held without limit.
"""

import json
import logging
import socket
import time

import gevent
from gevent.queue import Full, Queue

from greensq.services.shared.cluster_http import UpstreamError

log = logging.getLogger("greensq")

QUEUE_LIMIT = 1000


def admin_action(action, topic, channel="", node="", user="", remote_ip="", user_agent="",
                 url="", via=None, timestamp=None):
    """Go's ``AdminAction`` (``channel``, ``node`` and ``user`` omitted when empty)."""
    doc = {"action": action, "topic": topic}
    if channel:
        doc["channel"] = channel
    if node:
        doc["node"] = node
    doc["timestamp"] = int(time.time() if timestamp is None else timestamp)
    if user:
        doc["user"] = user
    doc.update(remote_ip=remote_ip, user_agent=user_agent, url=url,
               via=socket.gethostname() if via is None else via)
    return doc


class Notifier:
    """Queues AdminAction documents and POSTs them to the endpoint ``endpoint()`` names
    (read at send time, so a changed option takes effect)."""

    def __init__(self, client, endpoint):
        self.client = client
        self.endpoint = endpoint
        self.queue = Queue(QUEUE_LIMIT)
        self.sender = None

    def start(self):
        self.sender = gevent.spawn(self._send_forever)

    def stop(self):
        if self.sender is not None:
            self.sender.kill()

    def notify(self, doc):
        if not self.endpoint():
            return
        try:
            self.queue.put_nowait(doc)
        except Full:
            log.error("dropping admin action notification (%s): %d are waiting",
                      doc["action"], QUEUE_LIMIT)

    def _send_forever(self):
        for doc in self.queue:
            url = self.endpoint()
            if not url:
                continue
            log.info("POSTing notification to %s", url)
            try:
                self.client.request("POST", url, body=json.dumps(doc).encode(),
                                    headers={"Content-Type": "application/json"})
            except UpstreamError as exc:
                log.error("failed to POST notification - %s", exc)
