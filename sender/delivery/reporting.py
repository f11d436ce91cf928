"""How one Webhook's deliveries go, for `hookline attempts` and the operator's Delivering condition:
every failed attempt and a sample of successes go to the attempt log (sender/bus/attemptlog.py), and
the tally they feed is reported when it changed. Without an attempt log only the tally is kept (the
circuit breaker counts from its `failing_since`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hookline.sender.bus.attemptlog import AttemptLog
from hookline.sender.model.deliveryhealth import DeliveryTally, HealthReport, attempt_record
from hookline.sender.model.events import Event
from hookline.sender.model.outcomes import AttemptOutcome, GoneState

log = logging.getLogger(__name__)

__all__ = ["AttemptReporter"]


class AttemptReporter:
    """One engine's attempt records and health reports, over its `tally`."""

    def __init__(
        self, attempt_log: AttemptLog | None, namespace: str, name: str, *, url: str, label: str
    ) -> None:
        self.attempt_log = attempt_log
        self.url = url
        self.label = label
        self.tally = DeliveryTally(namespace, name)
        self.last_report: HealthReport | None = None

    @property
    def enabled(self) -> bool:
        return self.attempt_log is not None

    async def restore(self) -> None:
        """Carry over what the previous run reported (the breaker counts from its failing_since)."""
        if self.attempt_log is not None and (previous := await self.attempt_log.previous()) is not None:
            self.tally.restore(previous)

    async def note(
        self,
        events: Sequence[Event],
        attempt: int,
        outcome: AttemptOutcome,
        took: float,
        answer: bytes,
        now: float,
        batch_id: str | None = None,
    ) -> None:
        """One attempt record per request; for a batch (`batch_id`) it names all its events."""
        self.tally.record(now, outcome, answer)
        if self.attempt_log is None:
            return
        successes = 1
        if outcome.succeeded and not (successes := self.tally.sample_success(now)):
            return
        if batch_id is None:
            event_id, event_type, event_ids = events[0].id, events[0].type, ()
        else:
            event_id = batch_id
            event_type = ",".join(sorted({e.type for e in events}))
            event_ids = tuple(e.id for e in events)
        record = attempt_record(
            at=now,
            event_id=event_id,
            event_type=event_type,
            attempt=attempt,
            outcome=outcome,
            duration=took,
            url=self.url,
            response=answer,
            successes=successes,
            event_ids=event_ids,
        )
        try:
            await self.attempt_log.record(record)
        except Exception as exc:  # a lost log line, never a lost event
            log.debug("%s: attempt not recorded: %s", self.label, exc)

    async def report(self, now: float, *, consumer_missing: bool, gone: GoneState) -> None:
        """Tell the operator how deliveries go, when that changed since the last report."""
        if self.attempt_log is None:
            return
        report = self.tally.report(now, consumer_missing=consumer_missing, gone=gone)
        if report.same_as(self.last_report):
            return
        try:
            await self.attempt_log.report(report)
        except Exception as exc:  # NATS away: the next watch reports again
            log.debug("%s: health not reported: %s", self.label, exc)
            return
        self.last_report = report
