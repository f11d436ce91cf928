"""The operator's pure decisions, without any API server."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hookline.api import CONDITION_ORDER as CONDITION_TYPES
from hookline.api import parse_webhook_spec
from hookline.operator.metrics import OperatorMetrics
from hookline.operator.rules import delivery, desired, verification
from hookline.operator.rules.status import (
    Condition,
    merge_conditions,
    ready_condition,
    transitions,
)
from hookline.operator.rules.webhooktest import build_event, outcome_of_response, refusal
from hookline.operator.settings import (
    FINALIZER,
    OperatorConfig,
    VerificationSchedule,
    config_from_env,
    kopf_settings,
)
from hookline.sender.model.outcomes import GoneState
from hookline.sender.transport.ownership import OwnershipResult

URL = "https://shop.example.com/hooks/copernica.php"
OWNER = {
    "apiVersion": "hookline.io/v1alpha1",
    "kind": "Webhook",
    "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
}


def spec(**fields):
    return parse_webhook_spec({"url": URL, "events": ["open"], **fields})


# --- conditions ------------------------------------------------------------------------------------------


def test_transition_time_is_kept_while_the_status_stays():
    first = merge_conditions(
        [], [Condition("Verified", "False", "FileNotFound", "a")], generation=1, now="T1"
    )
    again = merge_conditions(
        first, [Condition("Verified", "False", "Unreachable", "b")], generation=2, now="T2"
    )
    assert again[0]["lastTransitionTime"] == "T1"
    assert (again[0]["reason"], again[0]["message"], again[0]["observedGeneration"]) == (
        "Unreachable",
        "b",
        2,
    )
    flipped = merge_conditions(
        again, [Condition("Verified", "True", "FileMatched", "c")], generation=2, now="T3"
    )
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_conditions_keep_their_order_and_others_untouched():
    current = merge_conditions([], [Condition("Ready", "False", "NotVerified", "x")], generation=1, now="T1")
    result = merge_conditions(
        current, [Condition("Verified", "True", "FileMatched", "y")], generation=1, now="T2"
    )
    assert [c["type"] for c in result] == ["Verified", "Ready"]
    assert result[1] == current[0]


def test_only_changed_conditions_are_announced():
    before = merge_conditions(
        [], [Condition("Verified", "False", "FileNotFound", "a")], generation=1, now="T"
    )
    same = merge_conditions(
        before, [Condition("Verified", "False", "FileNotFound", "b")], generation=1, now="T"
    )
    assert transitions(before, same) == []
    changed = merge_conditions(
        before, [Condition("Verified", "True", "FileMatched", "c")], generation=1, now="T"
    )
    assert [c["reason"] for c in transitions(before, changed)] == ["FileMatched"]


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"verified": False, "paused": False, "desired_replicas": 1, "sender": None}, "False", "NotVerified"),
        ({"verified": True, "paused": True, "desired_replicas": 1, "sender": None}, "False", "Paused"),
        ({"verified": True, "paused": False, "desired_replicas": 0, "sender": None}, "False", "Paused"),
        ({"verified": True, "paused": False, "desired_replicas": 1, "sender": {}}, "False", "SenderPending"),
        (
            {"verified": True, "paused": False, "desired_replicas": 2, "sender": {"deployment": "d"}},
            "False",
            "SenderUnavailable",
        ),
        (
            {
                "verified": True,
                "paused": False,
                "desired_replicas": 2,
                "sender": {"deployment": "d", "availableReplicas": 2},
            },
            "True",
            "SenderAvailable",
        ),
    ],
)
def test_ready_follows_verification_pause_and_availability(kwargs, status, reason):
    condition = ready_condition(**kwargs)
    assert (condition.status, condition.reason) == (status, reason)
    assert condition.message


# --- verification ----------------------------------------------------------------------------------------


def test_token_is_made_once_and_kept():
    token, new = verification.ensure_token({}, lambda: "a" * 32)
    assert (token, new) == ("a" * 32, True)
    status = {"verification": verification.instructions(token, URL)}
    assert verification.ensure_token(status, lambda: "b" * 32) == ("a" * 32, False)


def test_instructions_point_at_script_directory_then_root():
    info = verification.instructions("c" * 32, URL)
    assert info["fileName"] == f"hookline-{'c' * 32}.txt"
    assert info["locations"] == [
        f"https://shop.example.com/hooks/{info['fileName']}",
        f"https://shop.example.com/{info['fileName']}",
    ]


def test_check_delays_grow_from_seconds_to_minutes():
    schedule = VerificationSchedule(first_delay=5, factor=2, max_delay=300)
    delays = [verification.check_delay(n, schedule) for n in range(1, 10)]
    assert delays[0] == 5 and delays == sorted(delays) and delays[-1] == 300


def test_verified_only_for_the_url_that_was_checked():
    result = OwnershipResult("FileMatched", "https://shop.example.com/x.txt", "ok")
    fields = verification.result_fields(result, url=URL, now="T", checks=1, next_check_at=None)
    status = {"verification": fields}
    assert verification.is_verified_for(status, URL)
    assert not verification.is_verified_for(status, "https://shop.example.com/v2/hook.php")
    assert verification.checks_so_far(status, "https://shop.example.com/v2/hook.php") == 0


def test_failed_check_message_tells_when_the_next_check_is():
    result = OwnershipResult("FileNotFound", None, "verification file not found")
    condition = verification.verified_condition(result, 120)
    assert (condition.status, condition.reason) == ("False", "FileNotFound")
    assert condition.message.endswith("Next check in 2 min")


# --- desired objects -------------------------------------------------------------------------------------


def test_paused_webhook_gets_zero_replicas_but_keeps_its_rate_split():
    config = OperatorConfig()
    paused = spec(paused=True, sender={"replicas": 3})
    deployment = desired.deployment(OWNER, paused, "h", config)
    assert deployment["spec"]["replicas"] == 0
    assert desired.sender_config("shop", "orders", paused, config).replicas == 3


def test_config_hash_changes_with_the_spec():
    config = OperatorConfig()
    one = desired.render_config(desired.sender_config("shop", "orders", spec(), config))
    two = desired.render_config(desired.sender_config("shop", "orders", spec(format="json"), config))
    assert desired.config_hash(one) != desired.config_hash(two)
    assert desired.config_hash(one) == desired.config_hash(one)


def test_sender_without_signing_mounts_no_secret_and_no_token():
    pod = desired.deployment(OWNER, spec(), "h", OperatorConfig())["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]
    assert pod["automountServiceAccountToken"] is False


def test_scope_labels_follow_the_spec():
    assert desired.labels_patch({}, spec(database="newsletter")) == {"hookline.io/database": "newsletter"}
    current = {"hookline.io/database": "newsletter", "hookline.io/collection": "orders"}
    assert desired.labels_patch(current, spec()) == {
        "hookline.io/database": None,
        "hookline.io/collection": None,
    }
    assert desired.labels_patch(current, spec(database="newsletter", collection="orders")) == {}


def test_differs_ignores_fields_the_api_server_adds():
    want = {"spec": {"replicas": 1, "template": {"containers": [{"name": "sender"}]}}}
    have = {"spec": {"replicas": 1, "template": {"containers": [{"name": "sender", "tty": False}]}}}
    assert not desired.differs(want, have)
    assert desired.differs({"spec": {"replicas": 2}}, have)


# --- WebhookTest decisions -------------------------------------------------------------------------------


def test_a_field_the_operator_stops_setting_changes_the_desired_hash():
    before = desired.deployment(OWNER, spec(), "h", OperatorConfig(sender_service_account="sender"))
    after = desired.deployment(OWNER, spec(), "h", OperatorConfig())
    annotation = desired.DESIRED_HASH_ANNOTATION
    assert before["metadata"]["annotations"][annotation] != after["metadata"]["annotations"][annotation]
    # What the API server holds from before still contains all of the new spec...
    assert not desired.differs(after["spec"], before["spec"])
    # ...so only the hash tells that the object must change.
    assert desired.differs(after, before)
    assert desired.deployment(OWNER, spec(), "h", OperatorConfig()) == after  # stable


def test_replacement_is_exactly_the_desired_spec_under_the_current_metadata():
    want = desired.deployment(OWNER, spec(), "h", OperatorConfig())
    have = desired.deployment(
        OWNER, spec(signing={"secretRef": {"name": "s", "key": "k"}}), "h", OperatorConfig()
    )
    have["metadata"].update(
        resourceVersion="41",
        uid="d-1",
        managedFields=[{"manager": "kube-controller-manager"}],
        annotations={**have["metadata"]["annotations"], "deployment.kubernetes.io/revision": "3"},
        labels={**have["metadata"]["labels"], "team": "crm"},
    )
    have["status"] = {"availableReplicas": 1}
    put = desired.replacement(want, have)
    assert put["spec"] == want["spec"]  # the signing volume is gone, nothing merged in
    assert "status" not in put
    meta = put["metadata"]
    assert (meta["resourceVersion"], meta["uid"]) == ("41", "d-1")  # a change meanwhile is a Conflict
    assert "managedFields" not in meta
    assert meta["annotations"]["deployment.kubernetes.io/revision"] == "3"
    annotation = desired.DESIRED_HASH_ANNOTATION
    assert meta["annotations"][annotation] == want["metadata"]["annotations"][annotation]
    assert meta["labels"] == {**want["metadata"]["labels"], "team": "crm"}
    assert meta["ownerReferences"] == want["metadata"]["ownerReferences"]


GONE = GoneState().mark(1_700_000_000.0, "evt-1", URL)


def test_a_410_stop_is_lifted_on_a_new_annotation_value_or_a_new_url_only():
    assert delivery.resume_reason(GoneState(), URL, "1", None) is None  # nothing to lift
    assert delivery.resume_reason(GONE, URL, None, None) is None
    assert delivery.resume_reason(GONE, URL, "1", "1") is None  # that request was handled before
    assert "annotation hookline.io/resume-delivery=2" in delivery.resume_reason(GONE, URL, "2", "1")
    moved = delivery.resume_reason(GONE, "https://shop.example.com/v2/hook.php", None, None)
    assert moved and "spec.url changed" in moved


def test_delivery_status_records_the_stop_and_every_resume():
    stopped = delivery.delivery_status({}, GONE, request=None, resumed=None, now="T1")
    assert stopped == {"gone": True, "goneSince": "2023-11-14T22:13:20Z"}
    mine = delivery.delivery_status(stopped, GoneState(), request="1", resumed="resumed on request", now="T2")
    assert mine == {
        "gone": False,
        "resumeHandled": "1",
        "resumedAt": "T2",
        "resumeReason": "resumed on request",
    }
    # Lifted by `hookline redrive --resume`, not by the operator.
    theirs = delivery.delivery_status(stopped, GoneState(), request=None, resumed=None, now="T3")
    assert theirs["resumedAt"] == "T3" and "hookline redrive --resume" in theirs["resumeReason"]
    assert delivery.delivery_status(mine, GoneState(), request="1", resumed=None, now="T4") == mine


def test_delivering_condition_says_how_to_resume():
    stopped = delivery.delivering_condition({"gone": True, "goneSince": "T1"}, "shop", "orders")
    assert (stopped.type, stopped.status, stopped.reason) == ("Delivering", "False", "ReceiverGone")
    assert "kubectl -n shop annotate wh orders hookline.io/resume-delivery=" in stopped.message
    assert "hookline redrive orders -n shop --resume" in stopped.message and "T1" in stopped.message
    running = delivery.delivering_condition({"gone": False}, "shop", "orders")
    assert (running.status, running.reason) == ("True", "Delivering")


def test_test_event_takes_user_fields_over_a_sample():
    event, filled = build_event("click", {"recipient": "a@b.example", "original": "https://x.example/"})
    assert event.payload["recipient"] == "a@b.example" and "ip" in filled
    assert len(event.id) >= 16


def test_response_outcome_keeps_the_first_kib():
    outcome = outcome_of_response(503, 0.0412, b"y" * 3000, sent_at="T", event_id="e", signed=False)
    assert outcome.status["response"] == {"statusCode": 503, "durationMs": 41, "body": "y" * 1024}
    assert not outcome.succeeded and outcome.status["reason"] == "HTTPError"


def test_refusal_of_missing_and_unverified_webhooks():
    assert refusal(None, "x").status["reason"] == "WebhookNotFound"
    unverified = {"spec": {"url": URL}, "status": {"conditions": [{"type": "Verified", "status": "False"}]}}
    assert refusal(unverified, "x").status["reason"] == "NotVerified"


# --- settings and metrics --------------------------------------------------------------------------------


def test_config_from_env_reads_the_chart_variables():
    env = {
        "HOOKLINE_NATS_URL": "nats://nats:4222",
        "HOOKLINE_SENDER_IMAGE": "img:1",
        "HOOKLINE_ALLOW_NETWORKS": "10.0.0.0/8",
        "HOOKLINE_ALLOW_HTTP": "1",
    }
    config = config_from_env(env)
    assert (config.nats_url, config.sender_nats_url, config.sender_image) == (
        "nats://nats:4222",
        "nats://nats:4222",
        "img:1",
    )
    assert config.egress.allow_http and [str(n) for n in config.egress.allow_networks] == ["10.0.0.0/8"]
    with pytest.raises(ValueError, match="HOOKLINE_WEBHOOKTEST_TTL_SECONDS"):
        config_from_env({"HOOKLINE_WEBHOOKTEST_TTL_SECONDS": "soon"})


def test_kopf_settings_are_hardened():
    settings = kopf_settings(OperatorConfig())
    assert settings.persistence.finalizer == FINALIZER == "hookline.io/finalizer"
    assert settings.persistence.progress_storage.prefix == "hookline.io"
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.watching.client_timeout > settings.watching.server_timeout
    # Sent as the watch's timeoutSeconds: the API server parses an integer and refuses "300.0".
    assert type(settings.watching.server_timeout) is int
    assert settings.posting.level == logging.INFO
    assert type(kopf_settings(OperatorConfig(watch_server_timeout=90.0)).watching.server_timeout) is int  # type: ignore[arg-type]


def test_kopf_settings_bound_what_a_burst_of_webhooks_holds():
    """1,000 new Webhooks on a real API server: 1,090 TLS connections and 503 MiB; 2,000 with every
    object's worker running at once: 292 MiB, with 300 at once: 143 MiB (bench/operator_scale.py)."""
    settings = kopf_settings(OperatorConfig())
    assert settings.queueing.worker_limit == 500 and settings.watching.chunk_size == 500
    config = config_from_env({"HOOKLINE_OPERATOR_WORKERS": "50", "HOOKLINE_API_REQUESTS": "8"})
    assert (config.workers, config.api_requests) == (50, 8)
    assert kopf_settings(config).queueing.worker_limit == 50
    with pytest.raises(ValueError, match="HOOKLINE_OPERATOR_WORKERS"):
        config_from_env({"HOOKLINE_OPERATOR_WORKERS": "0"})


