"""services/shared/holders.py: finding who holds a port or a lock, and telling a dying holder
(which a restart waits for) from a live one (which makes the start fail at once)."""

import errno
import fcntl
import os
import socket
import subprocess
import sys

import pytest

from greensq.services.shared.holders import (
    is_dying, lock_holders, port_holders, retry_while_holders_die)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")


def test_a_listening_socket_and_a_flock_name_their_holder(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        assert os.getpid() in port_holders(sock.getsockname()[1])
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lock_holders(str(tmp_path)) == {os.getpid()}
    finally:
        os.close(fd)
    assert lock_holders(str(tmp_path)) == set()


@pytest.mark.slow   # starts a process
def test_a_zombie_is_dying_and_a_live_process_is_not():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped
    assert is_dying(child.pid)
    child.wait()
    assert is_dying(child.pid)          # gone altogether
    assert not is_dying(os.getpid())


def test_a_live_holder_fails_the_start_at_once():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        attempts = []

        def attempt():
            attempts.append(1)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))

        with pytest.raises(OSError) as info:
            retry_while_holders_die(attempt, lambda: port_holders(port))
        assert info.value.errno == errno.EADDRINUSE
        assert len(attempts) == 1


def test_a_holder_that_is_gone_is_retried_until_the_port_is_free():
    port = []
    free_after = 3

    def attempt():
        port.append(1)
        if len(port) < free_after:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return "bound"

    assert retry_while_holders_die(attempt, lambda: set(), interval=0) == "bound"
    assert len(port) == free_after
