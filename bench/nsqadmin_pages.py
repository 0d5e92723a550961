"""Page weight and time to first render of nsqadmin's topics page with 100 topics.

    python bench/nsqadmin_pages.py [--topics 100] [--runs 5] [--go-nsqadmin PATH]

Starts nsqlookupd, one nsqd registered with it and nsqadmin (greensq's daemons, loopback
ports), creates the topics (each with a channel and a few messages), then loads
the topics page (``/``) in headless Chromium (Debian's chromium + chromedriver) with a fresh profile
and a cold cache, ``--runs`` times, and prints the medians of:

* bytes transferred for the page and everything it loads (Resource Timing; gzip on);
* first contentful paint (Paint Timing);
* the time until every topic is in the table, and until the sparklines are drawn.

``--go-nsqadmin`` measures Go's nsqadmin binary on the same cluster for comparison.
Figures depend on the machine; take them on a quiet one.
"""

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from nsqbench import free_port

# Everything the page loaded (with its size on the wire) and the paint timings, after
# waiting for the topics and (on greensq's page) the sparklines.
MEASURE = """
const done = arguments[arguments.length - 1];
const topics = arguments[0];
const started = performance.now();
function links() {
  return [...document.querySelectorAll('a[href*="/topics/"]')].length;
}
let tableAt = null;
(function poll() {
  const now = performance.now();
  if (tableAt === null && links() >= topics) { tableAt = now; }
  const sparks = document.querySelectorAll('svg.spark path').length;
  const greensq = document.querySelector('svg.spark') !== null;
  if (tableAt !== null && (!greensq || sparks >= topics || now - started > 15000)) {
    const nav = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    done({
      bytes: nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0),
      decoded: nav.decodedBodySize + resources.reduce((n, r) => n + r.decodedBodySize, 0),
      requests: 1 + resources.length,
      fcp: paint ? paint.startTime : null,
      table: tableAt,
      graphs: greensq ? now : null,
    });
    return;
  }
  setTimeout(poll, 5);
})();
"""


def wait_for(url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def post(url, body=b""):
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"),
                                timeout=10) as resp:
        return resp.read()


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, *command):
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(url, topics, runs):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="nsqadmin-bench-profile-") as profile:
            options = webdriver.ChromeOptions()
            options.binary_location = shutil.which("chromium")
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--window-size=1280,900",
                        f"--user-data-dir={profile}"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")),
                                      options=options)
            try:
                driver.set_script_timeout(30)
                driver.get(url)
                results.append(driver.execute_async_script(MEASURE, topics))
            finally:
                driver.quit()
    return results


def report(name, results):
    def median(key):
        values = [r[key] for r in results if r[key] is not None]
        return statistics.median(values) if values else None

    print(f"{name}:")
    print(f"  page weight      {median('bytes') / 1024:8.1f} KiB on the wire "
          f"({median('decoded') / 1024:.1f} KiB decoded, {median('requests'):.0f} requests)")
    print(f"  first paint      {median('fcp'):8.0f} ms")
    print(f"  topics in table  {median('table'):8.0f} ms")
    if median("graphs") is not None:
        print(f"  sparklines drawn {median('graphs'):8.0f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--go-nsqadmin", help="path of Go's nsqadmin, to compare")
    args = parser.parse_args()
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        sys.exit("needs Debian's chromium and chromium-driver")
    procs = Processes()
    data = tempfile.TemporaryDirectory(prefix="nsqadmin-bench-")
    try:
        lookupd_tcp, lookupd_http, nsqd_http = free_port(), free_port(), free_port()
        procs.start(sys.executable, "-m", "greensq.http.nsqlookupd_launcher",
                    f"--tcp-address=127.0.0.1:{lookupd_tcp}",
                    f"--http-address=127.0.0.1:{lookupd_http}", "--broadcast-address=127.0.0.1")
        procs.start(sys.executable, "-m", "greensq.http.nsqd_launcher",
                    f"--tcp-address=127.0.0.1:{free_port()}",
                    f"--http-address=127.0.0.1:{nsqd_http}", f"--data-path={data.name}",
                    f"--lookupd-tcp-address=127.0.0.1:{lookupd_tcp}",
                    "--broadcast-address=127.0.0.1")
        wait_for(f"http://127.0.0.1:{nsqd_http}/ping")
        for i in range(args.topics):
            topic = f"topic_{i:03d}"
            post(f"http://127.0.0.1:{nsqd_http}/topic/create?topic={topic}")
            post(f"http://127.0.0.1:{nsqd_http}/channel/create?topic={topic}&channel=ch")
            post(f"http://127.0.0.1:{nsqd_http}/mpub?topic={topic}", b"m\n" * (i % 7 + 1))
        deadline = time.monotonic() + 30
        while wait_for(f"http://127.0.0.1:{lookupd_http}/topics").count(b"topic_") < args.topics:
            if time.monotonic() > deadline:
                sys.exit("nsqlookupd did not learn every topic")
            time.sleep(0.1)
        lookupd = f"--lookupd-http-address=127.0.0.1:{lookupd_http}"
        admin_port = free_port()
        procs.start(sys.executable, "-m", "greensq.http.nsqadmin_launcher",
                    f"--http-address=127.0.0.1:{admin_port}", lookupd)
        url = f"http://127.0.0.1:{admin_port}/"
        wait_for(url)
        time.sleep(3)   # let the poller take a few samples, as a page opened later would see
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            wait_for(url)
            samples.append(time.perf_counter() - started)
        print(f"{args.topics} topics, {args.runs} cold loads each, medians")
        print(f"greensq nsqadmin: server answers the topics page in "
              f"{statistics.median(samples) * 1000:.1f} ms")
        report("greensq nsqadmin", measure(url, args.topics, args.runs))
        if args.go_nsqadmin:
            go_port = free_port()
            procs.start(args.go_nsqadmin, f"--http-address=127.0.0.1:{go_port}", lookupd)
            wait_for(f"http://127.0.0.1:{go_port}/ping")
            report("Go nsqadmin 1.3", measure(f"http://127.0.0.1:{go_port}/",
                                              args.topics, args.runs))
    finally:
        procs.stop()
        data.cleanup()


if __name__ == "__main__":
    main()
