"""Alerts and the dashboard: promtool checks and unit-tests the rendered rules, every query uses metric
names the processes export, and the committed dashboard JSON is what monitoring/dashboard.py generates.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import promql_parser
import pytest
import yaml
from aiohttp import web
from operator_helpers import (
    STATEFULSETS,
    WEBHOOKS,
    api_path,
    declare_resources,
    start_operator_process,
    start_token_site,
    stop_operator_process,
    write_kubeconfig,
)
from prometheus_client.parser import text_string_to_metric_families
from strict_api import StrictCluster
from test_chart import CHART, ROOT, objects

from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate
from hookline.sender.model.config import consumer_name
from hookline.sender.model.examples import example_event

PROMTOOL = ROOT / ".tools" / "bin" / "promtool"
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARD_JSON = CHART / "files" / "dashboards" / "hookline.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's own variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def rule_groups() -> list[dict[str, Any]]:
    (rule,) = objects("monitoring", "PrometheusRule")
    return rule["spec"]["groups"]


def alerts() -> list[dict[str, Any]]:
    return [r for group in rule_groups() for r in group["rules"] if "alert" in r]


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text())


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, and each variable's label_values(X, l)
    as the equivalent `count by (l) (X)`, which needs label l on X just the same."""
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            exprs.append(f"count by ({match.group(2)}) ({match.group(1)})")
    return exprs


def metric_labels(expr: str) -> dict[str, set[str]]:
    """Each metric an expression reads, with the labels it needs: its matchers' and the `by` labels
    of every aggregation around it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    needed: dict[str, set[str]] = {}
    grouping: list[list[str]] = []

    def enter(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            by = node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By
            grouping.append(list(node.modifier.labels) if by else [])
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            labels = {m.name for m in node.matchers.matchers} | {label for g in grouping for label in g}
            needed.setdefault(node.name, set()).update(labels)

    def leave(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            grouping.pop()

    promql_parser.walk(promql_parser.parse(expr), enter, leave)
    return needed


def metric_names(expr: str) -> set[str]:
    return set(metric_labels(expr))


def documented_metrics() -> set[str]:
    """Metric names in docs/internals.md (every process) and the runbook's operator metrics section."""
    runbook = RUNBOOK.read_text().partition("\n## Operator metrics\n")[2]
    text = (ROOT / "docs" / "internals.md").read_text() + runbook
    return set(re.findall(r"\bhookline_[a-z0-9_]+", text))


def base_name(name: str, known: set[str]) -> str:
    """hookline_x_seconds_bucket -> hookline_x_seconds when that histogram is known."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name


def queries() -> list[str]:
    return [a["expr"] for a in alerts()] + dashboard_queries(load_dashboard())


def used_metrics() -> set[str]:
    """Our own metric names used by the alerts and the dashboard (`up` comes from Prometheus itself)."""
    return {name for expr in queries() for name in metric_names(expr)} - {"up"}


def used_labels() -> dict[str, set[str]]:
    needed: dict[str, set[str]] = {}
    for expr in queries():
        for name, labels in metric_labels(expr).items():
            needed.setdefault(name, set()).update(labels)
    return needed


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- rules --------------------------------------------------------------------------------------


def test_promtool_accepts_the_rendered_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_explains_itself_and_links_its_runbook_section():
    headings = {
        github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")
    }
    names = {a["alert"] for a in alerts()}
    assert {
        "HooklineDeliveryFailureRatioHigh",
        "HooklineBacklogGrowing",
        "HooklineDeadLetters",
        "HooklineWebhookUnverified",
        "HooklineOperatorDown",
        "HooklineIngestDown",
    } <= names
    for alert in alerts():
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("docs/runbook.md")
        assert anchor == alert["alert"].lower()
        assert anchor in headings, f"docs/runbook.md has no section for {alert['alert']}"
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}


def unit_test_rules(tmp_path: Path) -> Path:
    """The rules for promtool's unit tests: annotations kept only where a test checks them."""
    groups = copy.deepcopy(rule_groups())
    for group in groups:
        for rule in group["rules"]:
            if rule["alert"] != "HooklineDeliveryFailureRatioHigh":
                rule.pop("annotations")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    """One input series of a promtool unit test, in its expanding notation (e.g. 0+6x60)."""
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{selector}}}", "values": values}