def test_nats_errors_are_classified_transient_or_permanent_with_what_to_do():
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import APIError, ServiceUnavailableError

    from hookline.operator.adapters.consumers import classify

    limit = classify(
        "creating consumer c", "NATS nats://n:4222", APIError(400, "maximum consumers limit reached", 10026)
    )
    assert limit.permanent and "err_code 10026" in limit.message
    assert "nats.streamMaxConsumers" in limit.message
    other = classify("creating consumer c", "NATS nats://n:4222", APIError(400, "bad filter", 10093))
    assert other.permanent and "bad filter" in other.message and "configuration" in other.message
    outage = classify("creating consumer c", "NATS nats://n:4222", ServiceUnavailableError(503, "no leader"))
    assert not outage.permanent and "once NATS answers" in outage.message
    timeout = classify("creating consumer c", "NATS nats://n:4222", NatsTimeout())
    assert not timeout.permanent
    assert "failed: nats: timeout;" in timeout.message
    # asyncio's timeout stringifies to "": the message names its kind instead of ending in ": ".
    bare = classify("creating consumer c", "NATS nats://n:4222", TimeoutError())
    assert not bare.permanent and "failed: TimeoutError;" in bare.message


def test_operator_metrics_count_webhooks_by_condition_and_database():
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.webhooks.observe("shop", "a", "newsletter", [{"type": "Verified", "status": "True"}])
    metrics.webhooks.observe("shop", "b", "newsletter", [{"type": "Verified", "status": "False"}])
    metrics.webhooks.observe("shop", "c", None, [{"type": "Verified", "status": "False"}])
    metrics.checks.labels(reason="FileMatched").inc()
    text = generate_latest(registry).decode()
    newsletter = 'condition="Verified",database="newsletter",namespace="shop"'
    assert f'hookline_webhooks{{{newsletter},status="True"}} 1.0' in text
    assert f'hookline_webhooks{{{newsletter},status="False"}} 1.0' in text
    assert 'hookline_webhooks{condition="Verified",database="",namespace="shop",status="False"} 1.0' in text
    assert f'hookline_webhooks{{{newsletter.replace("Verified", "Ready")},status="Unknown"}} 2.0' in text
    assert 'hookline_verification_checks_total{reason="FileMatched"} 1.0' in text
    assert "hookline_reconcile_duration_seconds_bucket" in text
    metrics.webhooks.forget("shop", "a")
    metrics.webhooks.forget("shop", "b")
    metrics.webhooks.forget("shop", "c")
    assert "hookline_webhooks{" not in generate_latest(registry).decode()


