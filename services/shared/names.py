"""Topic and channel name rules, as NSQ enforces them.

A name is 1 to 64 characters of ``[.a-zA-Z0-9_-]``, optionally ending in ``#ephemeral``.
Ephemeral topics and channels live only in memory and disappear with their last client.
"""

import re

_VALID_NAME = re.compile(r"^[.a-zA-Z0-9_-]+(#ephemeral)?$")
EPHEMERAL_SUFFIX = "#ephemeral"


def is_valid_name(name):
    """True if ``name`` is a valid topic or channel name."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 64
        and _VALID_NAME.fullmatch(name) is not None   # "$" alone admits a trailing "\n"
    )


def is_ephemeral(name):
    """True if ``name`` ends in ``#ephemeral``."""
    return name.endswith(EPHEMERAL_SUFFIX)


def backend_name(topic, channel=None):
    """The disk-queue name of a topic (``topic``) or channel (``topic:channel``)."""
    return topic if channel is None else f"{topic}:{channel}"
