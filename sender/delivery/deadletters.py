"""One engine's dead letters: made from an event's last attempt, published, and only then acked.

A dead letter's attempt count and last answer are what receivers answered (ledger.py), never how
often JetStream handed the event out. A dead letter NATS does not store is tried again: the event is
NAKed with a delay and never POSTed again (it is remembered by stream sequence, and an event whose
recorded failed attempts reached maxAttempts is not POSTed after a restart either). After
`EngineSettings.dead_letter_max_tries` the engine logs an error, counts
`hookline_dead_letter_failures_total` and keeps the event, trying again only every
`dead_letter_kept_delay_seconds`. The count of stored dead letters is the stream's, read again every
`dead_letter_recount_seconds` (a redrive lowers it); in between the engine counts its own.
"""

from __future__ import annotations

import logging
import math

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hookline.sender.bus.bundles import event_key
from hookline.sender.bus.deadletter import DeadLetter, count_dead_letters, publish_dead_letter
from hookline.sender.bus.failedattempts import FailedAttempts
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.deliveryhealth import DeliveryTally
from hookline.sender.model.events import Event
from hookline.sender.model.outcomes import AttemptOutcome, DeadLetterReason
from hookline.sender.observe.metrics import WebhookMetrics

log = logging.getLogger(__name__)

__all__ = ["DeadLetterPublisher"]


class DeadLetterPublisher:
    """Dead letters of one Webhook; `unstored` holds those NATS did not store yet, by stream sequence."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        metrics: WebhookMetrics,
        tally: DeliveryTally,
        settings: EngineSettings,
        *,
        namespace: str,
        name: str,
        max_attempts: int,
        label: str,
    ) -> None:
        self.nc = nc
        self.js = js
        self.metrics = metrics
        self.tally = tally  # its dead_letters is what the health report shows
        self.settings = settings
        self.namespace = namespace
        self.name = name
        self.max_attempts = max_attempts
        self.label = label
        self.unstored: dict[int | str, tuple[DeadLetter, int]] = {}  # event key -> (record, tries so far)
        self.counted_at = -math.inf

    def record(
        self,
        msg: Msg,
        event: Event,
        outcome: AttemptOutcome,
        reason: DeadLetterReason,
        now: float,
        attempts: int,
    ) -> DeadLetter:
        """The dead letter of an event whose `attempts` failed attempts ended with `outcome` at `now`."""
        meta = msg.metadata
        return DeadLetter.from_attempts(
            namespace=self.namespace,
            name=self.name,
            event=event.payload,
            reason=reason,
            last_outcome=outcome,
            attempts=attempts,
            first_attempt_at=meta.timestamp.timestamp(),
            last_attempt_at=now,
            subject=msg.subject,
            source_sequence=meta.sequence.stream,
        )

    def left(self, msg: Msg, event: Event, failed: FailedAttempts | None) -> tuple[DeadLetter, int] | None:
        """The dead letter (and its tries so far) still to be stored for this message, if that is all
        that is left of it: one NATS refused before, or one whose last failed attempt (`failed`, the
        recorded count) was made before a restart. None: the message is to be delivered."""
        if failed is None and not self.unstored:  # the common case
            return None
        pending = self.unstored.get(event_key(msg))
        if pending is None and failed is not None and failed.count >= self.max_attempts:
            reason = DeadLetterReason.MAX_ATTEMPTS
            record = self.record(msg, event, failed.last_outcome, reason, failed.at, failed.count)
            pending = (record, 0)
        return pending

    async def store(self, msg: Msg, event: Event, record: DeadLetter, tries: int = 0) -> bool:
        """Publish the dead letter, then ack (True); if NATS does not store it, keep the event (not
        POSTed again) and answer False."""
        sequence = event_key(msg)
        settings = self.settings
        try:
            await publish_dead_letter(self.js, record, max_payload=self.nc.max_payload)
        except Exception as exc:  # not stored: keep the event and try again later; nothing is lost
            tries += 1
            self.unstored[sequence] = (record, tries)
            if tries % settings.dead_letter_max_tries:
                log.warning(
                    "%s: dead letter for %s not stored (%s); try %d of %d",
                    self.label,
                    event.id,
                    exc,
                    tries,
                    settings.dead_letter_max_tries,
                )
                await msg.nak(delay=settings.redeliver_after_failure_seconds)
                return False
            self.metrics.dead_letter_failures.inc()
            log.error(
                "%s: dead letter for %s not stored after %d tries (%s); the event is kept in the stream "
                "and tried again in %.0fs",
                self.label,
                event.id,
                tries,
                exc,
                settings.dead_letter_kept_delay_seconds,
            )
            await msg.nak(delay=settings.dead_letter_kept_delay_seconds)
            return False
        self.unstored.pop(sequence, None)
        await msg.ack()
        self.tally.dead_letters += 1
        reason = record.reason
        self.metrics.deliveries["dead_lettered"].inc()
        self.metrics.dead_letters[reason].inc()
        log.warning(
            "%s: event %s dead-lettered after %d failed attempts (%s: %s)",
            self.label,
            event.id,
            record.attempts,
            reason,
            record.last_error,
        )
        return True

    async def recount(self, now: float) -> None:
        """The stream's count, when it is due: redrive takes records out, and it survives restarts."""
        if now - self.counted_at < self.settings.dead_letter_recount_seconds:
            return
        try:
            self.tally.dead_letters = await count_dead_letters(self.js, self.namespace, self.name)
            self.counted_at = now
        except Exception as exc:
            log.debug("%s: dead letters not counted: %s", self.label, exc)
