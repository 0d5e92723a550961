"""The two line formats NSQ's Go programs log in, for every line greensq writes in their place.

NSQ's daemons log through their own leveled logger: ``[nsqd] 2006/01/02 15:04:05.000000
FATAL: message`` (the prefix is the program's, the time has microseconds). Go's standard
``log`` package, which the utilities and the config-file loader use, writes ``2006/01/02
15:04:05 message``. Both show local time.

:func:`exit_fatal` is Go's ``log.Fatal``: one line, exit 1. It uses nothing but the standard
library, so a daemon's arbiter can report a bad configuration without importing gevent.
"""

import sys
import time


def _stamp(created):
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(created))


def daemon_line(prefix, level, message, created=None):
    """``[nsqd] 2006/01/02 15:04:05.000000 LEVEL: message``."""
    created = time.time() if created is None else created
    micros = int((created % 1) * 1_000_000)
    return f"{prefix}{_stamp(created)}.{micros:06d} {level}: {message}"


def std_line(message, created=None):
    """``2006/01/02 15:04:05 message``, Go's standard ``log`` line."""
    return f"{_stamp(time.time() if created is None else created)} {message}"


def exit_fatal(line):
    """Write ``line`` to stderr and exit 1, as ``log.Fatal`` does."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(1)