def alert_case(eval_time: str, name: str, *expected: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": eval_time, "alertname": name, "exp_alerts": [{"exp_labels": e} for e in expected]}


RUNBOOK_URL = "https://github.com/hookline/hookline/blob/main/docs/runbook.md"
SHOP_ORDERS = {"namespace": "shop", "webhook": "orders"}
ATTEMPTS = "hookline_delivery_attempts_total"
CONDITION = "hookline_webhook_condition"
ORDERS_CONDITION = {**SHOP_ORDERS, "database": "newsletter", "condition": "Verified"}
QUICK_CONDITION = {"namespace": "shop", "webhook": "quick", "database": "", "condition": "Verified"}

PROMTOOL_TESTS: list[dict[str, Any]] = [
    {  # Half of the attempts to one Webhook fail; its neighbour is healthy.
        "interval": "1m",
        "input_series": [
            series(ATTEMPTS, "0+6x60", namespace="shop", webhook="orders", outcome="success"),
            series(ATTEMPTS, "0+6x60", namespace="shop", webhook="orders", outcome="timeout"),
            series(ATTEMPTS, "0+6x60", namespace="shop", webhook="billing", outcome="success"),
            series(ATTEMPTS, "0x60", namespace="shop", webhook="billing", outcome="timeout"),
        ],
        "alert_rule_test": [
            alert_case("10m", "HooklineDeliveryFailureRatioHigh"),  # not yet: `for: 15m`
            {
                "eval_time": "30m",
                "alertname": "HooklineDeliveryFailureRatioHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {**SHOP_ORDERS, "severity": "warning"},
                        "exp_annotations": {
                            "summary": "Webhook shop/orders: 50% of delivery attempts fail",
                            "description": "Over the last 15 minutes 50% of the HTTP requests to this "
                            "Webhook's receiver failed (error status, timeout, connection error or blocked "
                            "address). Events are retried and end as dead letters after maxAttempts.",
                            "runbook_url": f"{RUNBOOK_URL}#hooklinedeliveryfailureratiohigh",
                        },
                    }
                ],
            },
        ],
    },
    {  # One backlog grows for an hour; another is large but steady.
        "interval": "1m",
        "input_series": [
            series("hookline_pending_events", "1000+50x120", namespace="shop", webhook="orders", pod="a"),
            series("hookline_pending_events", "5000x120", namespace="shop", webhook="steady", pod="b"),
        ],
        "alert_rule_test": [
            alert_case("20m", "HooklineBacklogGrowing"),
            alert_case("60m", "HooklineBacklogGrowing", {**SHOP_ORDERS, "severity": "warning"}),
        ],
    },
    {  # Three events are given up after 10 minutes; the alert clears once no more follow.
        "interval": "1m",
        "input_series": [
            series("hookline_dead_letters_total", "0x10 3x40", **SHOP_ORDERS, reason="max_attempts"),
        ],
        "alert_rule_test": [
            alert_case("5m", "HooklineDeadLetters"),
            alert_case(
                "15m", "HooklineDeadLetters", {**SHOP_ORDERS, "reason": "max_attempts", "severity": "warning"}
            ),
            alert_case("40m", "HooklineDeadLetters"),
        ],
    },
    {  # NATS refuses the dead letters of "orders" for 5 minutes; "billing" stores its own.
        "interval": "1m",
        "input_series": [
            series("hookline_dead_letter_failures_total", "0x5 1 2 3 4 5x30", **SHOP_ORDERS),
            series("hookline_dead_letter_failures_total", "0x35", namespace="shop", webhook="billing"),
        ],
        "alert_rule_test": [
            alert_case("4m", "HooklineDeadLetterFailures"),
            alert_case("8m", "HooklineDeadLetterFailures", {**SHOP_ORDERS, "severity": "warning"}),
            alert_case("25m", "HooklineDeadLetterFailures"),  # stored again: clears after 10 minutes
        ],
    },
    {  # Replica 1 of pool "bulk" stops reporting; replica 0 keeps reporting; "vip" is scaled to 0.
        "interval": "1m",
        "input_series": [
            series("hookline_pool_replica_reporting", "1x30", pool="bulk", replica="0", pod="op-a"),
            series("hookline_pool_replica_reporting", "1x5 0x25", pool="bulk", replica="1", pod="op-a"),
            series("hookline_pool_replica_reporting", "1x30", pool="vip", replica="0", pod="op-a"),
        ],
        "alert_rule_test": [
            alert_case("8m", "HooklinePoolReplicaNotReporting"),  # not yet: `for: 5m`
            alert_case(
                "15m",
                "HooklinePoolReplicaNotReporting",
                {"pool": "bulk", "replica": "1", "severity": "warning"},
            ),
        ],
    },
    {  # A receiver said 410 Gone.
        "interval": "1m",
        "input_series": [
            series("hookline_webhook_gone", "0x5 1x20", namespace="shop", webhook="orders"),
            series("hookline_webhook_gone", "0x25", namespace="shop", webhook="billing"),
        ],
        "alert_rule_test": [
            alert_case("3m", "HooklineWebhookGone"),
            alert_case("10m", "HooklineWebhookGone", {**SHOP_ORDERS, "severity": "warning"}),
        ],
    },
    {  # The consumer of "orders" is deleted: lost for 2 minutes, then recreated by its sender.
        "interval": "1m",
        "input_series": [
            series("hookline_consumer_lost", "0x5 1x2 0x30", namespace="shop", webhook="orders"),
            series("hookline_consumer_recreated_total", "0x7 1x30", namespace="shop", webhook="orders"),
            series("hookline_consumer_lost", "0x37", namespace="shop", webhook="billing"),
            series("hookline_consumer_recreated_total", "0x37", namespace="shop", webhook="billing"),
        ],
        "alert_rule_test": [
            alert_case("3m", "HooklineConsumerLost"),
            alert_case("6m", "HooklineConsumerLost", {**SHOP_ORDERS, "severity": "warning"}),
            alert_case("12m", "HooklineConsumerLost", {**SHOP_ORDERS, "severity": "warning"}),
            alert_case("30m", "HooklineConsumerLost"),
        ],
    },
    {  # The recreated consumer of "orders" was owed 150 events the recovery window no longer held.
        "interval": "1m",
        "input_series": [
            series("hookline_events_lost_total", "0x5 150x30", reason="window_passed", **SHOP_ORDERS),
            series(
                "hookline_events_lost_total",
                "0x35",
                reason="window_passed",
                namespace="shop",
                webhook="billing",
            ),
        ],
        "alert_rule_test": [
            alert_case("4m", "HooklineEventsLost"),
            alert_case("8m", "HooklineEventsLost", {**SHOP_ORDERS, "severity": "critical"}),
            alert_case("25m", "HooklineEventsLost"),  # nothing lost since: clears after 10 minutes
        ],
    },
    {  # The event stream fills up for 10 minutes.
        "interval": "1m",
        "input_series": [
            series("hookline_ingest_store_refusing", "0x5 1x10 0x10", namespace="hookline", pod="ingest-a"),
        ],
        "alert_rule_test": [
            alert_case("6m", "HooklineIngestStoreFull"),
            alert_case("10m", "HooklineIngestStoreFull", {"namespace": "hookline", "severity": "critical"}),
            alert_case("24m", "HooklineIngestStoreFull"),
        ],
    },
    {  # A proof's re-checks fail for 20 minutes (in its grace), then it lapses for 10; then it is back.
        "interval": "1m",
        "input_series": [
            series("hookline_ownership_in_grace", "0x5 1x20 0x30", kind="Webhook", pod="operator-a"),
            series("hookline_ownership_lapsed", "0x25 1x10 0x20", kind="Webhook", pod="operator-a"),
            series("hookline_ownership_in_grace", "0x55", kind="WebhookDomain", pod="operator-a"),
        ],
        "alert_rule_test": [
            alert_case("15m", "HooklineOwnershipRecheckFailing"),  # not yet: `for: 15m`
            alert_case("22m", "HooklineOwnershipRecheckFailing", {"kind": "Webhook", "severity": "warning"}),
            alert_case("24m", "HooklineOwnershipLapsed"),
            alert_case("27m", "HooklineOwnershipLapsed", {"kind": "Webhook", "severity": "critical"}),
            alert_case("40m", "HooklineOwnershipRecheckFailing"),
            alert_case("40m", "HooklineOwnershipLapsed"),  # the proof is back: paused no more
        ],
    },
    {  # "orders" stays unverified (Unknown at first, then False); "quick" is verified after 30 minutes.
        "interval": "1m",
        "input_series": [
            series(CONDITION, "1x2", **ORDERS_CONDITION, status="Unknown"),
            series(CONDITION, "_x2 1x180", **ORDERS_CONDITION, status="False"),
            series(CONDITION, "1x30", **QUICK_CONDITION, status="False"),
            series(CONDITION, "_x30 1x150", **QUICK_CONDITION, status="True"),
        ],
        "alert_rule_test": [
            alert_case("50m", "HooklineWebhookUnverified"),  # not yet: `for: 1h`
            alert_case(
                "2h",
                "HooklineWebhookUnverified",
                {**SHOP_ORDERS, "database": "newsletter", "severity": "info"},
            ),
        ],
    },
    {  # The operator stops answering scrapes; ingest is never scraped at all.
        "interval": "1m",
        "input_series": [
            series("up", "1x5 0x20", job="hk-hookline-operator-metrics", namespace="hookline"),
            series("up", "1x25", job="hk-hookline-operator-metrics", namespace="elsewhere"),
        ],
        "alert_rule_test": [
            alert_case("4m", "HooklineOperatorDown"),
            alert_case("15m", "HooklineOperatorDown", {"severity": "critical"}),
            alert_case("15m", "HooklineIngestDown", {"severity": "critical"}),
        ],
    },
    {  # Ingest answers 503: NATS is unavailable.
        "interval": "1m",
        "input_series": [
            series("hookline_ingest_requests_total", "0x5 0+10x20", namespace="hookline", code="503"),
            series("hookline_ingest_requests_total", "0+100x25", namespace="hookline", code="202"),
        ],
        "alert_rule_test": [
            alert_case("5m", "HooklineIngestBusUnavailable"),
            alert_case(
                "20m", "HooklineIngestBusUnavailable", {"namespace": "hookline", "severity": "critical"}
            ),
        ],
    },
]


