"""Single PUBs for one topic that arrive in one turn of the hub, stored as one batch.

Many clients each publishing one message and waiting for its OK (go-nsq's ``Publish``
from many goroutines, an HTTP worker's PUBs) would cost the topic, its queues and the
disk queue one call and one write a message. A PUB that has company in its turn of the
hub joins the turn's batch for its topic instead, and gets its own ``Receipt``; the
batch is stored by a greenlet of its own, which the hub starts once the greenlets woken
in this turn have run (storing may wait: for room in a busy topic's mailbox, for a
replica), and each receipt is done (or fails) with it. A PUB alone in its turn is
published at once, and a client that pipelines is not held up: it awaits its receipts
in order (ClientV2.await_stored) while it reads on.

One batch is all or nothing, so a batch refused whole by a full bounded queue
(``QueueFull``) is stored again message by message, each getting the answer it would
have had alone. A connection's other publishes to the topic (MPUB, DPUB) ``flush`` the
batch first, so its messages keep their order.
"""

import logging

from gevent import spawn_raw

from greensq.actors.actor import Receipt, Refused
from greensq.actors.topic import QueueFull
from greensq.services.shared.compiled import use_compiled

log = logging.getLogger("greensq")


class _Batch:
    __slots__ = ("bodies", "receipts")

    def __init__(self):
        self.bodies = []
        self.receipts = []


class PublishGathering:
    """The turn's batches of ``nsqd`` (the core's ``NSQD``), one per topic."""

    def __init__(self, nsqd):
        self.nsqd = nsqd
        self.batches = {}

    def publish(self, topic_name, body):
        """A ``Receipt`` for ``body``, done once it is stored with the rest of the turn's
        batch for ``topic_name``."""
        batch = self.batches.get(topic_name)
        if batch is None:
            batch = self.batches[topic_name] = _Batch()
            spawn_raw(self.flush, topic_name)
        receipt = Receipt()
        batch.bodies.append(body)
        batch.receipts.append(receipt)
        return receipt

    def flush(self, topic_name):
        """Store the batch gathered for ``topic_name``, if any, now."""
        batch = self.batches.pop(topic_name, None)
        if batch is not None:
            self._store(topic_name, batch.bodies, batch.receipts)

    def _store(self, topic_name, bodies, receipts):
        try:
            stored = self.nsqd.start_publish(topic_name, bodies)
        except Exception as err:     # nsqd exiting (Refused), or a fault: never a hang
            if not isinstance(err, Refused):
                log.error("TOPIC(%s): failed to publish %d messages - %r", topic_name,
                          len(bodies), err)
            for receipt in receipts:
                receipt.fail(err)
            return
        stored.on_done(lambda error: self._answer(topic_name, bodies, receipts, error))

    def _answer(self, topic_name, bodies, receipts, error):
        if isinstance(error, QueueFull) and len(bodies) > 1:
            for body, receipt in zip(bodies, receipts):
                self._store(topic_name, [body], [receipt])
            return
        for receipt in receipts:
            if error is None:
                receipt.done()
            else:
                receipt.fail(error)


use_compiled(globals())
