"""Generates the hookline Grafana dashboard into the Helm chart.

Run `.venv/bin/python monitoring/dashboard.py` after editing; it rewrites
charts/hookline/files/dashboards/hookline.json (the chart ships that file in a ConfigMap for the Grafana
sidecar, and tests/integration/test_monitoring.py checks that the committed JSON is what this script
produces).
Metric names come from docs/internals.md; queries must not use any other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = (
    Path(__file__).resolve().parent.parent / "charts" / "hookline" / "files" / "dashboards" / "hookline.json"
)
UID = "hookline-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Sender series of the chosen Webhooks. The webhook variable's "All" expands to the Webhooks listed for
# the chosen namespace and database, so filtering on it also filters by database.
SENDER = 'namespace=~"$namespace", webhook=~"$webhook"'
# The operator's series: every Webhook, verified or not, with its spec.database as a label.
WEBHOOKS = 'namespace=~"$namespace", database=~"$database"'


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def quantiles(metric: str, *, per_webhook: bool) -> list[prometheus.Dataquery]:
    """p50 and p99 of a histogram, per Webhook (sender metrics) or overall (operator, ingest)."""
    selector, by, legend = (f"{{{SENDER}}}", "le, namespace, webhook", " {{namespace}}/{{webhook}}")
    if not per_webhook:
        selector, by, legend = "", "le", ""
    return [
        query(
            f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{selector}[$__rate_interval])))",
            f"p{name}{legend}",
            ref_id,
        )
        for q, name, ref_id in ((0.5, "50", "A"), (0.99, "99", "B"))
    ]


def webhook_table(title: str, description: str, expr: str, detail: str) -> table.Panel:
    """A full-width table of one instant query: a row per Webhook, then the ``detail`` label."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(query(expr, "").instant().format(PromQueryFormat.TABLE))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True, "__name__": True},
                    "indexByName": {"namespace": 0, "webhook": 1, "database": 2, detail: 3},
                },
            )
        )
    )


