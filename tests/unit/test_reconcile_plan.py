"""The reconcile's plan (operator/rules/reconcile.py): what a Webhook gets written, from facts alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hookline import api
from hookline.api import SenderMode, SenderStatus, parse_webhook_spec
from hookline.operator.rules import reconcile
from hookline.operator.rules.placement import Placement, pool_sender_status
from hookline.operator.rules.reconcile import (
    ApplyObject,
    EngineFacts,
    Facts,
    PoolPlace,
    PoolRemove,
    RemoveSender,
)
from hookline.operator.rules.status import BusProblem
from hookline.operator.rules.verification import instructions, url_fingerprint
from hookline.operator.settings import (
    ExpiryTiming,
    OperatorConfig,
    ReconcileTiming,
    VerificationSchedule,
)
from hookline.sender.model.config import SenderConfig
from hookline.sender.transport.ownership import OwnershipResult

URL = "https://shop.example.com/hooks/copernica.php"
TOKEN = "0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
VERIFIED_STATUS = {
    "verification": {
        **instructions(TOKEN, URL),
        "verifiedURL": URL,
        "verifiedFor": url_fingerprint(URL),
    },
}


def spec(**fields: Any) -> api.WebhookSpec:
    return parse_webhook_spec({"url": URL, "events": ["open"], **fields})


def facts(status: dict[str, Any] | None = None, **changes: Any) -> Facts:
    given = spec(**changes.pop("fields", {}))
    base = Facts(
        owner={
            "apiVersion": "hookline.io/v1alpha1",
            "kind": "Webhook",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
        },
        namespace="shop",
        name="orders",
        generation=3,
        labels={},
        status=status if status is not None else VERIFIED_STATUS,
        spec=given,
        token=TOKEN,
    )
    return replace(base, **changes)


def engine(webhook: Facts, mode: SenderMode = SenderMode.DEDICATED, **changes: Any) -> EngineFacts:
    assert webhook.spec is not None
    cfg = SenderConfig.for_webhook("shop", "orders", webhook.spec, nats_url="nats://x")
    pool = "bulk" if mode == SenderMode.POOL else None
    return replace(EngineFacts(cfg, Placement(mode, pool)), **changes)


def plan(webhook: Facts, found: EngineFacts, sender: dict[str, Any] | None = None) -> reconcile.SenderPlan:
    return reconcile.sender_plan(webhook, found, config=CONFIG, sender=sender or {}, verified_url=URL)


def condition(write: reconcile.WebhookWrite, type_: str) -> api.Condition:
    return next(c for c in write.conditions if c.type == type_)


# --- intake ---------------------------------------------------------------------------------------------


def test_a_new_webhook_gets_its_file_instructions_pending_and_a_check():
    intake = reconcile.intake(facts(status={}, token_is_new=True))
    assert intake.write.status["verification"]["content"] == TOKEN
    assert intake.write.status["observedGeneration"] == 3
    pending = condition(intake.write, "Verified")
    assert (pending.status, pending.reason) == ("False", "Pending")
    assert intake.check_due and intake.hold is None and intake.retry is None


def test_an_invalid_spec_says_which_field_and_is_not_retried():
    intake = reconcile.intake(facts(spec=None, spec_error="spec.url: has no host name"))
    ready = condition(intake.write, "Ready")
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert "spec.url: has no host name" in ready.message
    assert intake.retry is not None and intake.retry.delay is None  # a new spec starts it again


def test_a_verified_webhook_is_not_checked_again_and_its_labels_follow_the_spec():
    intake = reconcile.intake(facts(fields={"database": "newsletter"}))
    assert not intake.check_due and intake.hold is None
    assert intake.write.labels == {"hookline.io/database": "newsletter"}
    assert "verification" not in intake.write.status  # the instructions are in status already


def test_a_new_url_stops_the_running_deployment_until_it_is_verified():
    status = {**VERIFIED_STATUS, "sender": {"deployment": "orders-sender", "replicas": 2}}
    intake = reconcile.intake(facts(status=status, fields={"url": "https://new.example.com/h"}))
    assert intake.check_due
    assert intake.hold is not None and intake.hold.deployment == "orders-sender"
    assert intake.hold.write.status["sender"] == {"replicas": 0}


def test_a_new_url_takes_a_pooled_engine_out_of_its_pool():
    sender = pool_sender_status("bulk", 1, running=True)
    status = {**VERIFIED_STATUS, "sender": sender}
    intake = reconcile.intake(
        facts(status=status, place=("bulk", 1), fields={"url": "https://new.example.com/h"})
    )
    assert intake.hold is not None and intake.hold.pool == ("bulk", 1)
    held = intake.hold.write.status["sender"]
    assert (held["replica"], held["replicas"], held["readyReplicas"]) == (None, 0, 0)


# --- the ownership check --------------------------------------------------------------------------------


def test_a_failed_check_records_it_and_asks_again_on_the_schedule():
    result = OwnershipResult("FileNotFound", None, "verification file not found")
    schedule = VerificationSchedule(first_delay=7.0)
    checked = reconcile.checked(facts(status={}), result, schedule=schedule, sender={}, now=NOW)
    fields = checked.write.status["verification"]
    assert (fields["checks"], fields["lastResult"], fields["nextCheckAt"]) == (
        1,
        "FileNotFound",
        "2026-06-01T12:00:07Z",
    )
    verified, ready = condition(checked.write, "Verified"), condition(checked.write, "Ready")
    assert (verified.status, verified.reason) == ("False", "FileNotFound")
    assert (ready.status, ready.reason) == ("False", "NotVerified")
    assert checked.retry is not None and checked.retry.delay == 7.0
    assert checked.retry.message.startswith("not verified yet")  # kept quiet in the logs


def test_a_matching_file_verifies_without_a_retry():
    result = OwnershipResult("FileMatched", URL, "ok")
    checked = reconcile.checked(facts(status={}), result, schedule=VerificationSchedule(), sender={}, now=NOW)
    assert checked.retry is None
    assert checked.write.status["verification"]["verifiedFor"] == url_fingerprint(URL)
    assert condition(checked.write, "Verified").status == "True"


# --- the sender: dedicated ------------------------------------------------------------------------------


def test_a_paused_webhook_plans_zero_replicas_and_ready_false_paused():
    webhook = facts(fields={"paused": True, "sender": {"replicas": 3}})
    planned = plan(webhook, engine(webhook))
    deployment = next(
        o.want for o in planned.objects if isinstance(o, ApplyObject) and o.kind == "Deployment"
    )
    assert deployment["spec"]["replicas"] == 0
    assert planned.write.status["sender"]["replicas"] == 0
    ready = condition(planned.write, "Ready")
    assert (ready.status, ready.reason) == ("False", "Paused")
    assert planned.retry is None and planned.pool_step is None


def test_a_dedicated_sender_gets_its_configmap_and_deployment_and_waits_for_its_pods():
    webhook = facts(fields={"sender": {"replicas": 2}})
    planned = plan(webhook, engine(webhook))
    assert [o.kind for o in planned.objects if isinstance(o, ApplyObject)] == ["ConfigMap", "Deployment"]
    sender = planned.write.status["sender"]
    assert (sender["mode"], sender["deployment"], sender["replicas"]) == ("Dedicated", "orders-sender", 2)
    assert sender["pool"] is None and sender["replica"] is None  # a pool's fields are removed
    assert condition(planned.write, "Verified").status == "True"
    ready = condition(planned.write, "Ready")
    assert (ready.reason, ready.message.split(" sender pods")[0]) == ("SenderUnavailable", "0 of 2")


def test_a_webhook_moved_out_of_a_pool_leaves_it_before_its_deployment_runs():
    webhook = facts()
    planned = plan(webhook, engine(webhook, place=("bulk", 0)))
    assert planned.pool_step == PoolRemove("hookline_shop_orders", ("bulk", 0))
    assert len(planned.objects) == 2


def test_nats_refusing_the_consumer_holds_the_sender_back_and_looks_again_rarely():
    webhook = facts()
    refused = BusProblem("NATS refused it: raise nats.streamMaxConsumers", permanent=True)
    planned = plan(webhook, engine(webhook, consumer_problem=refused))
    ready = condition(planned.write, "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "BusRefused", refused.message)
    assert planned.retry is not None and planned.retry.delay == 60.0
    assert planned.objects == () and planned.pool_step is None and "sender" not in planned.write.status
    assert planned.bus_problem == refused


def test_a_nats_outage_is_looked_at_again_soon_as_the_settings_say():
    webhook = facts()
    outage = BusProblem("NATS at nats://x did not answer")
    config = replace(CONFIG, reconcile=ReconcileTiming(bus_retry_seconds=3.0))
    planned = reconcile.sender_plan(
        webhook, engine(webhook, consumer_problem=outage), config=config, sender={}, verified_url=URL
    )
    assert condition(planned.write, "Ready").reason == "BusUnavailable"
    assert planned.retry is not None and planned.retry.delay == 3.0


# --- the sender: pools ----------------------------------------------------------------------------------


def test_a_pooled_webhook_is_placed_on_its_replica_and_its_deployment_removed():
    status = {**VERIFIED_STATUS, "sender": {"deployment": "orders-sender", "replicas": 1}}
    webhook = facts(status=status)
    found = engine(webhook, SenderMode.POOL, entry=b"entry", replica=2, running=True)
    planned = plan(webhook, found)
    assert isinstance(planned.pool_step, PoolPlace)
    assert (planned.pool_step.pool, planned.pool_step.replica) == ("bulk", 2)
    assert planned.objects == (RemoveSender("shop", "orders"),)
    sender = planned.write.status["sender"]
    assert (sender["mode"], sender["pool"], sender["replica"], sender["deployment"]) == (
        "Pool",
        "bulk",
        2,
        None,
    )
    assert sender["configHash"]
    ready = condition(planned.write, "Ready")
    assert (ready.status, ready.reason) == ("True", "SenderAvailable")


def test_a_pool_that_does_not_run_is_named_in_ready():
    webhook = facts()
    planned = plan(webhook, engine(webhook, SenderMode.POOL, entry=b"entry", replica=None))
    ready = condition(planned.write, "Ready")
    assert (ready.status, ready.reason) == ("False", "PoolNotFound")
    assert "'bulk'" in ready.message


def test_an_unreadable_signing_secret_holds_a_pooled_webhook_back_and_is_read_again_soon():
    webhook = facts()
    problem = BusProblem(
        "Secret s key k: the Secret does not exist",
        permanent=True,
        reason=api.ReadyReason.SIGNING_SECRET_UNAVAILABLE,
    )
    planned = plan(webhook, engine(webhook, SenderMode.POOL, entry_problem=problem))
    assert condition(planned.write, "Ready").reason == "SigningSecretUnavailable"
    assert planned.retry is not None and planned.retry.delay == 10.0  # not the refused delay
    assert planned.pool_step is None


def test_a_paused_pooled_webhook_leaves_its_pool():
    status = {**VERIFIED_STATUS, "sender": pool_sender_status("bulk", 0, running=True)}
    webhook = facts(status=status, fields={"paused": True})
    planned = plan(webhook, engine(webhook, SenderMode.POOL))
    assert planned.pool_step == PoolRemove("hookline_shop_orders", ("bulk", 0))
    assert planned.write.status["sender"]["replicas"] == 0
    assert condition(planned.write, "Ready").reason == "Paused"


def test_every_status_sender_part_is_one_the_crd_declares():
    webhook = facts()
    for planned in (
        plan(webhook, engine(webhook)),
        plan(webhook, engine(webhook, SenderMode.POOL, entry=b"e", replica=0, running=False)),
    ):
        sender = planned.write.status["sender"]
        assert api.checked_status(SenderStatus, sender) == sender


# --- every event ----------------------------------------------------------------------------------------


def test_observed_writes_nothing_while_the_conditions_already_say_it():
    webhook = facts()
    assert webhook.spec is not None
    status = {**VERIFIED_STATUS, "sender": {"deployment": "orders-sender", "availableReplicas": 1}}
    changed = reconcile.observed("shop", "orders", webhook.spec, status, None)
    assert [(c.type, c.status) for c in changed] == [("Ready", "True")]
    ready = changed[0]
    written = {
        **status,
        "conditions": [{"type": "Ready", "status": "True", "reason": ready.reason, "message": ready.message}],
    }
    assert reconcile.observed("shop", "orders", webhook.spec, written, None) == []


def test_finished_webhooktests_are_looked_at_a_quarter_of_the_ttl_apart_within_bounds():
    expiry = ExpiryTiming()
    assert (expiry.interval(1000.0), expiry.interval(1.0), expiry.interval(86400.0)) == (250.0, 0.5, 300.0)