def test_alerts_fire_on_trouble_and_stay_quiet_otherwise(tmp_path):
    rules = unit_test_rules(tmp_path)
    spec = tmp_path / "tests.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": PROMTOOL_TESTS})
    )
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- metric names -------------------------------------------------------------------------------


def test_alerts_and_dashboard_use_only_documented_metrics():
    documented = documented_metrics()
    used = {base_name(name, documented) for name in used_metrics()}
    assert used, "no metric found in alerts and dashboard"
    assert used <= documented, f"not documented: {sorted(used - documented)}"


# --- dashboard ----------------------------------------------------------------------------------


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("hookline_dashboard", ROOT / "monitoring" / "dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_what_the_generator_produces():
    assert DASHBOARD_JSON.read_text() == generator().render(), (
        "run .venv/bin/python monitoring/dashboard.py and commit the JSON"
    )


def test_dashboard_shows_what_an_sre_needs():
    board = load_dashboard()
    titles = {p["title"] for p in board["panels"]}
    for wanted in (
        "Deliveries/s by Webhook and outcome",
        "Request latency p50 / p99",
        "Backlog (pending events)",
        "Dead letters by reason",
        "Verification state",
    ):
        assert wanted in titles
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "database", "webhook"} <= set(variables)
    assert variables["webhook"]["includeAll"] and "$database" in variables["webhook"]["query"]["query"]
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            expr = target["expr"]
            if any(
                name.startswith(("hookline_deliver", "hookline_pending", "hookline_dead"))
                for name in metric_names(expr)
            ):
                assert 'namespace=~"$namespace"' in expr and 'webhook=~"$webhook"' in expr, expr
    latency = next(p for p in board["panels"] if p["title"] == "Request latency p50 / p99")
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
    ]


