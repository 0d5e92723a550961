"""``greensq-local``: a complete local NSQ for development, on NSQ's default ports.

Starts nsqlookupd (TCP 4160, HTTP 4161), nsqd (TCP 4150, HTTP 4151, registered with that
nsqlookupd, its data in ``<data-path>/nsqd``) and nsqadmin (HTTP 4171, whose URL it
prints), each as its own process, listening on ``--address`` (127.0.0.1 unless told
otherwise: a development cluster is not for the network). Ctrl-C or SIGTERM stops them all
gracefully, so queues reach disk.

Before starting anything it checks that every port is free, and names the one that is
not (and the daemon that needs it), exiting 1. If a daemon exits while running, the others
are stopped and greensq-local exits with that daemon's status.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

from greensq.services.shared.goflags import Flag, FlagSet, parse_or_exit

PROGRAM = "greensq-local"
FLAGS = FlagSet(PROGRAM, [
    Flag("data-path", "str", "data", "directory for the cluster's data (nsqd keeps its "
         "queues in <data-path>/nsqd)"),
    Flag("address", "str", "127.0.0.1", "address every daemon listens on (0.0.0.0 for "
         "every interface)"),
])

LOOKUPD_PORTS = {"tcp": 4160, "http": 4161}
NSQD_PORTS = {"tcp": 4150, "http": 4151}
NSQADMIN_PORTS = {"http": 4171}
DAEMONS = [   # name, module, its listeners' ports
    ("nsqlookupd", "greensq.http.nsqlookupd_launcher", LOOKUPD_PORTS),
    ("nsqd", "greensq.http.nsqd_launcher", NSQD_PORTS),
    ("nsqadmin", "greensq.http.nsqadmin_launcher", NSQADMIN_PORTS),
]
WILDCARDS = ("0.0.0.0", "::")


def url_host(address):
    """``address`` as the host of a URL, or of ``host:port``."""
    return f"[{address}]" if ":" in address else address


def peer_host(address):
    """Where the daemons (and the user) reach a daemon listening on ``address``."""
    return "127.0.0.1" if address in WILDCARDS else url_host(address)


def daemon_args(name, ports, address, data_path):
    """The command-line flags of one daemon of the cluster."""
    host, peer = url_host(address), peer_host(address)
    args = [f"--{listener}-address={host}:{port}" for listener, port in ports.items()]
    if name == "nsqd":
        args += [f"--data-path={data_path}", f"--lookupd-tcp-address={peer}:{LOOKUPD_PORTS['tcp']}"]
        if address not in WILDCARDS:   # consumers that ask lookupd must reach nsqd there
            args.append(f"--broadcast-address={address}")
    elif name == "nsqadmin":
        args.append(f"--lookupd-http-address={peer}:{LOOKUPD_PORTS['http']}")
    return args


def busy_port(address):
    """The first port of the cluster that cannot be listened on, as one line for the
    user, or None when all are free."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for name, _, ports in DAEMONS:
        for listener, port in ports.items():
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address, port))
                except OSError as exc:
                    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                    hint = (" (is another NSQ running?)" if exc.errno == errno.EADDRINUSE
                            else "")
                    return (f"{PROGRAM}: {name} cannot listen on port {port} "
                            f"({listener.upper()}) of {address}: {reason}{hint}")
    return None


def main(argv=None):
    opts = parse_or_exit(FLAGS.parse, sys.argv[1:] if argv is None else argv, PROGRAM)
    problem = busy_port(opts.address)
    if problem:
        sys.stderr.write(problem + "\n")
        return 1
    data_path = os.path.join(os.path.abspath(opts.data_path), "nsqd")
    os.makedirs(data_path, exist_ok=True)
    stopping = []
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    procs = [(name, subprocess.Popen([sys.executable, "-m", module,
                                      *daemon_args(name, ports, opts.address, data_path)]))
             for name, module, ports in DAEMONS]
    print(f"nsqadmin: http://{peer_host(opts.address)}:{NSQADMIN_PORTS['http']}/", flush=True)

    status = 0
    while not stopping:
        exited = [(name, proc) for name, proc in procs if proc.poll() is not None]
        if exited:
            name, proc = exited[0]
            status = proc.returncode if proc.returncode > 0 else 1
            sys.stderr.write(f"{PROGRAM}: {name} exited with status {proc.returncode}; "
                             "stopping the others\n")
            break
        time.sleep(0.2)
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc in procs:
        proc.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
