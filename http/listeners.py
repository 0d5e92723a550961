"""What the arbiter does before it forks: bind every listening socket (the internal ones
between a daemon's own processes too) and lock the data directory, so a restarted worker
keeps the same ports (port 0 included), connections wait in the backlog during a restart,
and a second daemon on the same data directory fails at once. A killed daemon's dying
worker is waited for (services/shared/holders.py).
"""

import errno
import fcntl
import hashlib
import os
import shutil
import socket
import stat
import tempfile

from greensq.services.shared.holders import lock_holders, port_holders, retry_while_holders_die


class StartupError(Exception):
    """A daemon cannot start; the message is printed and the process exits 1."""


def parse_address(address):
    """``"host:port"``, ``":port"`` or ``"[v6]:port"`` as ``(family, host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise StartupError(f"invalid address {address!r}: missing port")
    try:
        port = int(port)
    except ValueError:
        raise StartupError(f"invalid address {address!r}: bad port") from None
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], port
    return socket.AF_INET, host or "0.0.0.0", port


def bind_listener(address, backlog=1024):
    """A listening TCP socket on ``address``, reusable at once after a restart (a killed
    daemon's dying worker is waited for: see services/shared/holders.py)."""
    family, host, port = parse_address(address)
    # A str host goes through the "idna" codec, whose import (with stringprep and
    # unicodedata) costs the arbiter a millisecond; an ASCII name needs none of it.
    if host.isascii():
        host = host.encode()

    def attempt():
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        family_, _, _, _, sockaddr = next(
            (info for info in infos if info[0] == family), infos[0])
        sock = socket.socket(family_, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    try:
        sock = retry_while_holders_die(attempt, lambda: port_holders(port)) if port else attempt()
    except OSError as exc:
        raise StartupError(f"listen ({address}) failed - {exc}") from None
    sock.set_inheritable(True)
    return sock


def private_directory(prefix, key):
    """Where a daemon's internal sockets go: one directory per ``key`` (its data
    directory, which it holds locked), so that a daemon killed before it could remove
    it leaves this one only, which the next start on the same data directory replaces."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"{prefix}{digest}")


def bind_private_listeners(names, directory, backlog=1024):
    """Unix sockets (``{label: file name}``) in ``directory``, made anew so that only this
    user may enter it (0700), for connections between a daemon's own processes: no other
    local user can reach them, as they could a loopback port or an abstract socket. A
    directory left there by a killed daemon is replaced, if it is this user's. Returns
    ``{label: socket}``; ``remove_private_listeners`` removes the directory."""
    try:
        _replace_directory(directory)
    except OSError as exc:
        raise StartupError(f"failed to create {directory} - {exc}") from None
    sockets = {}
    try:
        for label, name in names.items():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets[label] = sock
            sock.bind(os.path.join(directory, name))
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets.values():
            sock.close()
        remove_private_listeners(directory)
        raise StartupError(f"listen ({directory}) failed - {exc}") from None
    return sockets


def _replace_directory(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise FileExistsError(errno.EEXIST, "exists and is not this user's directory")
        shutil.rmtree(path)
    os.mkdir(path, 0o700)


def remove_private_listeners(directory):
    """Remove the directory of ``bind_private_listeners`` and its sockets."""
    shutil.rmtree(directory, ignore_errors=True)


def format_sockname(sock):
    name = sock.getsockname()
    if isinstance(name, str):      # a Unix socket's path
        return name
    host, port = name[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def lock_directory(path, daemon_name):
    """Hold an exclusive flock on the data directory for the life of the process.

    flock on the directory itself is what Go's nsqd takes too, so greensq and Go nsqd
    also exclude each other.
    """
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        retry_while_holders_die(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                                lambda: lock_holders(path))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StartupError(
                f"--data-path={path} in use (possibly by another instance of {daemon_name})"
            ) from None
        raise StartupError(f"failed to lock --data-path={path} - {exc}") from None
    return fd
