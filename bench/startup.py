"""Time from starting nsqd to its first successful ``GET /ping``.

    python bench/startup.py [--runs 5] [--target 1.0]

Each run starts ``python -m greensq.http.nsqd_launcher`` on free loopback ports with a
fresh temporary data directory, polls /ping until it answers 200, records the time since
``Popen``, then stops the daemon with SIGTERM. Prints every run, the mean and the max.
"""

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1.0) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def one_run(timeout=30.0):
    http_port = free_port()
    with tempfile.TemporaryDirectory(prefix="greensq-bench-") as data_path:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "greensq.http.nsqd_launcher",
             f"--tcp-address=127.0.0.1:{free_port()}", f"--http-address=127.0.0.1:{http_port}",
             f"--data-path={data_path}", "--log-level=error"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not ping(http_port):
                if proc.poll() is not None:
                    raise RuntimeError(f"nsqd exited with {proc.returncode} before /ping")
                if time.monotonic() - started > timeout:
                    raise RuntimeError("nsqd did not answer /ping in time")
                time.sleep(0.002)
            return time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", type=float, default=1.0,
                        help="seconds to compare the max against (report only)")
    args = parser.parse_args()
    times = []
    for index in range(args.runs):
        elapsed = one_run()
        times.append(elapsed)
        print(f"run {index + 1}: {elapsed * 1000:.0f} ms to first /ping")
    mean, worst = statistics.mean(times), max(times)
    verdict = "within" if worst < args.target else "OVER"
    print(f"mean {mean * 1000:.0f} ms, max {worst * 1000:.0f} ms over {len(times)} runs "
          f"({verdict} the {args.target:g} s target)")


if __name__ == "__main__":
    main()
