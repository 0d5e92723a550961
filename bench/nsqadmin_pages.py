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
import statistics
import sys
import tempfile
import time

from greensq.http.testing import Daemon, nsqadmin_daemon, nsqlookupd_daemon, wait_until

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
    daemons = []

    def start(daemon):
        daemons.append(daemon)
        return daemon.start()

    data = tempfile.TemporaryDirectory(prefix="nsqadmin-bench-")
    try:
        lookupd = start(nsqlookupd_daemon(None, ["--broadcast-address=127.0.0.1"]))
        nsqd = start(Daemon(data.name, [f"--lookupd-tcp-address={lookupd.tcp_address}",
                                        "--broadcast-address=127.0.0.1"]))
        for i in range(args.topics):
            topic = f"topic_{i:03d}"
            for path, body in ((f"/topic/create?topic={topic}", b""),
                               (f"/channel/create?topic={topic}&channel=ch", b""),
                               (f"/mpub?topic={topic}", b"m\n" * (i % 7 + 1))):
                status, _, answer = nsqd.http("POST", path, body)
                assert status == 200, answer
        wait_until(lambda: lookupd.http("GET", "/topics")[2].count(b"topic_") >= args.topics,
                   timeout=30, interval=0.1, message="nsqlookupd to learn every topic")
        lookupd_flag = f"--lookupd-http-address={lookupd.http_address}"
        admin = start(nsqadmin_daemon([lookupd_flag]))
        time.sleep(3)   # let the poller take a few samples, as a page opened later would see
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            assert admin.http("GET", "/")[0] == 200
            samples.append(time.perf_counter() - started)
        print(f"{args.topics} topics, {args.runs} cold loads each, medians")
        print(f"greensq nsqadmin: server answers the topics page in "
              f"{statistics.median(samples) * 1000:.1f} ms")
        url = f"http://127.0.0.1:{admin.http_port}/"
        report("greensq nsqadmin", measure(url, args.topics, args.runs))
        if args.go_nsqadmin:
            go_admin = start(nsqadmin_daemon([lookupd_flag], binary=args.go_nsqadmin))
            report("Go nsqadmin 1.3", measure(f"http://127.0.0.1:{go_admin.http_port}/",
                                              args.topics, args.runs))
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        data.cleanup()


if __name__ == "__main__":
    main()