# --- real scrapes ---------------------------------------------------------------------------------

HOOKLINE = Path(sys.executable).with_name("hookline")
# Labels Prometheus adds to every series from the scrape target (the chart's monitors set them).
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "container", "endpoint"}


async def wait_for(check: Callable[[], Any], what: str, within: float = 90.0) -> None:
    """Poll an async or plain check until it returns true; generous for a loaded 2-core machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within:g}s")
        await asyncio.sleep(0.2)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


class Process:
    """A real `hookline ...` process whose output lands in a log file shown on failure."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self.args = args
        with log.open("wb") as out:
            self.proc = subprocess.Popen([str(HOOKLINE), *args], stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return tail(self.log)

    async def ready(self, http: aiohttp.ClientSession, url: str) -> None:
        async def check() -> bool:
            assert self.proc.poll() is None, f"hookline {self.args[0]} exited:\n{self.output()}"
            try:
                async with http.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(check, f"hookline {self.args[0]} ready at {url}")

    def stop(self) -> None:
        terminate(self.proc, timeout=20)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A customer's endpoint on loopback that records what it receives."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks/receive", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hooks/receive", received
    await runner.cleanup()


def scraped_labels(text: str) -> dict[str, set[str]]:
    """Each sample name served, with the label names its samples carry."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def operator_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def operator_has_worked(text: str) -> bool:
    """The scrape of an operator that has verified the test's Webhook and reconciled it: a check
    counted, a reconcile timed, and the Webhook's conditions exported."""
    samples = operator_samples(text)
    checks = sum(v for n, _, v in samples if n == "hookline_verification_checks_total")
    reconciles = sum(v for n, _, v in samples if n == "hookline_reconcile_duration_seconds_count")
    verified = any(
        n == "hookline_webhook_condition"
        and labels.get("webhook") == "orders"
        and labels.get("condition") == "Verified"
        and labels.get("status") == "True"
        and v == 1
        for n, labels, v in samples
    )
    return checks > 0 and reconciles > 0 and verified


NAMESPACE_OF_POOLS = "hookline"
POOL_STATEFULSET = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {
        "name": "hookline-pool-default",
        "labels": {
            "app.kubernetes.io/name": "hookline",
            "app.kubernetes.io/component": "sender-pool",
            "hookline.io/pool": "default",
        },
    },
    "spec": {"replicas": 1, "serviceName": "hookline-pool-default"},
}


