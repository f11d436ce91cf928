"""The pure parts of a deleted consumer's recovery (issue 17, item 1): the debt record, the recovery
stream's config, the loss in the health report and the Delivering condition EventsLost."""

from __future__ import annotations

import json

import pytest
from nats.js import api

from hookline.api import DeliveringReason
from hookline.operator.rules.delivery import delivering_condition, lost_recently
from hookline.sender.bus.floors import RecoveryDebt
from hookline.sender.bus.layout import ConsumerSpec
from hookline.sender.bus.recovery import (
    RECOVERY_STREAM,
    SOURCING_CONSUMER,
    SOURCING_SUBJECT,
    recovery_stream_config,
    sourcing_consumer_config,
)
from hookline.sender.bus.replay import redrive_filter
from hookline.sender.model.deliveryhealth import LOSS_SHOWN_SECONDS, DeliveryTally, HealthReport
from hookline.sender.model.outcomes import LossReason
from hookline.sender.observe.metrics import EVENTS_LOST_REASONS

NOW = 1_800_000_000.0


def test_a_debt_survives_its_record_and_a_second_loss_keeps_the_older_part():
    assert RecoveryDebt.from_bytes(RecoveryDebt(301).to_bytes()) == RecoveryDebt(301)
    assert RecoveryDebt.from_bytes(RecoveryDebt(301, 2900).to_bytes()) == RecoveryDebt(301, 2900)
    assert RecoveryDebt.from_bytes(b"garbage") is None
    assert RecoveryDebt(301, 2900).merged(2950) == RecoveryDebt(301)  # its end is set once made again
    assert RecoveryDebt(2950).merged(301) == RecoveryDebt(301)


def test_the_recovery_stream_mirrors_the_events_stream_for_a_bounded_window():
    config = recovery_stream_config(600, 2 * 1024**3, replicas=3)
    assert config.name == RECOVERY_STREAM == "HOOKLINE_EVENTS_RECOVERY"
    assert config.mirror is not None and config.mirror.name == "HOOKLINE_EVENTS"
    # Read through a durable flow-control consumer (ADR-60): the way NATS mirrors an interest stream.
    assert config.mirror.consumer == api.StreamConsumerSource(SOURCING_CONSUMER, SOURCING_SUBJECT)
    consumer = sourcing_consumer_config()
    assert consumer.ack_policy == api.AckPolicy.FLOW_CONTROL and consumer.deliver_subject == SOURCING_SUBJECT
    assert consumer.durable_name == SOURCING_CONSUMER and not consumer.num_replicas  # the stream's
    assert not SOURCING_SUBJECT.startswith("hookline.")  # no hookline stream captures its deliveries
    assert config.retention == api.RetentionPolicy.LIMITS and config.discard == api.DiscardPolicy.OLD
    assert (config.max_age, config.max_bytes, config.num_replicas) == (600.0, 2 * 1024**3, 3)
    assert config.subjects is None  # a mirror takes no publishes of its own
    assert recovery_stream_config(2).duplicate_window == 2.0  # must fit inside max_age
    with pytest.raises(ValueError, match="at least"):
        recovery_stream_config(0.5)
    with pytest.raises(ValueError, match="1 MiB"):
        recovery_stream_config(600, 1000)


def test_recovered_events_go_to_the_webhooks_own_redrive_subject():
    spec = ConsumerSpec(
        "hookline_shop_orders", ("hookline.events.click.*.*", "hookline.redrive.shop.orders"), 1, 1
    )
    assert redrive_filter(spec) == "hookline.redrive.shop.orders"
    with pytest.raises(ValueError, match="no redrive subject"):
        redrive_filter(ConsumerSpec("c", ("hookline.events.click.*.*",), 1, 1))


def test_every_loss_reason_has_a_metric_series():
    assert {str(r) for r in LossReason} == set(EVENTS_LOST_REASONS)


def test_a_loss_is_in_the_report_carried_over_a_restart_and_recent_for_a_day():
    tally = DeliveryTally("shop", "orders")
    assert tally.report(NOW).delivery_status()["eventsLost"] is None  # not written while nothing is lost
    tally.lost(NOW, 0)
    assert tally.events_lost == 0 and tally.events_lost_at is None
    tally.lost(NOW, 150)
    report = tally.report(NOW + 1)
    assert (report.events_lost, report.events_lost_at, report.loss_recent) == (150, NOW, True)
    status = report.delivery_status()
    assert status["eventsLost"] == 150 and status["eventsLostAt"] == "2027-01-15T08:00:00Z"
    later = DeliveryTally("shop", "orders")
    later.restore(HealthReport.from_bytes(report.to_bytes()))
    later.lost(NOW + 60, 5)
    assert later.events_lost == 155
    old = later.report(NOW + 60 + LOSS_SHOWN_SECONDS)
    assert not old.loss_recent and not old.same_as(later.report(NOW + 61))  # the change is reported


def test_a_report_from_a_newer_sender_is_read_by_an_older_operator():
    data = json.loads(DeliveryTally("shop", "orders").report(NOW).to_bytes())
    data["somethingNew"] = 1
    assert HealthReport.from_bytes(json.dumps(data).encode()).name == "orders"


def delivery(**fields):
    return {
        "recentAttempts": 0,
        "recentFailures": 0,
        "pending": 0,
        "reportedAt": "2026-12-01T10:00:00Z",
        **fields,
    }


def test_delivering_says_events_lost_for_a_day_after_the_loss():
    lost = delivery(eventsLost=150, eventsLostAt="2026-12-01T09:00:00Z")
    assert lost_recently(lost)
    condition = delivering_condition(lost, "shop", "orders")
    assert (condition.status, condition.reason) == ("False", DeliveringReason.EVENTS_LOST)
    assert "150 events" in condition.message and "--recovery-window" in condition.message
    a_day_later = {**lost, "reportedAt": "2026-12-02T09:00:01Z"}
    assert delivering_condition(a_day_later, "shop", "orders").reason == DeliveringReason.DELIVERING
    assert not lost_recently(delivery(eventsLost=0, eventsLostAt="2026-12-01T09:00:00Z"))
    assert not lost_recently(delivery(eventsLost=3, eventsLostAt="yesterday"))


def test_a_missing_consumer_comes_before_events_lost_and_failing_after():
    facts = delivery(eventsLost=1, eventsLostAt="2026-12-01T09:59:00Z", consumerMissing=True)
    assert delivering_condition(facts, "s", "o").reason == DeliveringReason.CONSUMER_MISSING
    facts.update(consumerMissing=False, recentAttempts=9, recentFailures=9)
    assert delivering_condition(facts, "s", "o").reason == DeliveringReason.EVENTS_LOST
