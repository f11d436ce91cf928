"""The Webhook's stop as one engine holds it: after a 410 Gone, or when `spec.delivery.disableAfter`
of only failures passed (the circuit breaker), nothing is pulled until someone resumes the Webhook.

The stop is recorded on the consumer (bus.mark_gone), which pauses it for every replica and for the
next start; `follow` takes in what the consumer says (a stop made by another replica, or a resume by
`hookline redrive --resume`), and retries a recording NATS refused. Which request stops the Webhook
is `settlement.settle`'s decision; this only executes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.js import JetStreamContext

from hookline.sender import bus
from hookline.sender.model.outcomes import DISABLED_CAUSE, GoneState
from hookline.sender.observe.metrics import WebhookMetrics

log = logging.getLogger(__name__)

__all__ = ["GoneSwitch"]


class GoneSwitch:
    """Whether this Webhook is stopped (`state`), and whether the consumer holds the stop (`recorded`:
    so a record that disappears means a resume)."""

    def __init__(
        self,
        js: JetStreamContext,
        consumer: str,
        metrics: WebhookMetrics,
        *,
        url: str,
        paused: bool,
        label: str,
        name: str,
        namespace: str,
        disable_after: str | None,
        on_change: Callable[[], None],
        record_on_consumer: bool = True,
    ) -> None:
        self.js = js
        self.record_on_consumer = record_on_consumer  # False: least-privilege credentials (natsperms)
        self.consumer = consumer
        self.metrics = metrics
        self.url = url
        self.paused = paused  # spec.paused: the feed stays paused whatever the stop says
        self.label = label
        self.name = name
        self.namespace = namespace
        self.disable_after = disable_after  # as written in the spec, for the log line
        self.on_change = on_change  # the health report tells the operator at once
        self.state = GoneState()
        self.recorded = False
        self.feed: bus.MessageFeed | None = None

    def attach(self, feed: bus.MessageFeed) -> None:
        """Pull from `feed` only while not stopped (nor paused by the spec)."""
        self.feed = feed
        feed.pause(self.paused or self.state.gone)

    async def trip(self, cause: str, event_id: str, now: float) -> None:
        """Stop pulling at once, then record the stop on the consumer (`follow` retries if NATS fails)."""
        if self.state.gone:
            return
        self._set(self.state.mark(now, event_id, self.url, cause=cause))
        if cause == DISABLED_CAUSE:
            log.warning(
                "%s: only failed attempts for %s (spec.delivery.disableAfter): deliveries stopped, events "
                "are kept. Resume with `hookline redrive %s -n %s --resume` once the receiver works again",
                self.label,
                self.disable_after,
                self.name,
                self.namespace,
            )
        else:
            log.warning(
                "%s: the receiver answered 410 Gone; deliveries stopped, undelivered events are kept. "
                "Resume with `hookline redrive %s -n %s --resume` once it accepts events again",
                self.label,
                self.name,
                self.namespace,
            )
        await self.record()

    async def record(self) -> None:
        if not self.record_on_consumer:  # may not update its consumer: the health report carries it
            return
        try:
            await bus.mark_gone(self.js, self.consumer, self.state)
        except Exception as exc:  # the watcher tries again
            log.warning("%s: could not record the 410 stop on the consumer (%s); will retry", self.label, exc)
            return
        self.recorded = True

    async def follow(self, stored: GoneState) -> None:
        """Take in the stop the consumer records: one made elsewhere, a resume, or ours still unrecorded."""
        if stored.gone:
            self.recorded = True
            if not self.state.gone:
                log.warning(
                    "%s: stopped: the receiver answered 410 Gone (recorded on the consumer)", self.label
                )
                self._set(stored)
        elif self.state.gone and self.recorded:
            log.info("%s: the 410 Gone stop was cleared; deliveries resume", self.label)
            self.recorded = False
            self._set(GoneState())
        elif self.state.gone:
            await self.record()

    def _set(self, state: GoneState) -> None:
        self.state = state
        self.on_change()
        self.metrics.gone.set(state.metric_value)
        if self.feed is not None:
            self.feed.pause(self.paused or state.gone)
