"""The IDs of the messages a replica took over from a primary: written by the replica as
it takes them over, sent to the primary when it comes back, which drops them.

A takeover may move millions of messages, so the set is compact: NSQ's IDs are 16 hex
digits, kept as sorted 64-bit values (8 bytes each, found by bisection); an ID of
another shape (none that greensq or Go nsqd makes) goes in a plain set.
"""

import bisect
from array import array

from greensq.services.shared.message import ID_LENGTH


class TakenIds:
    """A set of message IDs (16 bytes each)."""

    def __init__(self, ids=()):
        values = array("Q")
        self.others = set()
        for msg_id in ids:
            try:
                values.append(int(msg_id, 16))
            except ValueError:
                self.others.add(bytes(msg_id))
        self.values = array("Q", sorted(values))

    @classmethod
    def from_bytes(cls, data):
        """The IDs of ``data``, 16 bytes each."""
        return cls(data[i:i + ID_LENGTH] for i in range(0, len(data) - ID_LENGTH + 1, ID_LENGTH))

    def __len__(self):
        return len(self.values) + len(self.others)

    def __contains__(self, msg_id):
        try:
            value = int(msg_id, 16)
        except ValueError:
            return msg_id in self.others
        values = self.values
        index = bisect.bisect_left(values, value)
        return index < len(values) and values[index] == value
