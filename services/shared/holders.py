"""Who holds a listening port or a directory lock, and whether it is on its way out.

A daemon killed with SIGKILL takes its worker with it (PR_SET_PDEATHSIG), but the kernel
ends the worker a moment later than the process that was killed: a harness that reaps
the PID and starts the next daemon at once can find the port, or the data-directory
lock, still held by a worker that is already dying. Such a holder is waited for, briefly;
any other holder means the port or directory really is in use, and the start fails at
once, as NSQ's does. Linux only (``/proc``); elsewhere nothing is ever waited for.
"""

import errno
import os
import signal
import time

_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def is_dying(pid):
    """True if ``pid`` is gone, a zombie, or has a SIGKILL pending."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return True
    if fields.get("State", "").strip().startswith(("Z", "X")):
        return True
    pending = 0
    for key in ("SigPnd", "ShdPnd"):
        try:
            pending |= int(fields.get(key, "0").strip(), 16)
        except ValueError:
            pass
    return bool(pending & _SIGKILL_BIT)


def port_holders(port):
    """PIDs holding a TCP socket listening on ``port`` (any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if (len(fields) > 9 and fields[3] == "0A"
                            and int(fields[1].rsplit(":", 1)[1], 16) == port):
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    return _pids_with_fd(inodes) if inodes else set()


def lock_holders(path):
    """PIDs holding a flock on ``path``."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as fh:
            lines = fh.readlines()
    except OSError:
        return set()
    pids = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            try:
                pids.add(int(fields[4]))
            except ValueError:
                pass
    return pids


def _pids_with_fd(targets):
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") in targets:
                    pids.add(int(name))
                    break
            except OSError:
                continue
    return pids


def retry_while_holders_die(attempt, holders, timeout=3.0, interval=0.02,
                            busy=(errno.EADDRINUSE, errno.EWOULDBLOCK, errno.EAGAIN)):
    """``attempt()`` until it succeeds; while it fails and every holder (``holders()``)
    is dying (or already gone), try again for up to ``timeout`` seconds; when a holder
    is alive, or the error is not ``busy``, re-raise at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except OSError as exc:
            if (exc.errno not in busy or not os.path.isdir("/proc")
                    or time.monotonic() > deadline):
                raise
            if not all(is_dying(pid) for pid in holders()):
                raise
            time.sleep(interval)