@pytest.fixture
async def operator_process(
    nats_server: EmbeddedNats, tmp_path: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """A real `hookline operator` process against the strict API emulator (kubeconfig; the chart's RBAC),
    with one Webhook whose loopback site serves its ownership file; yields the process, its log and its
    metrics port. Fails at teardown if the API refused the operator or pruned a field it wrote."""
    async with StrictCluster() as cluster, kmock.Server(cluster):
        declare_resources(cluster)
        runner, base, _ = await start_token_site()
        metrics_port, health_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", cluster)),
            "HOOKLINE_NATS_URL": nats_server.url,
            "HOOKLINE_SENDER_IMAGE": "ghcr.io/hookline/hookline:test",
        }
        log_path = tmp_path / "operator.log"
        proc, log = start_operator_process(env, log_path, health_port=health_port, metrics_port=metrics_port)
        try:
            body = {
                "apiVersion": "hookline.io/v1alpha1",
                "kind": "Webhook",
                "metadata": {"name": "orders", "namespace": "shop"},
                "spec": {"url": f"{base}/hooks/orders", "events": ["click"], "database": "newsletter"},
            }
            await cluster.call("POST", api_path(WEBHOOKS, "shop"), body)
            # A sender pool of one replica that never reports: the operator exports it as such.
            await cluster.call("POST", api_path(STATEFULSETS, NAMESPACE_OF_POOLS), POOL_STATEFULSET)
            yield proc, log_path, metrics_port
        finally:
            stop_operator_process(proc, log)
            await runner.cleanup()
        faults = cluster.operator_faults()
        assert not faults, "the API refused the operator or pruned its fields:\n" + "\n".join(faults)


