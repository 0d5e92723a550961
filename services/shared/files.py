"""Replacing a small file atomically, as nsqd does for its metadata files.

``nsqd.dat`` and each disk queue's ``.meta.dat`` are never written in place: the new
content goes to a temporary file beside the old one, is fsynced (in the hub's thread
pool, so the event loop keeps running), and is renamed over it. A crash leaves the old
file or the new one, never half of one; a failed write leaves the old file and no
temporary file behind (on a full disk it would hold space nobody frees).
"""

import os
import random

import gevent


def fsync(fd):
    """fsync ``fd`` off the hub."""
    gevent.get_hub().threadpool.apply(os.fsync, (fd,))


def replace_file(path, data, temp_path=None, sync=True):
    """Replace ``path`` with ``data``: written to ``temp_path`` (by default
    ``<path>.<random>.tmp``), fsynced unless ``sync`` is false, renamed over ``path``.
    On failure the temporary file is removed and the ``OSError`` raised."""
    if temp_path is None:
        temp_path = f"{path}.{random.getrandbits(31)}.tmp"
    try:
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.remove(temp_path)
        except OSError:
            pass
        raise
