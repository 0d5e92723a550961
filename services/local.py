"""``greensq-local``: a complete local NSQ for development, on NSQ's default ports.

Starts each daemon as its own process (nsqd with its data under ``./data``, and nsqadmin
on :4171, whose URL it prints) and stops them all (gracefully, so queues reach disk) on
Ctrl-C or SIGTERM. If any daemon exits, the rest are stopped and its exit status is
returned.
"""

import os
import signal
import subprocess
import sys
import time

# (name, module, flags, keeps data)
DAEMONS = [
    ("nsqlookupd", "greensq.http.nsqlookupd_launcher",
     ["--tcp-address=0.0.0.0:4160", "--http-address=0.0.0.0:4161"], False),
    ("nsqd", "greensq.http.nsqd_launcher",
     ["--tcp-address=0.0.0.0:4150", "--http-address=0.0.0.0:4151",
      "--lookupd-tcp-address=127.0.0.1:4160"], True),
    ("nsqadmin", "greensq.http.nsqadmin_launcher",
     ["--http-address=0.0.0.0:4171", "--lookupd-http-address=127.0.0.1:4161"], False),
]
NSQADMIN_URL = "http://127.0.0.1:4171/"


def main(argv=None):
    data_root = os.path.abspath(os.environ.get("GREENSQ_DATA", "data"))
    procs = []
    for name, module, args, keeps_data in DAEMONS:
        extra = []
        if keeps_data:
            data_path = os.path.join(data_root, name)
            os.makedirs(data_path, exist_ok=True)
            extra.append(f"--data-path={data_path}")
        procs.append(subprocess.Popen([sys.executable, "-m", module, *extra, *args]))
    print(f"nsqadmin: {NSQADMIN_URL}", flush=True)

    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while not stopping:
        exited = [p for p in procs if p.poll() is not None]
        if exited:
            status = exited[0].returncode or 1
            break
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
