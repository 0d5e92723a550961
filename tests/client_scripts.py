"""What the third-party client scripts share (interop_clients.py, discovery_clients.py,
transport_clients.py, auth_clients.py).

Each script runs one scenario with pynsq or gnsq in its own process, so gevent's
monkey-patching and tornado's IOLoop never touch the pytest process, and prints what it
saw as one JSON line. ``support.run_client_script`` is the test side.
"""

import json
import sys
import time
import urllib.request

DEADLINE_ERROR = "deadline reached before the scenario completed"


def topic_stats(cfg):
    """nsqd's /stats for the scenario's topic."""
    url = f"http://{cfg['http']}/stats?format=json&topic={cfg['topic']}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def reply_text(result):
    """A publish's reply as text (the clients hand back bytes or a frame object)."""
    return result.decode() if isinstance(result, bytes) else repr(result)


def run_ioloop(loop, deadline, out):
    """Run tornado's IOLoop until a callback stops it or the deadline passes."""
    def give_up():
        out["error"] = DEADLINE_ERROR
        loop.stop()

    timer = loop.call_at(loop.time() + (deadline - time.monotonic()), give_up)
    loop.start()
    loop.remove_timeout(timer)


def wait_then(done, deadline, out, stats):
    """Wait for gevent event ``done``; then record ``stats()``, or the deadline error."""
    if done.wait(max(0.0, deadline - time.monotonic())):
        out["stats"] = stats()
    else:
        out["error"] = DEADLINE_ERROR


def main(runners, prepare):
    """A script's entry point. ``prepare(cfg)`` returns ``(out, extra_args)``; the runner
    for ``cfg["client"]`` is called as ``runner(cfg, *extra_args, out, deadline)``."""
    cfg = json.loads(sys.argv[1])
    if cfg["client"] == "gnsq":
        from gevent import monkey
        monkey.patch_all()
    out, args = prepare(cfg)
    deadline = time.monotonic() + cfg["deadline"]
    try:
        runners[cfg["client"]](cfg, *args, out, deadline)
    except Exception as exc:  # reported, not raised: the test shows it with the output
        out["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def finish_when(loop, ready, finish):
    """A check for pynsq scenarios to call after every event they wait on (a message read,
    a publish answered): the first time ``ready()`` holds, ``finish`` is scheduled on the
    loop. A message can reach its reader before the publisher has read the OK, so a
    scenario that checks both must wait for both."""
    finished = []

    def check():
        if not finished and ready():
            finished.append(True)
            loop.add_callback(finish)

    return check


def when_connected(loop, writer, publish):
    """Call ``publish()`` on tornado's loop once pynsq's Writer has a live connection."""
    def poll():
        if any(conn.connected() for conn in writer.conns.values()):
            publish()
        else:
            loop.call_later(0.005, poll)

    loop.add_callback(poll)
