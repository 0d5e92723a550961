"""Logging in NSQ's line format, written so that it can never stall the event loop.

Lines look like nsqd's: ``[nsqd] 2026/11/23 02:45:00.123456 INFO: TCP: listening on ...``.
Formatted lines go into a bounded in-memory queue that a real OS thread writes to stderr.
If stderr is a pipe nobody reads, the thread blocks, the queue fills, and further lines are
dropped (and counted) instead of the broker freezing.
"""

import logging
import os
import re
import sys
import time
from collections import deque

from gevent.monkey import get_original

from greensq.services.shared.golog import daemon_line

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR, "fatal": logging.CRITICAL}
_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING",
                logging.ERROR: "ERROR", logging.CRITICAL: "FATAL"}

QUEUE_LIMIT = 10000

# A message is one line: its control characters (a tab aside) are written escaped. Text
# that clients and peers sent reaches messages, where a line break would forge a log line
# and an escape sequence would drive the reader's terminal.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_ESCAPES = {"\n": "\\n", "\r": "\\r"}


def _escaped(match):
    char = match.group()
    return _ESCAPES.get(char) or f"\\x{ord(char):02x}"


class NsqFormatter(logging.Formatter):
    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def format(self, record):
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        message = record.getMessage()
        if _CONTROL.search(message):
            message = _CONTROL.sub(_escaped, message)
        text = daemon_line(self.prefix, level, message, record.created)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class BackgroundStreamHandler(logging.Handler):
    """Hands formatted lines to an OS thread that writes them to a file descriptor."""

    def __init__(self, fd=None):
        super().__init__()
        self.fd = sys.stderr.fileno() if fd is None else fd
        self.lines = deque()
        self.dropped = 0
        self._wakeup = get_original("_thread", "allocate_lock")()
        self._wakeup.acquire()
        get_original("_thread", "start_new_thread")(self._write_forever, ())

    def emit(self, record):
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        if len(self.lines) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self.lines.append(line)
        if self._wakeup.locked():
            try:
                self._wakeup.release()
            except RuntimeError:
                pass

    def _write_forever(self):
        while True:
            self._wakeup.acquire()
            while self.lines:
                chunk = []
                while self.lines and len(chunk) < 256:
                    chunk.append(self.lines.popleft())
                if self.dropped:
                    chunk.append(f"[{self.dropped} log lines dropped: stderr is not being read]\n")
                    self.dropped = 0
                data = "".join(chunk).encode("utf-8", "replace")
                try:
                    while data:
                        data = data[os.write(self.fd, data):]
                except OSError:
                    pass

    def flush_pending(self, timeout=1.0):
        """Wait (briefly) until queued lines are written; used just before exit."""
        deadline = time.monotonic() + timeout
        sleep = get_original("time", "sleep")
        while self.lines and time.monotonic() < deadline:
            sleep(0.005)


def setup_logging(prefix, level_name, formatter=None):
    """Route the ``greensq`` logger through a background writer, in NSQ's format
    (or ``formatter``'s)."""
    logger = logging.getLogger("greensq")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = BackgroundStreamHandler()
    handler.setFormatter(formatter or NsqFormatter(prefix))
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(level_name, logging.INFO))
    logger.propagate = False
    return handler
