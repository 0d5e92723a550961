"""Helpers shared by the utilities' tests (tests/test_tools_*.py): publishing, the
channel numbers a tool leaves behind, and reading archived files."""

import os
import zlib

from support import wait_until


def publish(daemon, topic, bodies):
    """MPUB ``bodies`` (bytes without newlines) over nsqd's HTTP API."""
    status, _, body = daemon.http("POST", f"/mpub?topic={topic}", b"\n".join(bodies))
    assert status == 200, body


def create_channel(daemon, topic, channel):
    for path in (f"/topic/create?topic={topic}", f"/channel/create?topic={topic}&channel={channel}"):
        status, _, body = daemon.http("POST", path)
        assert status == 200, body


def channel_done(daemon, topic, channel, count):
    """The channel's stats once ``count`` messages went through it and none is left
    (nor in flight), else None."""
    stats = daemon.channel_stats(topic, channel)
    if stats and stats["message_count"] >= count and stats["depth"] == 0 \
            and stats["in_flight_count"] == 0 and stats["deferred_count"] == 0:
        return stats
    return None


def wait_channel_done(daemon, topic, channel, count, timeout=20.0):
    return wait_until(lambda: channel_done(daemon, topic, channel, count), timeout,
                      message=f"{count} messages through {topic}/{channel}")


def gunzip_synced(data):
    """The content of a gzip file made of members, up to its last complete member (a
    crash may cut the file inside the member being written)."""
    content = b""
    while data:
        member = zlib.decompressobj(wbits=31)
        try:
            chunk = member.decompress(data)
        except zlib.error:
            break
        if not member.eof:
            break
        content += chunk
        data = member.unused_data
    return content


def files_under(*roots):
    """Every file below ``roots``, as paths."""
    return sorted(os.path.join(d, f) for root in roots for d, _, fs in os.walk(root)
                  for f in fs)
