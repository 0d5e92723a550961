"""The one run/stop loop of the utilities, their log lines and their fatal exits.

A tool is an object with ``start()``, ``stop()`` and a ``finished`` event:

* ``start()`` connects and begins the work (a :class:`ToolError` here or while the
  tool is built is a fatal command-line problem: one line in Go's standard log format,
  exit 1; ``--consumer-opt`` TLS files that cannot be loaded are a flag error: exit 2);
* SIGINT or SIGTERM, or ``finished`` being set by the tool itself (``nsq_tail -n``,
  ``nsq_stat --count``, ``to_nsq`` at the end of its input), leads to ``stop()``, which
  stops taking messages, finishes or requeues what is in flight and flushes; then the
  process exits 0, as NSQ's tools do;
* an error the tool cannot recover from (a file that cannot be written) calls
  :func:`fatal` from any greenlet: one log line, exit 1, as Go's ``log.Fatal`` does.

Lines go to stderr through :mod:`greensq.services.shared.logs`'s background writer, in Go's
standard ``log`` format (``2006/01/02 15:04:05 message``) unless the tool asks for
NSQ's daemon format (nsq_to_file).
"""

import logging
import os
import signal
import sys

import gevent
from gevent.event import Event

from greensq.client import NSQError
from greensq.services.shared.goflags import FlagError
from greensq.services.shared.golog import std_line
from greensq.services.shared.logs import setup_logging

from .options import ToolError

log = logging.getLogger("greensq.tools")

# go-nsq tags its own lines with a level; the client library's lines get the same tags.
_GO_NSQ_LEVELS = {logging.DEBUG: "DBG", logging.INFO: "INF", logging.WARNING: "WRN",
                  logging.ERROR: "ERR", logging.CRITICAL: "ERR"}

_log_handler = None


class GoLogFormatter(logging.Formatter):
    """Go's standard ``log`` line, ``2006/01/02 15:04:05 message``."""

    def format(self, record):
        text = record.getMessage()
        if not record.name.startswith(log.name):
            text = f"{_GO_NSQ_LEVELS.get(record.levelno, 'INF')} {text}"
        return std_line(text, record.created)


class Tool:
    """Base of a utility's main object (see the module docstring)."""

    def __init__(self):
        self.finished = Event()

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError


def fatal(message):
    """Log ``message`` and exit 1 at once (callable from any greenlet)."""
    log.critical("%s", message)
    exit_now(1)


def write_stdout(data):
    """Write and flush ``data`` (bytes) to stdout. A reader that went away (``| head``)
    ends the process as SIGPIPE ends Go's tools; another write error is fatal."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    except OSError as exc:
        fatal(f"ERROR: failed to write to os.Stdout - {exc}")


def exit_now(status):
    """Flush stdout and the pending log lines, then end the process with ``status``."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    if _log_handler is not None:
        _log_handler.flush_pending()
    os._exit(status)


def run(make_tool, formatter=None, log_prefix="", log_level="info"):
    """Build the tool with ``make_tool()``, run it until a signal or its end, stop it
    gracefully and exit 0 (see the module docstring). Does not return."""
    global _log_handler
    _log_handler = setup_logging(log_prefix, log_level, formatter or GoLogFormatter())
    stop_requested = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop_requested.set)
    try:
        tool = make_tool()
        tool.start()
        gevent.wait([stop_requested, tool.finished], count=1)
        tool.stop()
    except FlagError as exc:   # --consumer-opt / --producer-opt TLS files that do not load
        sys.stderr.write(f"{exc}\n")
        exit_now(2)
    except (ToolError, NSQError) as exc:   # Go's log.Fatal: the standard logger's line
        _log_handler.flush_pending()
        sys.stderr.write(std_line(str(exc)) + "\n")
        exit_now(1)
    exit_now(0)
