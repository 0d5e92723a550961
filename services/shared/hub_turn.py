"""What the hub runs in the present turn, for code that gathers work until it ends."""

from gevent import get_hub


def others_ready():
    """Whether other greenlets run before the hub waits again: watchers ready (another
    connection's request read) or callbacks queued (a greenlet spawned or woken)."""
    loop = get_hub().loop
    return loop.pendingcnt > 0 or bool(getattr(loop, "_callbacks", True))
