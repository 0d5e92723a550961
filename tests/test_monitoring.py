"""deploy/monitoring/ for real: the rules pass promtool's checks and their unit tests
(tests/monitoring/, one or more per alert), they and the Grafana dashboard query only
metrics that greensq's daemons serve, and Debian's Prometheus server, scraping a live
cluster started here, fires the backlog alerts when a channel backs up and clears them
once it is emptied. Without promtool or prometheus (Debian package prometheus) the tests
are skipped, except under CI, where they fail.
"""

import json
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support import (Daemon, cannot_run, free_port, nsqadmin_daemon, nsqlookupd_daemon,
                     wait_until)

pytestmark = pytest.mark.slow   # promtool, Prometheus and greensq's daemons

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "greensq.rules.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).resolve().parent / "monitoring" / "greensq.rules.test.yml"

# Names no daemon serves that a query may use: Prometheus' own series.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on",
                   "ignoring", "group_left", "group_right", "inf", "nan"}
# What the dashboard's variables stand for when its queries are sent to Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$topic": ".*", "$channel": ".*",
                     "$node": ".*"}


def tool(name):
    path = shutil.which(name)
    if path is None:
        cannot_run(f"needs {name} (Debian package prometheus)")
    return path


def promtool(*args, cwd=None):
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def rule_groups():
    return yaml.safe_load(RULES.read_text())["groups"]


def alerting_rules():
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recorded_names():
    return {rule["record"] for group in rule_groups() for rule in group["rules"]
            if "record" in rule}


def dashboard_queries():
    """Every PromQL query of the dashboard: its panels' targets and its variables'
    label_values() selectors."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"]
               for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
            queries.append(selector.group(1))
    return queries


def metric_names(expr):
    """The series names a PromQL expression reads (functions, keywords, label names and
    durations left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w.$:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()", expr)
    return {word for word in words if word.lower() not in PROMQL_KEYWORDS}


def test_metric_names_reads_what_a_query_reads():
    assert metric_names('sum by (topic) (rate(nsq_topic_messages_total{job="nsqd", '
                        'topic=~"a|b"}[$__rate_interval])) / on (instance) group_left () '
                        '(x:y:z > 0) or vector(0) and up == bool 1e3') == \
        {"nsq_topic_messages_total", "x:y:z", "up"}


def test_rules_pass_promtool_check():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_prometheus_config_passes_promtool_check():
    proc = promtool("check", "config", "prometheus.yml", cwd=MONITORING)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_runbook_and_passes_its_unit_tests():
    alerts = alerting_rules()
    for rule in alerts:
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert tested == {rule["alert"] for rule in alerts}
    proc = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class MonitoredCluster:
    """nsqlookupd, two nsqd registered with it and nsqadmin, on free ports; the first nsqd
    with every optional family of /metrics on (disk bounds, e2e percentiles, the second
    nsqd as its replica, which then serves the copy's families)."""

    def __init__(self, workdir):
        self.lookupd = nsqlookupd_daemon(None).start()
        lookupd_flag = f"--lookupd-tcp-address={self.lookupd.tcp_address}"
        replica = Daemon(workdir / "nsqd2", [lookupd_flag]).start()
        self.nsqd = [
            Daemon(workdir / "nsqd1", [lookupd_flag, "--max-bytes-per-topic=100000000",
                                       "--max-bytes-per-channel=100000000",
                                       "--e2e-processing-latency-percentile=0.99,0.5",
                                       f"--replica-tcp-address={replica.tcp_address}"]).start(),
            replica]
        wait_until(lambda: replica.stats().get("replication"), timeout=30,
                   message="the replica keeping the first nsqd's copy")
        self.admin = nsqadmin_daemon(
            [f"--lookupd-http-address={self.lookupd.http_address}"]).start()
        wait_until(lambda: len(self.lookupd_nodes()) == 2, timeout=30,
                   message="both nsqd registered with nsqlookupd")

    def lookupd_nodes(self):
        status, _, body = self.lookupd.http("GET", "/nodes")
        return json.loads(body)["producers"] if status == 200 else []

    def daemons(self):
        return [self.lookupd, *self.nsqd, self.admin]

    def stop(self):
        for daemon in self.daemons():
            daemon.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = MonitoredCluster(tmp_path_factory.mktemp("monitored"))
    yield cluster
    cluster.stop()


def served_names(daemon):
    """The sample names of every family a daemon's /metrics declares."""
    status, _, body = daemon.http("GET", "/metrics")
    assert status == 200, body
    names = set()
    for family in text_string_to_metric_families(body.decode()):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def known_names(cluster):
    """What a query may read: the daemons' series, the recorded ones, Prometheus' own."""
    return set().union(*(served_names(daemon) for daemon in cluster.daemons()),
                       recorded_names(), PROMETHEUS_SERIES)


def test_rules_query_only_metrics_the_daemons_serve(known_names):
    for group in rule_groups():
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= known_names, \
                (rule.get("alert") or rule["record"], names - known_names)


def test_dashboard_queries_only_metrics_the_daemons_serve(known_names):
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names and names <= known_names, (expr, names - known_names)


class Prometheus:
    """Debian's Prometheus server scraping ``cluster`` every second with greensq's rules,
    their ``for:`` durations cut to 0 s (promtool's unit tests cover those)."""

    def __init__(self, cluster, workdir):
        rules = re.sub(r"^(\s+for:) .*$", r"\1 0s", RULES.read_text(), flags=re.MULTILINE)
        (workdir / "rules.yml").write_text(rules)
        jobs = {"nsqd": [daemon.http_address for daemon in cluster.nsqd],
                "nsqlookupd": [cluster.lookupd.http_address],
                "nsqadmin": [cluster.admin.http_address]}
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(workdir / "rules.yml")],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                                     for job, targets in jobs.items()]}
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(workdir / "prometheus.log", "wb"))
        self.log = workdir / "prometheus.log"
        wait_until(self.ready, timeout=60, interval=0.1, message="Prometheus to be ready")

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def ready(self):
        assert self.proc.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                        timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def targets_up(self):
        targets = self.api("targets")["activeTargets"]
        return len(targets) == 4 and all(t["health"] == "up" for t in targets)

    def value(self, query):
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def firing(self):
        return {(alert["labels"]["alertname"], alert["labels"].get("topic"),
                 alert["labels"].get("channel"))
                for alert in self.api("alerts")["alerts"] if alert["state"] == "firing"}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