@pytest.mark.slow
async def test_metrics_exist_in_real_scrapes(nats_server: EmbeddedNats, receiver, operator_process, tmp_path):
    """Every metric the alerts and the dashboard query is served by a real process's /metrics."""
    url, received = receiver
    operator, operator_log, operator_port = operator_process
    ingest_port, sender_port = free_port(), free_port()
    config = tmp_path / "sender.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhook": {"namespace": "shop", "name": "orders"},
                "spec": {"url": url, "events": ["click"], "format": "json"},
                "nats": {"url": nats_server.url, "consumer": consumer_name("shop", "orders")},
                "listen": f"127.0.0.1:{sender_port}",
                "allowNetworks": ["127.0.0.0/8"],
                "allowHttp": True,
            }
        )
    )
    ingest = Process(
        tmp_path / "ingest.log",
        "ingest",
        "--listen",
        f"127.0.0.1:{ingest_port}",
        "--nats-url",
        nats_server.url,
        "--insecure-no-auth",
    )
    sender = Process(tmp_path / "sender.log", "sender", "--config", str(config))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await ingest.ready(http, f"http://127.0.0.1:{ingest_port}/readyz")
            await sender.ready(http, f"http://127.0.0.1:{sender_port}/readyz")
            # One event end to end, so the scrapes come from processes doing their work.
            async with http.post(
                f"http://127.0.0.1:{ingest_port}/v1/events", json=example_event("click")
            ) as r:
                assert r.status == 202, await r.text()
            await wait_for(lambda: received, f"delivery to the receiver\n{sender.output()}")
            operator_metrics = f"http://127.0.0.1:{operator_port}/metrics"

            async def operator_done() -> bool:
                assert operator.poll() is None, f"hookline operator exited:\n{tail(operator_log)}"
                try:
                    async with http.get(operator_metrics) as response:
                        return response.status == 200 and operator_has_worked(await response.text())
                except aiohttp.ClientError:
                    return False

            try:
                await wait_for(operator_done, "the operator's scrape showing its Webhook verified", 120)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{tail(operator_log)}") from None
            scraped: dict[str, dict[str, set[str]]] = {}
            for name, port in (("ingest", ingest_port), ("sender", sender_port), ("operator", operator_port)):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    scraped[name] = scraped_labels(await response.text())
    finally:
        sender.stop()
        ingest.stop()
    served = {name: labels for process in scraped.values() for name, labels in process.items()}
    missing = used_metrics() - set(served)
    assert not missing, f"queried by alerts or dashboard but served by no process: {sorted(missing)}"
    for name, labels in used_labels().items():
        if name in served:
            absent = labels - served[name] - TARGET_LABELS
            assert not absent, f"{name} is queried by {sorted(absent)} but served without them"
    # The sender's series name their Webhook and its database, which the dashboard filters on.
    assert {"webhook", "database"} <= scraped["sender"]["hookline_deliveries_total"]
