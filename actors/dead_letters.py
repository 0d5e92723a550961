"""Dead letters: where a message goes once it has been delivered ``--max-attempts`` times.

A channel that would deliver a message for the (max + 1)th time publishes it to the
dead-letter topic of its topic instead, ``<topic><suffix>`` (``--dead-letter-topic-suffix``,
``.dead`` by default; the suffix goes before ``#ephemeral``, and a name that would pass
NSQ's 64 characters is shortened at the end of the topic part).

The dead letter's body is one line of JSON with what the message was, a newline, and the
original body, unchanged::

    {"id":"0c4b5e6f7a8b9c0d","topic":"orders","channel":"billing","attempts":5,
     "timestamp":1718000000123456789}\\n<original body>

``id``, ``attempts`` and ``timestamp`` (ns since the epoch) are the failed message's, and
``channel`` is the one it failed in. The dead letter itself is a new message with its own
ID: several channels may give up on the same message, and one topic cannot hold two
messages with one ID in flight. A line of JSON keeps the body byte-for-byte (no base64)
and is read by any language: ``header, _, body = msg.body.partition(b"\\n")``.
"""

import re

import ujson

from greensq.services.shared.names import EPHEMERAL_SUFFIX, is_ephemeral

MAX_NAME = 64
_SUFFIX = re.compile(r"[.a-zA-Z0-9_-]{1,32}")


def valid_suffix(suffix):
    return _SUFFIX.fullmatch(suffix) is not None


def dead_letter_topic(topic_name, suffix):
    """The name of the topic that takes ``topic_name``'s dead letters."""
    ephemeral = EPHEMERAL_SUFFIX if is_ephemeral(topic_name) else ""
    base = topic_name[:len(topic_name) - len(ephemeral)]
    return base[:MAX_NAME - len(suffix) - len(ephemeral)] + suffix + ephemeral


def is_dead_letter_topic(topic_name, suffix):
    """Dead-letter topics do not dead-letter again (their channels keep NSQ's behaviour
    unless a per-channel limit is set)."""
    if is_ephemeral(topic_name):
        topic_name = topic_name[:-len(EPHEMERAL_SUFFIX)]
    return topic_name.endswith(suffix)


def envelope(msg, topic_name, channel_name):
    """The dead letter's body for ``msg``, which failed in ``channel_name``."""
    header = ujson.dumps({
        "id": msg.id.decode("latin-1"), "topic": topic_name, "channel": channel_name,
        "attempts": msg.attempts, "timestamp": msg.timestamp}, escape_forward_slashes=False)
    return header.encode() + b"\n" + msg.body