@pytest.fixture
def prometheus(cluster, tmp_path):
    prometheus = Prometheus(cluster, tmp_path)
    yield prometheus
    prometheus.stop()


def test_prometheus_fires_the_backlog_alerts_when_a_channel_backs_up(cluster, prometheus):
    nsqd = cluster.nsqd[1]
    for action in ("/topic/create?topic=orders", "/channel/create?topic=orders&channel=billing"):
        assert nsqd.http("POST", action)[0] == 200
    depth = 'topic_channel:nsq_channel_depth:sum{topic="orders", channel="billing"}'
    wait_until(prometheus.targets_up, timeout=60, interval=0.2, message="every target up")
    wait_until(lambda: prometheus.value(depth) == 0, timeout=60, interval=0.2,
               message="Prometheus to record the empty channel")
    assert prometheus.firing() == set()

    status, _, body = nsqd.http("POST", "/mpub?topic=orders",
                                "\n".join(f"order #{i}" for i in range(1500)))
    assert status == 200, body
    expected = {("NSQChannelBacklogGrowing", "orders", "billing"),
                ("NSQChannelWithoutConsumers", "orders", "billing")}
    wait_until(lambda: prometheus.firing() >= expected, timeout=60, interval=0.2,
               message="the backlog alerts to fire")
    assert prometheus.firing() == expected
    assert prometheus.value(depth) == 1500

    assert nsqd.http("POST", "/channel/empty?topic=orders&channel=billing")[0] == 200
    wait_until(lambda: prometheus.firing() == set(), timeout=60, interval=0.2,
               message="the alerts to clear once the channel is emptied")


def test_dashboard_queries_run_in_prometheus(prometheus):
    for expr in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        prometheus.api("query", query=expr)
