"""nsqadmin in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against a real cluster: every page's numbers, graphs that move while a publisher
runs, a slow channel told apart from a fast one, each action from its button through the
confirmation, a non-admin refused, hostile client ids and user agents shown as text, and
a primary's replica and a replica's copy, taken over once the primary is killed.

Each page is saved as a screenshot in ``$GREENSQ_SCREENSHOTS`` (a folder; by default one
under pytest's temporary directory).
"""

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from admin_cluster import ADMIN, FAST_GRAPHS, AdminCluster, ReplicatedPair
from support import V2Client, nsqadmin_daemon, wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,   # a browser and daemon processes
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"),
]

HOSTILE_AGENT = "<script>window.pwned=1</script><b>agent</b>"
HOSTILE_ID = "<img src=x onerror=window.pwned=2>"


class Browser:
    """One headless Chromium; pages are opened as the user named by the ACL header."""

    def __init__(self, driver, base_url, shots):
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        self.user = None
        driver.execute_cdp_cmd("Network.enable", {})

    def as_user(self, user):
        if user != self.user:
            self.driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                                        {"headers": {"X-Forwarded-User": user}})
            self.user = user

    def open(self, path, user=ADMIN, base_url=None):
        self.as_user(user)
        self.driver.get((base_url or self.base_url) + path)
        return self

    def shot(self, name):
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        assert path.read_bytes().startswith(b"\x89PNG")

    def css(self, selector):
        return self.driver.find_elements("css selector", selector)

    def one(self, selector):
        found = self.css(selector)
        assert len(found) == 1, (selector, len(found))
        return found[0]

    def js(self, script, *args):
        """Run ``script`` in the page; None while a page is being replaced."""
        from selenium.common.exceptions import WebDriverException

        try:
            return self.driver.execute_script(script, *args)
        except WebDriverException:
            return None

    def texts(self, selector):
        """The visible text of every match, read at once (the live graphs keep
        redrawing parts of the page, so elements found earlier may be gone)."""
        return self.js("return Array.from(document.querySelectorAll(arguments[0]),"
                       " e => e.innerText.trim())", selector) or []

    def cells(self, row_selector):
        return self.texts(f"{row_selector} > td")

    def attribute(self, selector, name):
        return self.js("const e = document.querySelector(arguments[0]);"
                       " return e && e.getAttribute(arguments[1]);", selector, name)

    def confirm(self, button_selector=None, text=None, reloads=True):
        """Click an action button (by CSS selector or by its text), check that the
        confirmation asks the button's question, confirm; with ``reloads``, wait until
        the page that the action loads is there."""
        from selenium.common.exceptions import WebDriverException

        def button():
            try:
                for candidate in self.css(button_selector or "button[data-action]"):
                    if text is None or candidate.text == text:
                        return candidate
            except WebDriverException:      # the previous page is still being replaced
                pass
            return None

        found = wait_until(button, message=f"the {text or button_selector} button")
        question = found.get_attribute("data-confirm")
        self.js("window.oldPage = true")
        found.click()
        wait_until(lambda: self.js("return document.getElementById('confirm').open"),
                   message="the confirmation")
        assert self.texts("dialog#confirm .question") == [question]
        self.one("#confirm-ok").click()
        if reloads:
            wait_until(lambda: self.js("return window.oldPage === undefined"
                                       " && document.readyState === 'complete'"),
                       message="the page after the action")
        return question

    def wait_for_text(self, selector, text):
        wait_until(lambda: any(text in found for found in self.texts(selector)),
                   message=f"{text!r} in {selector}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = AdminCluster(tmp_path_factory.mktemp("nsqadmin-browser")).start()
    cluster.create_channel(0, "orders", "audit")
    for index, count in ((0, 30), (1, 20)):
        cluster.create_channel(index, "orders", "billing")
        cluster.publish(index, "orders", count)
    cluster.wait_registered("orders", nodes=2, channel="audit")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def browser(cluster, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    shots = Path(os.environ.get("GREENSQ_SCREENSHOTS")
                 or tmp_path_factory.mktemp("nsqadmin-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield Browser(driver, cluster.admin_url, shots)
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def hostile_consumer(cluster):
    """A consumer of orders/billing on the first nsqd whose client id and user agent are
    markup; a thread answers its heartbeats."""
    consumer = V2Client(cluster.nsqds[0].tcp_port)
    consumer.identify(client_id=HOSTILE_ID, hostname="consumer.example",
                      user_agent=HOSTILE_AGENT, snappy=False)
    consumer.sub("orders", "billing", rdy=0)

    def answer_heartbeats():
        try:
            while True:
                consumer.read_frame()
        except OSError:
            pass

    threading.Thread(target=answer_heartbeats, daemon=True).start()
    wait_until(lambda: cluster.nsqds[0].channel_stats("orders", "billing")["client_count"] == 1,
               message="the consumer subscribed")
    yield consumer
    consumer.close()


@contextlib.contextmanager
def publishing(cluster, topic, batch, then=None):
    """While the block runs, a thread publishes ``batch`` messages to ``topic`` on the
    first nsqd about every 50 ms (for at most 90 s), and calls ``then()`` after each."""
    stop = threading.Event()

    def publish():
        deadline = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < deadline:
            cluster.publish(0, topic, batch)
            if then is not None:
                then()
            stop.wait(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        yield
    finally:
        stop.set()
        publisher.join()


def _number(text):
    return int(text.replace(",", ""))


def _rate(text):
    """A live rate cell's number (None while it shows "–")."""
    return None if text in ("", "–") else float(text.replace(",", ""))


def _legend(browser, chart, kind):
    return browser.texts(f'[data-chart="{chart}"] svg[data-kind="{kind}"] + .legend li')


def _lines(browser, chart, kind):
    """How many lines a chart draws (paths through two points or more)."""
    paths = browser.js("return Array.from(document.querySelectorAll(arguments[0]),"
                       " p => p.getAttribute('d'))",
                       f'[data-chart="{chart}"] svg[data-kind="{kind}"] path') or []
    return len([d for d in paths if "L" in d])


def _stats_sum(cluster, key, topic, channel=None):
    total = 0
    for nsqd in cluster.nsqds:
        entry = nsqd.channel_stats(topic, channel) if channel else nsqd.topic_stats(topic)
        total += entry[key] if entry else 0
    return total


def test_topics_page(cluster, browser):
    browser.open("/topics")
    row = browser.cells('#topics tr[data-topic="orders"]')
    assert row[0] == "orders"
    assert _number(row[1]) == _stats_sum(cluster, "depth", "orders")
    assert _number(row[2]) == _stats_sum(cluster, "message_count", "orders")
    assert row[3:5] == ["2", "2"]          # channels, nodes
    wait_until(lambda: browser.one('svg.spark[data-series="topic/orders"] path'),
               message="the sparkline")
    browser.shot("topics")


def test_topic_page(cluster, browser):
    browser.open("/topics/orders")
    assert browser.texts("h1") == ["Topic orders"]
    for index in range(2):
        stats = cluster.nsqds[index].topic_stats("orders")
        row = browser.cells(f'#topic-nodes tr[data-node="{cluster.node_address(index)}"]')
        assert (_number(row[3]), _number(row[4])) == (stats["message_count"],
                                                      len(stats["channels"]))
    for channel in ("billing", "audit"):
        row = browser.cells(f'#channels tr[data-channel="{channel}"]')
        assert _number(row[1]) == _stats_sum(cluster, "depth", "orders", channel)
        assert _number(row[7]) == _stats_sum(cluster, "message_count", "orders", channel)
    # The depth chart draws the topic's depth and each channel's, each named in its legend.
    assert _legend(browser, "topic/orders", "depth") == ["topic", "audit", "billing"]
    assert _legend(browser, "topic/orders", "rate") == ["in", "audit finished",
                                                        "billing finished"]
    wait_until(lambda: _lines(browser, "topic/orders", "depth") == 3,
               message="a depth line for the topic and for each channel")
    # The tombstone button is a symbol; screen readers and tooltips say what it does.
    node = cluster.node_address(1)
    button = browser.one(f'#topic-nodes tr[data-node="{node}"] button.tomb')
    assert browser.texts(f'#topic-nodes tr[data-node="{node}"] button.tomb '
                         '[aria-hidden="true"]') == ["✕"]
    assert button.accessible_name == button.get_attribute("title") == \
        f"Tombstone topic orders on {node}"
    browser.shot("topic")


def test_channel_page_shows_clients_as_text(cluster, browser, hostile_consumer):
    browser.open("/topics/orders/billing")
    row = browser.cells(f'#channel-nodes tr[data-node="{cluster.node_address(0)}"]')
    assert _number(row[1]) == 30 and row[8] == "1"
    assert browser.texts("#clients tr.client .user-agent") == [HOSTILE_AGENT]
    assert browser.texts("#clients tr.client .client-id") == [HOSTILE_ID]
    assert browser.css("#clients b, #clients img, #clients script") == []
    assert browser.driver.execute_script("return window.pwned === undefined")
    cells = browser.cells("#clients tr.client")
    assert cells[3] == cluster.node_address(0)
    assert cells[4:9] == ["0", "0", "0", "0", "0"]     # ready, in flight, fin, req, msgs
    browser.shot("channel")


def test_nodes_and_node_pages(cluster, browser):
    browser.open("/nodes")
    lookupd = f"127.0.0.1:{cluster.lookupd.http_port}"
    for index in range(2):
        address = cluster.node_address(index)
        row = browser.cells(f'#nodes tr[data-node="{address}"]')
        assert row[1] == "127.0.0.1" and _number(row[3]) == cluster.nsqds[index].http_port
        assert row[4] == "1.3.0"
        # Each nsqlookupd that knows the node is an item of its own, read apart from the
        # address it sees the node at.
        [seen] = browser.texts(f'#nodes tr[data-node="{address}"] .lookupd-connections li')
        assert seen.startswith(f"{lookupd} from 127.0.0.1:") and "/" not in seen
    browser.shot("nodes")
    node = cluster.node_address(0)
    browser.open(f"/nodes/{node}")
    facts = dict(zip(browser.texts("#node-facts dt"), browser.texts("#node-facts dd")))
    assert facts["Version"] == "1.3.0"
    assert facts["Uptime"] != "unknown"
    topics = cluster.nsqds[0].stats()["topics"]
    assert _number(facts["Messages"]) == sum(t["message_count"] for t in topics)
    assert browser.cells('#node-topics tr[data-channel="orders/audit"]')[0] == "audit"
    browser.shot("node")


def test_graphs_move_while_a_publisher_runs(cluster, browser):
    browser.open("/topics/orders")
    spark = 'svg.spark[data-series="topic/orders"]'
    with publishing(cluster, "orders", 25):
        def path():
            return browser.attribute(spark + " path", "d")

        wait_until(lambda: browser.texts('#topic-nodes tfoot [data-rate="topic/orders"]')
                   not in ([], ["–"], ["0"]), timeout=20, message="a rate in the total row")
        first = path()
        wait_until(lambda: path() != first, timeout=20, message="the sparkline to move")
        last = browser.attribute('[data-chart="topic/orders"] svg[data-kind="rate"]', "data-last")
        assert float(last) > 0
        browser.shot("topic-live-graphs")


def test_slow_and_fast_channels_show_their_own_finish_rates(cluster, browser):
    """One topic, two channels: a consumer that finishes every message and one that
    finishes one of each 20. Both receive at the topic's rate; the pages tell them apart
    by the rate messages are finished."""
    cluster.create_channel(0, "speeds", "fast")
    cluster.create_channel(0, "speeds", "slow")
    fast, slow = V2Client(cluster.nsqds[0].tcp_port), V2Client(cluster.nsqds[0].tcp_port)
    fast.sub("speeds", "fast", rdy=100)
    slow.sub("speeds", "slow", rdy=1)

    def consume():
        for _ in range(20):
            fast.command(b"FIN " + fast.read_message().id)
        slow.command(b"FIN " + slow.read_message().id)

    def rates(channel):
        cell = f'#channels td[data-rate="channel/speeds/{channel}"]'
        [received] = browser.texts(cell + ":not([data-kind])") or [""]
        [finished] = browser.texts(cell + '[data-kind="finish"]') or [""]
        return _rate(received), _rate(finished)

    def told_apart():
        (fast_in, fast_fin), (slow_in, slow_fin) = rates("fast"), rates("slow")
        return (fast_in and slow_in and fast_fin and slow_fin is not None
                and fast_fin > 4 * slow_fin)

    try:
        with publishing(cluster, "speeds", 20, then=consume):
            browser.open("/topics/speeds")
            assert browser.texts("#channels th")[9:11] == ["In /s", "Finished /s"]
            wait_until(told_apart, timeout=30,
                       message="the fast channel's finish rate well above the slow one's")
            wait_until(lambda: _lines(browser, "topic/speeds", "rate") == 3,
                       message="the topic's rate in and each channel's finish rate")
            browser.shot("topic-fast-and-slow")
            browser.open("/topics/speeds/slow")
            assert _legend(browser, "channel/speeds/slow", "rate") == [
                "in", "finished", "requeued", "timed out"]
            wait_until(lambda: _lines(browser, "channel/speeds/slow", "rate") == 4,
                       message="the channel's rates in, finished, requeued and timed out")
            browser.shot("channel-slow")
    finally:
        fast.close()
        slow.close()


def test_charts_start_at_the_first_sample(cluster, browser):
    """A topic younger than nsqadmin's history fills its charts: the x axis starts at its
    first sample, not where nsqadmin's history does."""
    def graphs(topic):
        return json.loads(cluster.admin.http("GET", f"/api/graphs/topics/{topic}")[2])

    wait_until(lambda: len(graphs("orders")["times"]) >= 12, timeout=30,
               message="nsqadmin's history of a few seconds")
    cluster.publish(0, "young", 3)
    cluster.wait_registered("young", nodes=1)
    wait_until(lambda: len([d for d in graphs("young")["series"].get("topic/young", {}).get(
        "depth", []) if d is not None]) >= 3, message="three samples of the young topic")
    browser.open("/topics/young")
    depth = '[data-chart="topic/young"] svg[data-kind="depth"]'
    wait_until(lambda: browser.attribute(depth + " path", "d"), message="the depth line")
    assert browser.attribute(depth + " path", "d").startswith("M0.0 ")
    assert graphs("young")["series"]["topic/young"]["depth"][0] is not None
    browser.shot("topic-young")


def test_counter_rate_is_measured_before_it_is_shown(cluster, browser):
    """No "0 messages per second" while the counter has a single total to go by."""
    with publishing(cluster, "orders", 5):
        browser.open("/counter")
        seen = []

        def measured():
            [text] = browser.texts("#counter-rate") or [""]
            seen.append(text)
            return any(ch.isdigit() for ch in text)

        wait_until(measured, timeout=20, interval=0.01, message="a measured rate")
        assert "measuring" in seen[0]
        assert _rate(seen[-1].split()[0]) > 0, seen[-5:]


def test_counter_counts_live(cluster, browser):
    browser.open("/counter")
    def shown():
        return browser.attribute("#counter", "data-shown")    # a string, once counting

    start = int(wait_until(shown, message="the counter"))
    cluster.publish(0, "orders", 200)
    wait_until(lambda: int(shown()) >= start + 200, timeout=15, message="the counter to count")
    browser.shot("counter")


def test_channel_actions_from_the_browser(cluster, browser):
    nsqd = cluster.nsqds[0]
    browser.open("/topics/orders/audit")
    browser.confirm(text="Pause Channel")
    wait_until(lambda: nsqd.channel_stats("orders", "audit")["paused"], message="paused")
    browser.wait_for_text("h1 .tag", "paused")
    browser.confirm(text="Unpause Channel")
    wait_until(lambda: not nsqd.channel_stats("orders", "audit")["paused"], message="unpaused")
    browser.wait_for_text("button[data-action]", "Pause Channel")
    browser.confirm(text="Empty Queue")
    wait_until(lambda: nsqd.channel_stats("orders", "audit")["depth"] == 0, message="emptied")
    browser.confirm(text="Delete Channel")
    wait_until(lambda: nsqd.channel_stats("orders", "audit") is None, message="deleted")
    wait_until(lambda: browser.driver.current_url.endswith("/topics/orders"),
               message="back on the topic page")
    assert browser.css('#channels tr[data-channel="audit"]') == []


def test_topic_actions_from_the_browser(cluster, browser):
    for index in range(2):
        cluster.publish(index, "scratch", 5)
    cluster.wait_registered("scratch", nodes=2)
    browser.open("/topics/scratch")
    browser.confirm(text="Pause Topic")
    wait_until(lambda: all(n.topic_stats("scratch")["paused"] for n in cluster.nsqds),
               message="paused on every nsqd")
    browser.wait_for_text("button[data-action]", "Unpause Topic")
    browser.confirm(text="Unpause Topic")
    wait_until(lambda: not any(n.topic_stats("scratch")["paused"] for n in cluster.nsqds),
               message="unpaused")
    browser.wait_for_text("button[data-action]", "Pause Topic")
    browser.confirm(text="Empty Queue")
    wait_until(lambda: _stats_sum(cluster, "depth", "scratch") == 0, message="emptied")
    browser.wait_for_text("button[data-action]", "Empty Queue")
    question = browser.confirm(f'#topic-nodes tr[data-node="{cluster.node_address(1)}"] button')
    assert question.startswith(f"Tombstone {cluster.node_address(1)} for topic scratch")
    wait_until(lambda: cluster.nsqds[1].topic_stats("scratch") is None, message="tombstoned")
    browser.wait_for_text("h1", "scratch")
    browser.confirm(text="Delete Topic")
    wait_until(lambda: cluster.nsqds[0].topic_stats("scratch") is None, message="deleted")
    wait_until(lambda: browser.driver.current_url.endswith("/topics"), message="on /topics")
    assert browser.css('#topics tr[data-topic="scratch"]') == []


def test_create_from_the_lookup_page(cluster, browser):
    browser.open("/lookup")
    assert browser.cells('#lookup-topics tr[data-topic="orders"]')[1] == "2"
    browser.shot("lookup")
    browser.one('#create input[name="topic"]').send_keys("born")
    browser.one('#create button[type="submit"]').click()
    assert browser.texts("dialog#confirm .question") == ["Create topic born?"]
    browser.one("#confirm-ok").click()
    wait_until(lambda: browser.driver.current_url.endswith("/topics/born"),
               message="the new topic's page")
    assert "born" in cluster.lookupd_json("/topics")["topics"]
    browser.open("/lookup")
    browser.wait_for_text('#lookup-topics tr[data-topic="born"]', "inactive")


def test_a_non_admin_is_refused(cluster, browser):
    browser.open("/topics/orders", user="mallory")
    assert browser.css("button[data-action]") == []
    browser.shot("non-admin-topic")
    result = browser.driver.execute_async_script("""
        var done = arguments[arguments.length - 1];
        fetch("/api/topics/orders", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({action: "pause"})})
          .then(function (r) { return r.json().then(function (d) { done([r.status, d]); }); });
    """)
    assert result == [403, {"message": "FORBIDDEN"}]
    assert not cluster.nsqds[0].topic_stats("orders")["paused"]
    browser.open("/lookup", user="mallory")
    assert browser.css("#create") == []


def test_a_node_that_is_down_is_named(cluster, browser):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    admin = nsqadmin_daemon([f"--nsqd-http-address={cluster.node_address(0)}",
                             f"--nsqd-http-address={dead}"], env=FAST_GRAPHS).start()
    try:
        url = f"http://127.0.0.1:{admin.http_port}"
        browser.open("/nodes", base_url=url)
        assert browser.texts("#down-nodes") == [dead]
        assert browser.css(f'#nodes tr[data-node="{cluster.node_address(0)}"]')
        browser.shot("down-node")
        browser.open("/topics/orders", base_url=url)
        browser.wait_for_text("#messages .alert", f"{dead} did not answer")
        assert _number(browser.cells("#topic-nodes tfoot tr")[3]) == \
            cluster.nsqds[0].topic_stats("orders")["message_count"]
        # An action reaches the nsqd that answers and names the one that does not.
        browser.confirm(text="Pause Topic", reloads=False)
        browser.wait_for_text("#messages .alert.warn", f'WARNING: Get "http://{dead}/stats')
        assert cluster.nsqds[0].topic_stats("orders")["paused"]
        browser.shot("down-node-action")
    finally:
        admin.stop()
        cluster.nsqds[0].http("POST", "/topic/unpause?topic=orders")


def test_replicas_and_a_taken_over_copy(browser, nsqd_factory):
    pair = ReplicatedPair(nsqd_factory)
    try:
        producer = V2Client(pair.primary.tcp_port)
        assert producer.mpub("kept", [b"abc"] * 3) == (0, b"OK")
        producer.close()

        def shown(path, selector, text):
            """Until the page (opened again: it is rendered by the server) shows it."""
            def found():
                browser.open(path, base_url=pair.admin_url)
                return text in browser.texts(selector)
            wait_until(found, timeout=30, message=f"{text!r} in {selector} of {path}")

        shown("/nodes", f'#nodes li.copy[data-primary="{pair.primary_node}"]',
              f"copy of {pair.primary_node} following 3 messages")
        [replica] = browser.texts(f'#nodes li.replica[data-replica="{pair.replica.tcp_address}"]')
        assert replica.startswith(f"replica {pair.replica.tcp_address} up")
        browser.shot("replicated-nodes")
        browser.open(f"/nodes/{pair.primary_node}", base_url=pair.admin_url)
        cells = browser.cells(f'#node-replicas tr[data-replica="{pair.replica.tcp_address}"]')
        assert cells[:2] == [pair.replica.tcp_address, "up"]

        pair.primary.kill()
        shown(f"/nodes/{pair.replica_node}", "#node-copies td", "taken over")
        cells = browser.cells(f'#node-copies tr[data-primary="{pair.primary_node}"]')
        assert cells[0] == pair.primary_node and cells[4] == "3"
        browser.shot("taken-over-copy")
    finally:
        pair.admin.stop()