def series(title: str, description: str, unit: str, targets: list[prometheus.Dataquery]) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(12)
        .height(8)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builder.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE).show_legend(True)
        )
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def label_variable(name: str, label: str, expr: str, *, all_value: str | None) -> dashboard.QueryVariable:
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": f"label_values({expr}, {name})", "refId": f"{name}-variable"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
    )
    return variable.all_value(all_value) if all_value is not None else variable


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard("hookline")
        .uid(UID)
        .description("Webhook deliveries, backlog, dead letters and verification of hookline")
        .tags(["hookline", "webhooks"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(label_variable("namespace", "Namespace", "hookline_webhooks", all_value=".*"))
        .with_variable(
            label_variable(
                "database", "Database", 'hookline_webhooks{namespace=~"$namespace"}', all_value=".*"
            )
        )
        .with_variable(
            label_variable("webhook", "Webhook", f"hookline_webhook_condition{{{WEBHOOKS}}}", all_value=None)
        )
        .with_row(dashboard.Row("Deliveries"))
        .with_panel(
            series(
                "Deliveries/s by Webhook and outcome",
                "Events whose delivery ended: delivered (2xx) or dead_lettered (given up).",
                "ops",
                [
                    query(
                        "sum by (namespace, webhook, outcome) "
                        f"(rate(hookline_deliveries_total{{{SENDER}}}[$__rate_interval]))",
                        "{{namespace}}/{{webhook}} {{outcome}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Delivery attempts/s by outcome",
                "Every HTTP request to a receiver, including retries.",
                "reqps",
                [
                    query(
                        "sum by (outcome) "
                        f"(rate(hookline_delivery_attempts_total{{{SENDER}}}[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Request latency p50 / p99",
                "Time each delivery request took, per Webhook.",
                "s",
                quantiles("hookline_delivery_duration_seconds", per_webhook=True),
            )
        )
        .with_panel(
            series(
                "End-to-end latency p50 / p99",
                "From the event's arrival at ingest to its successful delivery (includes retries).",
                "s",
                quantiles("hookline_end_to_end_latency_seconds", per_webhook=True),
            )
        )
        .with_row(dashboard.Row("Backlog and dead letters"))
        .with_panel(
            series(
                "Backlog (pending events)",
                "Events waiting for each Webhook: not yet delivered or waiting for a retry.",
                "short",
                [
                    query(
                        f"max by (namespace, webhook) (hookline_pending_events{{{SENDER}}})",
                        "{{namespace}}/{{webhook}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Dead letters by reason",
                "Events given up and moved to the dead-letter stream (max_attempts, max_age, gone).",
                "short",
                [
                    query(
                        "sum by (namespace, webhook, reason) "
                        f"(increase(hookline_dead_letters_total{{{SENDER}}}[$__rate_interval]))",
                        "{{namespace}}/{{webhook}} {{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Requests in flight",
                "Concurrent delivery requests per Webhook (capped by spec.delivery.maxInFlight).",
                "short",
                [
                    query(
                        f"sum by (namespace, webhook) (hookline_in_flight_requests{{{SENDER}}})",
                        "{{namespace}}/{{webhook}}",
                    )
                ],
            )
        )
        .with_panel(
            stat.Panel()
            .title("Receivers gone (410)")
            .description("Webhooks whose receiver answered 410 Gone; hookline stopped delivering to them.")
            .datasource(DATASOURCE)
            .span(12)
            .height(8)
            .with_target(query(f"sum(hookline_webhook_gone{{{SENDER}}}) or vector(0)", "gone").instant())
        )
        .with_row(dashboard.Row("Webhooks and operator"))
        .with_panel(
            stat.Panel()
            .title("Verification state")
            .description("Webhooks by condition and status, from the operator.")
            .datasource(DATASOURCE)
            .span(12)
            .height(8)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .color_mode(common.BigValueColorMode.NONE)
            .with_target(
                query(
                    f"sum by (condition, status) (hookline_webhooks{{{WEBHOOKS}}})",
                    "{{condition}}={{status}}",
                ).instant()
            )
        )
        .with_panel(
            webhook_table(
                "Webhooks needing attention",
                "Each Webhook with a condition that is not True: Verified (ownership file), Ready (sender"
                " pods) or Delivering (False after a 410 Gone). Why, and what to do:"
                " `kubectl -n NAMESPACE describe wh WEBHOOK` (conditions and events).",
                f'hookline_webhook_condition{{{WEBHOOKS}, webhook=~"$webhook", status!="True"}}',
                "condition",
            )
        )
        .with_panel(
            webhook_table(
                "Failing Webhooks",
                "Each Webhook whose deliveries are not fine, with the reason of its Delivering condition:"
                " Failing (most recent attempts fail), Backlogged (pending grows), ReceiverGone (410),"
                " Disabled (circuit breaker), ConsumerMissing, Paused. The receiver's last answer:"
                " `kubectl -n NAMESPACE get wh WEBHOOK -o jsonpath='{.status.delivery.lastFailure}'`;"
                " every attempt: `hookline attempts WEBHOOK -n NAMESPACE --failed`.",
                f"hookline_webhook_delivering_reason{{{WEBHOOKS}, "
                'webhook=~"$webhook", reason!~"Delivering|Unknown"}',
                "reason",
            )
        )
        .with_panel(
            series(
                "Verification checks by result",
                "Ownership file checks: FileMatched, FileNotFound, ContentMismatch, Unreachable, Blocked.",
                "ops",
                [
                    query(
                        "sum by (reason) (rate(hookline_verification_checks_total[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Reconcile duration p50 / p99",
                "Time the operator takes to handle one Webhook change.",
                "s",
                quantiles("hookline_reconcile_duration_seconds", per_webhook=False),
            )
        )
        .with_row(dashboard.Row("Ingest"))
        .with_panel(
            series(
                "Ingest events/s by outcome",
                "Events producers posted: accepted, duplicate (same id again) or rejected (invalid).",
                "ops",
                [
                    query(
                        "sum by (outcome) (rate(hookline_ingest_events_total[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Ingest requests/s by status code",
                "503 means NATS is unavailable and producers must retry.",
                "reqps",
                [
                    query(
                        "sum by (code) (rate(hookline_ingest_requests_total[$__rate_interval]))",
                        "{{code}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Publish latency p50 / p99",
                "Time to publish one request's events to JetStream and get every acknowledgement.",
                "s",
                quantiles("hookline_ingest_publish_duration_seconds", per_webhook=False),
            )
        )
    )
    model = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # Sidecar-provisioned dashboards are matched by uid; a fixed id would clash with other dashboards.
    model.pop("id", None)
    # Stable panel ids keep links to single panels (viewPanel=N) working across regenerations.
    for number, panel in enumerate(model["panels"], start=1):
        panel["id"] = number
    return model


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
