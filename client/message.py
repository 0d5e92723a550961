"""A message as a consumer's handler sees it, with the responses it can send.

The bytes are decoded with the server's own header layout
(:data:`greensq.services.shared.message.HEADER`): timestamp (ns), attempts, 16-byte hex ID.

A message gets exactly one final answer, FIN or REQ; TOUCH can come any number of times
before it. Normally the consumer answers for the handler (return → FIN, exception → REQ).
A handler that wants to answer later, e.g. after batching work, calls
:meth:`Message.enable_async` and then :meth:`finish` or :meth:`requeue` itself.
"""

from greensq.services.shared.message import HEADER, HEADER_SIZE


class Message:
    """One delivered message. ``id`` is the 16-byte hex ID (bytes), ``body`` bytes,
    ``timestamp`` nanoseconds since the epoch, ``attempts`` how often nsqd delivered it
    (1 the first time), ``nsqd_address`` the ``host:port`` it came from."""

    __slots__ = ("id", "body", "timestamp", "attempts", "nsqd_address",
                 "_responder", "_responded", "_async")

    def __init__(self, msg_id, body, timestamp, attempts, responder=None, nsqd_address=None):
        self.id = msg_id
        self.body = body
        self.timestamp = timestamp
        self.attempts = attempts
        self.nsqd_address = nsqd_address
        self._responder = responder
        self._responded = False
        self._async = False

    @classmethod
    def decode(cls, data, responder=None, nsqd_address=None):
        """Parse the body of a message frame (header + body)."""
        timestamp, attempts, msg_id = HEADER.unpack_from(data)
        return cls(msg_id, bytes(data[HEADER_SIZE:]), timestamp, attempts,
                   responder, nsqd_address)

    # -- state ----------------------------------------------------------------------------

    def enable_async(self):
        """Take over responding: the consumer will not FIN/REQ when the handler returns."""
        self._async = True

    def is_async(self):
        return self._async

    def has_responded(self):
        return self._responded

    # -- responses ------------------------------------------------------------------------

    def finish(self):
        """FIN: the message is done."""
        self._respond("finish")

    def requeue(self, delay=None, backoff=True):
        """REQ: deliver it again after ``delay`` seconds (None: the consumer's growing
        default for this attempt count). ``backoff`` counts it as a failure for the
        consumer's backoff."""
        self._respond("requeue", delay, backoff)

    def touch(self):
        """TOUCH: reset this message's timeout on nsqd (allowed many times)."""
        if self._responded:
            raise RuntimeError("message already responded to")
        if self._responder is not None:
            self._responder.touch(self)

    def _respond(self, what, *args):
        if self._responded:
            raise RuntimeError("message already responded to")
        self._responded = True
        if self._responder is not None:
            getattr(self._responder, what)(self, *args)

    def __repr__(self):
        return f"<Message {self.id.decode()} attempts={self.attempts} {len(self.body)}B>"
