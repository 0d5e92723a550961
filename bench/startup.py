"""Time from starting a daemon to its first answer to ``GET /ping``, wall clock and CPU.

    python bench/startup.py [--daemon nsqd] [--runs 10] [--target 0.1] [--memory] [--floor]
                            [--http-workers N]

Each run starts ``python -m greensq.http.<daemon>_launcher`` (the interpreter running this
script) on free loopback ports (nsqd with a fresh temporary data directory), polls /ping
until it answers, and records the time since ``Popen`` and the CPU time the daemon's
processes (arbiter and workers; nsqd's HTTP workers with ``--http-workers``) have used
by then; then it stops the daemon with SIGTERM.
Prints every run, then the median and max of both. greensq's modules are compiled to
bytecode first, as in an installed package. On a loaded machine the wall time
mostly measures the wait for a CPU; the CPU time is the cost of starting. With
``--memory`` each run also prints the daemon's memory a second after its first answer,
at rest: the PSS of its processes, and (as root) the memory they hold with each
physical page counted once, which other processes on the host do not lower.

``--floor`` also measures, between the runs, what the process model costs before greensq
does anything: the CPU of one interpreter that starts, then imports what the arbiter and
the worker import from Gunicorn, then patches with gevent, then imports Falcon, httptools
and ujson, and exits without tearing down. A daemon's start cannot cost less than the
last of those figures.
"""

import argparse
import compileall
import glob
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

from nsqbench import MIB, daemon_pss, daemon_resident_once

from greensq.http.testing import Daemon, free_port, nsqadmin_daemon, nsqlookupd_daemon


def cpu_seconds(pids):
    """CPU time of every thread of ``pids`` (the scheduler's nanosecond count)."""
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(path) as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


def unstarted(daemon, data_path, http_workers=0):
    """The daemon on free ports (fixed before it starts: it logs errors only, not which
    ports it listens on)."""
    addresses = {"http_address": f"127.0.0.1:{free_port()}"}
    if daemon != "nsqadmin":
        addresses["tcp_address"] = f"127.0.0.1:{free_port()}"
    flags = ["--log-level=error"]
    if daemon == "nsqd":
        return Daemon(data_path, [*flags, f"--http-workers={http_workers}"], **addresses)
    if daemon == "nsqlookupd":
        return nsqlookupd_daemon(None, flags, **addresses)
    return nsqadmin_daemon([*flags, "--nsqd-http-address=127.0.0.1:4151"], **addresses)


def with_bytecode():
    """greensq's modules compiled beforehand, and kept: as an installed package starts
    (pip compiles it). With PYTHONDONTWRITEBYTECODE set, as in some development shells,
    every start would compile every module of a checkout."""
    for name in ("actors", "services", "http", "client"):
        for path in importlib.import_module(f"greensq.{name}").__path__:
            if os.path.isdir(path):   # not an editable install's finder entry
                compileall.compile_dir(path, quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


FLOOR_STEPS = (
    ("interpreter", "pass"),
    ("+ Gunicorn's arbiter and worker",
     "from greensq.http.unused_modules import defer_unused_modules; defer_unused_modules(); "
     "import gunicorn.app.base, gunicorn.arbiter, gunicorn.glogging, gunicorn.workers.base"),
    ("+ gevent, patched", "from greensq.http.worker_hub import monkey_patch; monkey_patch()"),
    ("+ Falcon, httptools, ujson", "import falcon, httptools, ujson"),
)


def floor_cpu():
    """CPU seconds of one process per step of FLOOR_STEPS, each doing the steps before it."""
    code, cpus = [], []
    for _, step in FLOOR_STEPS:
        code.append(step)
        proc = subprocess.Popen([sys.executable, "-c", "; ".join(code + ["import os",
                                                                          "os._exit(0)"])])
        _, status, usage = os.wait4(proc.pid, 0)
        if status:
            raise RuntimeError(f"floor step failed: {'; '.join(code)}")
        cpus.append(usage.ru_utime + usage.ru_stime)
    return cpus


def one_run(daemon, timeout=30.0, memory=False, http_workers=0):
    """``(wall seconds, CPU seconds)`` from start to the first /ping answer; with
    ``memory``, and ``(PSS, each page once)`` in bytes a second later."""
    with tempfile.TemporaryDirectory(prefix="greensq-bench-") as data_path:
        daemon = unstarted(daemon, data_path, http_workers)
        started = time.monotonic()
        daemon.start(wait=False)
        try:
            daemon.wait_until_answering(timeout, interval=0.002)
            result = time.monotonic() - started, cpu_seconds(daemon.pids().values())
            if not memory:
                return result
            time.sleep(1.0)
            return result + ((sum(daemon_pss(daemon).values()), daemon_resident_once(daemon)),)
        finally:
            daemon.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon", choices=("nsqd", "nsqlookupd", "nsqadmin"), default="nsqd")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.1,
                        help="seconds to compare the median wall time against (report only)")
    parser.add_argument("--memory", action="store_true",
                        help="also print the daemon's memory at rest after each start")
    parser.add_argument("--floor", action="store_true",
                        help="also measure the CPU of the imports the process model needs")
    parser.add_argument("--http-workers", type=int, default=0,
                        help="nsqd's --http-workers")
    args = parser.parse_args()
    walls, cpus, floors = [], [], []
    with_bytecode()
    for index in range(args.runs):
        if args.floor:
            floors.append(floor_cpu())
        wall, cpu, *memory = one_run(args.daemon, memory=args.memory,
                                     http_workers=args.http_workers)
        walls.append(wall)
        cpus.append(cpu)
        line = f"run {index + 1}: {wall * 1000:.0f} ms to first /ping, {cpu * 1000:.0f} ms CPU"
        if memory:
            pss, once = memory[0]
            line += f"; at rest PSS {pss / MIB:.1f} MiB"
            if once is not None:
                line += f", each page once {once / MIB:.1f} MiB"
        print(line)
    median = statistics.median(walls)
    verdict = "within" if median < args.target else "OVER"
    print(f"wall: median {median * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms; "
          f"CPU: median {statistics.median(cpus) * 1000:.0f} ms, max {max(cpus) * 1000:.0f} ms "
          f"over {len(walls)} runs ({verdict} the {args.target * 1000:.0f} ms target)")
    if floors:
        steps = ", ".join(f"{name} {statistics.median(run[i] for run in floors) * 1000:.0f}"
                          for i, (name, _) in enumerate(FLOOR_STEPS))
        print(f"floor, CPU medians in ms: {steps}")


if __name__ == "__main__":
    main()
