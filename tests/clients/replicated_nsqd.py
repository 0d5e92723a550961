"""``nsqd`` with a replica, for the client suites: run as ``replicated_nsqd.py NSQD
ARGS...`` in place of the nsqd a suite starts (see ``suite.replicated_daemons``), it
starts another NSQD on a free loopback port as the replica, with a data directory under
$TMPDIR, and then becomes ``NSQD ARGS... --replica-tcp-address=<the replica>``: the
process the suite started is the primary it asked for (same PID, same output), and the
replica dies with it. The primary does not wait for the replica to start: its link
connects once the replica listens, as after any replica's restart."""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile

PR_SET_PDEATHSIG = 1
NOT_A_SERVER = ("--version", "-version", "--help", "-help", "-h")


def die_with_parent():
    """In the replica, before it runs: SIGTERM when its parent (the primary) is gone."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(nsqd, args):
    if any(arg.split("=", 1)[0] in NOT_A_SERVER for arg in args):
        os.execv(nsqd, [nsqd, *args])
    port = free_port()
    data_path = tempfile.mkdtemp(prefix="replica.")
    with open(os.path.join(data_path, "nsqd.log"), "ab") as log:
        subprocess.Popen([nsqd, f"--tcp-address=127.0.0.1:{port}",
                          "--http-address=127.0.0.1:0", f"--data-path={data_path}"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         preexec_fn=die_with_parent)
    os.execv(nsqd, [nsqd, *args, f"--replica-tcp-address=127.0.0.1:{port}"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
