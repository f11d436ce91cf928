"""The consumer watch of one engine: every `EngineSettings.watch_interval_seconds` (or at once when woken)
it reads the consumer's state and acts on what changed.

- `hookline_pending_events` and the tally's backlog trend come from it.
- A 410 / circuit-breaker stop made by another replica, or a resume (`hookline redrive --resume`),
  reaches this engine through it (`GoneSwitch.follow`).
- A consumer deleted behind hookline's back (a pull answered 503 or "409 Consumer Deleted" wakes the watch)
  turns `/readyz` false and `hookline_consumer_lost` to 1, and is recreated (bus.ensure_consumer);
  `hookline_consumer_recreated_total` counts it. The floor is recorded as it moves, for that.
- A recreated consumer (by this watch, another replica or the operator: its creation time changed)
  is owed the events from its last floor to its recreation: they are put back from the recovery
  stream (bus/replay.py, `hookline_events_recovered_total`); what the window no longer held is
  counted in `hookline_events_lost_total` and the health report (status.delivery.eventsLost, the
  Delivering condition EventsLost).
- Each time, the delivery health is reported when it changed.

Quiet Webhooks cost the bus almost nothing (issue 22): a look that finds the consumer healthy, nothing
pending and no event since the last look makes the next one `idle_interval` away (jittered). What
would change that is pushed instead: JetStream's advisories for this consumer (DELETED, CREATED,
PAUSE: a deletion, a recreation, a stop recorded or resumed elsewhere) wake the watch at once and
keep it at `interval` for a few looks; the first event after a quiet spell (`stir`), a pull answered
503/409 and a reconnect to NATS (advisories sent meanwhile were missed) bring it back to `interval`.
A Webhook whose events only wait out their retry delays (pending unchanged, none in this engine's
hands, no Retry-After pause) rests `steady_interval`: the retries, when due, arrive as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hookline.sender import bus
from hookline.sender.bus.replay import pay_debt
from hookline.sender.delivery.deadletters import DeadLetterPublisher
from hookline.sender.delivery.gone import GoneSwitch
from hookline.sender.delivery.reporting import AttemptReporter
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.observe.metrics import WebhookMetrics

log = logging.getLogger(__name__)

__all__ = ["ADVISORY_KINDS", "ConsumerWatch", "advisory_subjects"]

# The consumer's JetStream advisories that change what the watch would read (not MSG_NAKED and the
# like: those come with every retry). A consumer update has none; a stop or resume also pauses or
# resumes the consumer (bus/stoprecord.py), which has.
ADVISORY_KINDS = ("DELETED", "CREATED", "PAUSE")
# Looks at the short interval after an advisory or a reconnect: a resume unpauses before it drops the
# stop record, so the look the advisory wakes may still read the record.
ALERT_LOOKS = 3


def advisory_subjects(consumer: str, stream: str = bus.STREAM) -> list[str]:
    return [f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{stream}.{consumer}" for kind in ADVISORY_KINDS]


class ConsumerWatch:
    """Looks at one consumer; `lost` while it is missing, `floor` its last ack floor seen."""

    def __init__(
        self,
        js: JetStreamContext,
        consumer: str,
        metrics: WebhookMetrics,
        *,
        gone: GoneSwitch,
        reporter: AttemptReporter,
        dead_letters: DeadLetterPublisher,
        consumer_spec: bus.ConsumerSpec | None,
        settings: EngineSettings,
        label: str,
        tidy: Callable[[], Awaitable[object]] | None = None,
        nc: NATS | None = None,
        holding: Callable[[], bool] | None = None,
    ) -> None:
        self.js = js
        self.nc = nc  # None: no advisories, and the watch never rests (tests of the watch alone)
        self.consumer = consumer
        self.metrics = metrics
        self.gone = gone
        self.reporter = reporter
        self.dead_letters = dead_letters
        self.consumer_spec = consumer_spec  # None: a lost consumer is reported, not recreated
        self.interval = interval = settings.watch_interval_seconds
        self.idle_interval = max(interval, settings.watch_idle_interval_seconds)
        self.steady_interval = min(self.idle_interval, max(interval, settings.watch_steady_interval_seconds))
        self.holding = holding  # True while the engine holds events (in hand, or a Retry-After pause)
        self.last_pending = -1
        self.label = label
        self.tidy = tidy  # chores done each time the watch looks (batches, events read ahead)
        self.lost = False
        self.floor = 0  # the consumer's last ack floor seen (stream sequence)
        self.floor_recorded = -1
        self.created: object = None  # the consumer's creation time last seen: a change means made again
        self.owed = True  # look for a recovery debt (at start, and whenever the consumer was made again)
        self.now_please = asyncio.Event()
        self.quiet = False  # the last look found nothing to watch closely: the next is idle_wait away
        self.idle_wait = self.idle_interval
        self.stirred = False  # an event came since the last look
        self.rested = False  # had a quiet look since it started
        self.alert = 0  # looks left at the short interval after an advisory or a reconnect
        self.looks = 0  # consumer-info requests made (for tests and the bench)
        self.halted = False  # halt(): the engine stops
        self._reconnects = 0
        self._subs: list[Subscription] = []

    def wake(self) -> None:
        """Look at once instead of at the next interval."""
        self.now_please.set()

    def stir(self) -> None:
        """An event arrived (called per event or batch; cheap): back to the short interval."""
        self.stirred = True
        self.quiet = False

    async def _advised(self, msg: Msg) -> None:
        log.info("%s: consumer advisory %s", self.label, msg.subject.split(".")[4])
        self._alerted()

    def _alerted(self) -> None:
        self.alert = ALERT_LOOKS
        self.quiet = False
        self.wake()

    async def listen(self) -> None:
        """Subscribe to the consumer's advisories (a sender's NATS permissions allow exactly these)."""
        if self.nc is None or self._subs:
            return
        self._reconnects = self.nc.stats["reconnects"]
        try:
            for subject in advisory_subjects(self.consumer):
                self._subs.append(await self.nc.subscribe(subject, cb=self._advised))
        except Exception as exc:  # NATS away: the watch polls at its short interval meanwhile
            log.info("%s: consumer advisories not subscribed (%s)", self.label, exc)
            self.idle_interval = self.interval

    async def unlisten(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _reconnected(self) -> bool:
        """Advisories sent while the connection was down were missed: look soon, and closely."""
        if self.nc is None or (count := self.nc.stats["reconnects"]) == self._reconnects:
            return False
        self._reconnects = count
        self.alert = ALERT_LOOKS
        return True

    def _due_after(self) -> float:
        if self.quiet and not self.alert and self._subs:
            return self.idle_wait
        return self.interval

    def pull_error(self, status: str, description: str) -> None:
        """The feed's pull errors: a deleted consumer is looked at at once. nats-server 2.15 answers a
        pull on a deleted consumer with 503 (no responders), older ones with 409 Consumer Deleted."""
        if status == "503" or (status == "409" and "deleted" in description.lower()):
            self.wake()

    def halt(self) -> None:
        """End `run` after the current pause or look. Cancelling alone is not enough on Python 3.11:
        a NATS request (asyncio.wait_for inside nats-py) whose answer lands with the cancellation
        swallows it, and the watch would look on forever while its engine waits for it to end."""
        self.halted = True
        self.wake()

    async def run(self) -> None:
        await self.listen()
        try:
            while not self.halted:
                await self._pause()
                if self.halted:
                    return
                self.now_please.clear()
                if self.alert:
                    self.alert -= 1
                await self.look()
        finally:
            await self.unlisten()

    async def _pause(self) -> None:
        """Until the next look is due, woken, or a reconnect; ticks at `interval` (no request) so that
        a `stir` ends a long idle wait within one short interval."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (left := started + self._due_after() - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self.interval)):
                    await self.now_please.wait()
            if self.now_please.is_set() or self._reconnected():
                return

    async def look(self, info: bus.api.ConsumerInfo | None = None) -> None:
        """Report pending events; follow a 410 stop or resume made elsewhere (another replica, redrive).
        `info`: the consumer's state as just read by the caller, instead of asking for it again."""
        if self.tidy is not None:
            await self.tidy()
        resting = self.quiet and not self.stirred  # nothing happened since the last (quiet) look
        self.quiet, stirred, self.stirred = False, self.stirred, False
        self.looks += 1
        try:
            if info is None:
                info = await self.js.consumer_info(bus.STREAM, self.consumer)
        except NotFoundError:
            await self._missing()
            await self._report(time.time())
            return
        except Exception as exc:  # NATS briefly away: keep the last state
            log.debug("%s: consumer info unavailable: %s", self.label, exc)
            return
        if self.lost:
            self.lost = False
            self.metrics.consumer_lost.set(0)
        if info.created != self.created:
            self.created, self.owed = info.created, True
        if self.owed:
            await self._pay_debt()
        pending = bus.pending_of(info)
        self.metrics.pending.set(pending)
        self.reporter.tally.observe_pending(time.time(), pending)
        await self._record_floor(info)
        await self.gone.follow(bus.gone_of(info))
        await self._report(time.time(), recount=not resting)
        # Rest while nothing can change unannounced: a stop is fine once recorded on the consumer (its
        # resume unpauses it: an advisory); a stop only this engine knows of is retried closely.
        stopped_unrecorded = self.gone.state.gone and not self.gone.recorded
        calm = not (stirred or self.stirred or self.owed or stopped_unrecorded)
        steady, self.last_pending = pending == self.last_pending, pending
        # A stopped Webhook rests at most `steady_interval`: a resume reaches it within that even where
        # its NATS user may not hear advisories (credentials minted before they were allowed).
        if calm and not pending and not self.gone.state.gone:
            # Jittered; the first rest after a start over all of it: 10,000 engines started together
            # look at spread times ever after.
            self.idle_wait = self.idle_interval * random.uniform(0.8 if self.rested else 0.05, 1.0)
            self.quiet = self.rested = True
        elif calm and steady and not (self.holding is not None and self.holding()):
            self.idle_wait = self.steady_interval * random.uniform(0.8, 1.0)
            self.quiet = True

    async def _missing(self) -> None:
        """The consumer was deleted outside hookline: report it, and recreate it from the last floor."""
        if not self.lost:
            self.lost = True
            self.metrics.consumer_lost.set(1)
            log.error("%s: consumer %s is missing (deleted outside hookline)", self.label, self.consumer)
        if self.consumer_spec is None:
            return
        try:
            await bus.ensure_consumer(self.js, self.consumer_spec, start_after=self.floor or None)
        except Exception as exc:  # NATS away: the watcher tries again
            log.warning("%s: could not recreate consumer %s (%s); will retry", self.label, self.consumer, exc)
            return
        self.metrics.consumer_recreated.inc()
        log.warning(
            "%s: consumer %s recreated (its floor: stream sequence %d)", self.label, self.consumer, self.floor
        )
        self.owed = True
        await self.look()

    async def _pay_debt(self) -> None:
        """Put back what the consumer is owed since it was made again; count what cannot be."""
        if self.consumer_spec is None:
            return
        try:
            replay = await pay_debt(self.js, self.consumer_spec)
        except Exception as exc:  # NATS away: the debt stays, the next watch pays it
            log.warning(
                "%s: recovering the events of consumer %s failed (%s); will retry",
                self.label,
                self.consumer,
                exc,
            )
            return
        self.owed = replay is not None and not replay.paid
        if replay is None:
            return
        if replay.replayed:
            self.metrics.events_recovered.inc(replay.replayed)
            log.warning("%s: %d events put back from the recovery stream", self.label, replay.replayed)
        if replay.lost:
            self.metrics.events_lost[replay.reason].inc(replay.lost)
            self.reporter.tally.lost(time.time(), replay.lost)
            log.error(
                "%s: %d events (at most) of consumer %s are lost (%s): not in the recovery window any more",
                self.label,
                replay.lost,
                self.consumer,
                replay.reason,
            )

    async def _record_floor(self, info: bus.api.ConsumerInfo) -> None:
        self.floor = max(self.floor, bus.floor_of(info))
        if self.floor == self.floor_recorded:
            return
        try:
            await bus.record_floor(self.js, self.consumer, self.floor)
        except Exception as exc:  # a hint for recreating a lost consumer; the next watch tries again
            log.debug("%s: consumer floor not recorded: %s", self.label, exc)
            return
        self.floor_recorded = self.floor

    async def _report(self, now: float, *, recount: bool = True) -> None:
        if not self.reporter.enabled:
            return
        if recount:  # a resting Webhook's count moves only with events (a redrive brings them)
            await self.dead_letters.recount(now)
        await self.reporter.report(now, consumer_missing=self.lost, gone=self.gone.state)