def test_operator_metrics_name_each_webhook_in_one_series_per_condition():
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.webhooks.observe("shop", "orders", "newsletter", [{"type": "Verified", "status": "False"}])

    def series() -> list[tuple[dict[str, str], float]]:
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            if family.name == "hookline_webhook_condition"
            for sample in family.samples
        ]

    base = {"namespace": "shop", "webhook": "orders", "database": "newsletter"}
    assert {"condition": "Verified", "status": "False", **base} in [labels for labels, _ in series()]
    assert all(value == 1.0 for _, value in series())
    assert sorted(labels["condition"] for labels, _ in series()) == sorted(CONDITION_TYPES)
    # A new status replaces the old series; it does not add a second one for the same condition.
    metrics.webhooks.observe("shop", "orders", "newsletter", [{"type": "Verified", "status": "True"}])
    verified = [labels for labels, _ in series() if labels["condition"] == "Verified"]
    assert verified == [{"condition": "Verified", "status": "True", **base}]
    metrics.webhooks.forget("shop", "orders")
    assert series() == []


def test_promtool_finds_nothing_to_report_in_operator_metrics():
    import subprocess
    from pathlib import Path

    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.webhooks.observe("shop", "a", "newsletter", [{"type": "Verified", "status": "True"}])
    metrics.reconcile.observe(0.2)
    promtool = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "promtool"
    result = subprocess.run(
        [str(promtool), "check", "metrics"], input=generate_latest(registry), capture_output=True, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


# --- delivery health --------------------------------------------------------------------------------------


def health(**fields):
    base = {"recentAttempts": 0, "recentFailures": 0, "windowSeconds": 300, "pending": 0}
    return {**base, **fields}


def test_delivering_says_failing_with_the_answer_and_since_when():
    facts = health(
        recentAttempts=10,
        recentFailures=8,
        failingSince="2026-12-01T10:00:00Z",
        lastFailure="HTTP 500: database down",
    )
    failing = delivery.delivering_condition(facts, "shop", "orders")
    assert (failing.status, failing.reason) == ("False", "Failing")
    assert "8 of 10 attempts in the last 5 min failed" in failing.message
    assert "since 2026-12-01T10:00:00Z" in failing.message and "HTTP 500: database down" in failing.message
    assert "hookline attempts orders -n shop --failed" in failing.message
    # Half or fewer failing, or too few attempts to tell: still delivering.
    assert (
        delivery.delivering_condition(health(recentAttempts=10, recentFailures=5), "s", "o").status == "True"
    )
    assert (
        delivery.delivering_condition(health(recentAttempts=2, recentFailures=2), "s", "o").status == "True"
    )


def test_delivering_says_backlogged_only_while_the_backlog_grows():
    grows = delivery.delivering_condition(health(pending=5000, pendingGrowthPerMinute=1200), "s", "o")
    assert (grows.status, grows.reason) == ("False", "Backlogged")
    assert "5000 events wait" in grows.message and "maxRequestsPerSecond" in grows.message
    drains = delivery.delivering_condition(health(pending=5000, pendingGrowthPerMinute=-300), "s", "o")
    assert drains.reason == "Delivering"
    burst = delivery.delivering_condition(health(pending=20, pendingGrowthPerMinute=20), "s", "o")
    assert burst.reason == "Delivering"


def test_delivering_reasons_in_order_gone_paused_missing_failing():
    facts = health(recentAttempts=9, recentFailures=9, consumerMissing=True, gone=True)
    assert delivery.delivering_condition(facts, "s", "o").reason == "ReceiverGone"
    facts.pop("gone")
    assert delivery.delivering_condition(facts, "s", "o", paused=True).reason == "Paused"
    assert delivery.delivering_condition(facts, "s", "o").reason == "ConsumerMissing"
    facts.pop("consumerMissing")
    assert delivery.delivering_condition(facts, "s", "o").reason == "Failing"
    ok = delivery.delivering_condition(health(lastSuccessAt="2026-12-01T10:00:00Z"), "s", "o")
    later = delivery.delivering_condition(health(lastSuccessAt="2026-12-01T10:05:00Z"), "s", "o")
    assert ok.status == "True" and ok == later  # a new success time is no reason to rewrite conditions


class Report:
    def __init__(self, value: int, reason: str = "Delivering") -> None:
        self.value, self.reason = value, reason

    def same_as(self, other) -> bool:
        return other is not None and other.value == self.value


def test_status_writes_skip_idle_webhooks_and_keep_to_the_budget():
    written = {
        ("ns", f"w{i}"): delivery.WriteState(Report(0), at=0.0, reason="Delivering") for i in range(100)
    }
    reports = {key: Report(0) for key in written}
    due = partial_due(reports, written, now=1000.0)
    assert due == []  # nothing changed: no write at all
    reports = {key: Report(1) for key in written}  # every Webhook changed a counter
    assert partial_due(reports, written, now=10.0) == []  # written 10 s ago: within the interval
    due = partial_due(reports, written, now=100.0)
    assert len(due) == 20  # 20 writes/s budget, one-second tick
    # 100 changing Webhooks at 20 writes/s: each at most every 5 s, though the interval is 1 s.
    assert partial_due(reports, written, now=4.0, interval=1.0) == []
    # A new Delivering reason goes first, even right after a write.
    reports[("ns", "w7")] = Report(2, reason="Failing")
    assert partial_due(reports, written, now=1.0)[0] == ("ns", "w7")


def partial_due(reports, written, *, now, interval=30.0):
    return delivery.due_writes(
        reports,
        written,
        now,
        interval=interval,
        writes_per_second=20.0,
        tick=1.0,
        reason_of=lambda r: r.reason,
    )


def test_a_tripped_circuit_breaker_is_delivering_false_disabled_and_resumes_like_gone():
    tripped = GoneState(gone=True, since=1_700_000_000.0, event_id="e1", url_sha256="x", cause="disabled")
    status = delivery.delivery_status({}, tripped, request=None, resumed=None, now="T1")
    assert status["disabled"] is True and status["gone"] is False and "disabledSince" in status
    condition = delivery.delivering_condition(status, "shop", "orders")
    assert (condition.status, condition.reason) == ("False", "Disabled")
    assert "hookline redrive orders -n shop --resume" in condition.message
    assert delivery.resume_reason(tripped, URL, "1", None) is not None  # the same annotation lifts it
    lifted = delivery.delivery_status(status, GoneState(), request=None, resumed=None, now="T2")
    assert "disabled" not in lifted and lifted["resumeReason"].startswith("resumed outside")


def test_operator_metrics_export_the_delivering_reason_of_each_webhook():
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    failing = {"type": "Delivering", "status": "False", "reason": "Failing"}
    metrics.webhooks.observe("shop", "orders", "newsletter", [failing])
    metrics.webhooks.observe("shop", "odd", None, [{"type": "Delivering", "status": "False", "reason": "?"}])
    text = generate_latest(registry).decode()
    line = (
        'hookline_webhook_delivering_reason{database="newsletter",namespace="shop",'
        'reason="Failing",webhook="orders"} 1.0'
    )
    assert line in text
    assert 'reason="Unknown",webhook="odd"} 1.0' in text  # every Webhook has one series, known or not


def test_delivery_status_and_attempt_log_settings_come_from_the_chart_env():
    config = config_from_env(
        {
            "HOOKLINE_DELIVERY_STATUS_INTERVAL_SECONDS": "60",
            "HOOKLINE_DELIVERY_STATUS_WRITES_PER_SECOND": "5",
            "HOOKLINE_ATTEMPTS_MAX_AGE_SECONDS": "3600",
            "HOOKLINE_ATTEMPTS_MAX_BYTES": "10485760",
        }
    )
    assert (config.delivery_status_interval, config.delivery_status_writes_per_second) == (60.0, 5.0)
    assert (config.attempts_max_age_seconds, config.attempts_max_bytes) == (3600.0, 10485760)
    with pytest.raises(
        ValueError, match="HOOKLINE_DELIVERY_STATUS_WRITES_PER_SECOND='0' must be more than 0"
    ):
        config_from_env({"HOOKLINE_DELIVERY_STATUS_WRITES_PER_SECOND": "0"})
