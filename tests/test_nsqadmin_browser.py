"""nsqadmin in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against a real cluster: every page's numbers, graphs that move while a publisher
runs, each action from its button through the confirmation, a non-admin refused, and
hostile client ids and user agents shown as text.

Each page is saved as a screenshot in ``$GREENSQ_SCREENSHOTS`` (a folder; by default one
under pytest's temporary directory).
"""

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from admin_cluster import ADMIN, FAST_GRAPHS, AdminCluster
from support import V2Client, nsqadmin_daemon, wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")

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


def _number(text):
    return int(text.replace(",", ""))


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
    wait_until(lambda: browser.one('[data-chart="topic/orders"] svg[data-kind="depth"] path'),
               message="the depth chart")
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
    for index in range(2):
        row = browser.cells(f'#nodes tr[data-node="{cluster.node_address(index)}"]')
        assert row[1] == "127.0.0.1" and _number(row[3]) == cluster.nsqds[index].http_port
        assert row[4] == "1.3.0"
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
    stop = threading.Event()

    def publish():
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            cluster.publish(0, "orders", 25)
            stop.wait(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        def path():
            return browser.attribute(spark + " path", "d")

        wait_until(lambda: browser.texts('#topic-nodes tfoot [data-rate="topic/orders"]')
                   not in ([], ["–"], ["0"]), timeout=20, message="a rate in the total row")
        first = path()
        wait_until(lambda: path() != first, timeout=20, message="the sparkline to move")
        last = browser.attribute('[data-chart="topic/orders"] svg[data-kind="rate"]', "data-last")
        assert float(last) > 0
        browser.shot("topic-live-graphs")
    finally:
        stop.set()
        publisher.join()


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

