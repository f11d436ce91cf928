"""The delivery loop of one Webhook: take events from its consumer, POST each (or each batch), then do
what `settlement.settle` says: ack, retry later, dead-letter, or stop the Webhook.

Workers (this replica's share of `maxInFlight`; the feed reads ahead: ratelimit.feed_capacity) share
one SafeHTTPClient. Before each request a worker passes the Retry-After gate (a 429/503 pauses every
worker) and takes a slot of the token bucket (this replica's share of `maxRequestsPerSecond`). Only a
2xx, or a dead letter durably stored, acks; anything else leaves the event in JetStream, so a crash
loses nothing. A 2xx is acknowledged before anything else is done with it: a crash can forget only a
2xx whose answer had not been read yet, or whose ack still waited its millisecond in the connection's
outbox (bus/outbox.py; the receiver then gets the event again, with the same id).

An event's attempt number is 1 + the attempts receivers failed before (ledger.py, kept in NATS), never
JetStream's delivery count: an event handed out again after a crash or a stop was not a failed attempt.

Without `spec.delivery.batch` each event is a request of its own; with it the batch assembler
(batching.py) groups them and each request carries a batch. Either way one path sends a request and
executes its settlement (a pure decision, settlement.py), with one gate pass and one token per request.
An event of a bundle (several in one stored message) is a member that settles in its bundle (bus/bundles.py).
Collaborators, each in its own module: the POST and, in a pool, a place among the host's requests to
the same receiver (outbound.py), dead letters (deadletters.py), the 410 / circuit-breaker stop
(gone.py), attempt log and health reports (reporting.py), the consumer watch (watch.py: pending
events, a lost consumer, a stop or resume made elsewhere); timings are `EngineSettings` (settings.py).
On stop the engine takes no new events, lets requests in progress finish (each is bounded by the
Webhook's timeout), and NAKs what it had received but not started (also events waiting out a
Retry-After or a rate-limit slot), so another replica or the next start delivers them right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hookline.api import WebhookSpec
from hookline.sender import bus
from hookline.sender.bus.attemptlog import AttemptLog
from hookline.sender.bus.deadletter import DeadLetter
from hookline.sender.bus.failedattempts import FailedAttemptStore
from hookline.sender.delivery import retry
from hookline.sender.delivery.batching import BatchAssembler, Item
from hookline.sender.delivery.deadletters import DeadLetterPublisher
from hookline.sender.delivery.gone import GoneSwitch
from hookline.sender.delivery.ledger import AttemptLedger
from hookline.sender.delivery.outbound import Outbound
from hookline.sender.delivery.ratelimit import (
    BackoffGate,
    TokenBucket,
    feed_capacity,
    per_replica_in_flight,
    per_replica_rate,
)
from hookline.sender.delivery.reporting import AttemptReporter
from hookline.sender.delivery.settings import DEFAULT_ENGINE_SETTINGS, EngineSettings
from hookline.sender.delivery.settlement import Carried, Settlement, settle
from hookline.sender.delivery.watch import ConsumerWatch
from hookline.sender.model.credentials import Credentials
from hookline.sender.model.events import Event, EventError
from hookline.sender.model.outcomes import AttemptOutcome
from hookline.sender.model.request import Delivery
from hookline.sender.observe.metrics import WebhookMetrics, observe_ages
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.sharing import OriginGate

log = logging.getLogger(__name__)

__all__ = ["Engine"]


class Engine:
    """One Webhook's consumer loop; `run(stop)` returns after a clean drain."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        consumer: str,
        spec: WebhookSpec,
        client: SafeHTTPClient,
        metrics: WebhookMetrics,
        *,
        signing_key: Credentials | bytes | None = None,
        namespace: str = "default",
        name: str = "",
        replicas: int = 1,
        max_age_seconds: float = retry.DEFAULT_MAX_AGE_SECONDS,
        label: str = "",
        consumer_spec: bus.ConsumerSpec | None = None,
        attempt_log: AttemptLog | None = None,
        settings: EngineSettings = DEFAULT_ENGINE_SETTINGS,
        origin_gate: OriginGate | None = None,
        consumer_info: bus.api.ConsumerInfo | None = None,
    ) -> None:
        self.nc = nc
        # What the host learnt of the consumer just before (start_engine): the first look's answer,
        # one request fewer per start (a replica starting 100 engines asked nats-server 100 times).
        self._consumer_at_start = consumer_info
        self.consumer = consumer
        self.spec = spec
        self.metrics = metrics
        self.settings = settings
        self.name = name or consumer
        self.label = label or f"{namespace}/{self.name}"
        self.delivery = Delivery(spec, signing_key)
        limits = spec.delivery
        self.policy = retry.RetryPolicy.from_spec(limits, max_age_seconds=max_age_seconds)
        rate = per_replica_rate(limits.max_requests_per_second, replicas)
        # A message may wait this long in our hands (for a token, or a Retry-After) before JetStream
        # would redeliver it; waits longer than half of it send a progress ack.
        self.ack_wait = bus.ack_wait_seconds(limits.timeout_seconds)
        self.workers = per_replica_in_flight(
            limits.max_in_flight, replicas, rate=rate, within=self.ack_wait / 2
        )
        self.bucket = TokenBucket(rate)
        self.gate = BackoffGate()
        # Requests to this Webhook's receiver; in flight capped with the host's other engines' (a pool).
        self.outbound = Outbound(
            client, self.delivery.url, self.delivery.timeout, metrics, origin_gate, self.ack_wait / 2
        )
        # Every failed attempt and a sample of successes go to the attempt log; the watch reports.
        self.reporter = AttemptReporter(
            attempt_log, namespace, self.name, url=self.delivery.url, label=self.label
        )
        self.dead_letters = DeadLetterPublisher(
            nc,
            js,
            metrics,
            self.reporter.tally,
            settings,
            namespace=namespace,
            name=self.name,
            max_attempts=self.policy.max_attempts,
            label=self.label,
        )
        # Each event's failed attempts as receivers answered them (the attempt number), kept in NATS.
        self.ledger = AttemptLedger(
            None if js is None else FailedAttemptStore(js, consumer),
            label=self.label,
            limit=settings.failed_attempts_remembered,
        )
        self.gone = GoneSwitch(
            js,
            consumer,
            metrics,
            url=self.delivery.url,
            paused=spec.paused,
            label=self.label,
            name=self.name,
            namespace=namespace,
            disable_after=limits.disable_after,
            on_change=lambda: self.watch.wake(),
            record_on_consumer=settings.manage_consumer,
        )
        # Messages in hand: workers' and read ahead, or with batches every worker's and one being assembled.
        self.assembler: BatchAssembler | None = None
        self.feed_capacity = feed_capacity(self.workers, rate=rate, within=self.ack_wait / 2)
        if limits.batch is not None:
            self.feed_capacity = min((self.workers + 1) * limits.batch.max_events, settings.batch_feed_limit)
            self.assembler = BatchAssembler(
                limits.batch,
                self.delivery,
                self.gate,
                settings,
                workers=self.workers,
                ack_wait=self.ack_wait,
                admit=self._admit,
                admit_at_once=self._admit_at_once,
                label=self.label,
            )
        self.watch = ConsumerWatch(
            js,
            consumer,
            metrics,
            gone=self.gone,
            reporter=self.reporter,
            dead_letters=self.dead_letters,
            consumer_spec=consumer_spec,
            settings=settings,
            label=self.label,
            nc=nc,
            holding=lambda: self.gate.paused or (self.feed is not None and self.feed.in_hand > 0),
        )
        self.feed: bus.MessageFeed | None = None
        self.running = False
        self.consuming = asyncio.Event()  # set once the feed pulls (hosts report Ready from it)
        self.stopping = asyncio.Event()  # set on stop: workers waiting for their turn give events back

    def readiness(self) -> str | None:
        if not self.nc.is_connected:
            return "not connected to NATS"
        if not self.running:
            return "not consuming yet"
        if self.watch.lost:
            return f"consumer {self.consumer} is missing; recreating it"
        return None

    @property
    def outbox(self) -> bus.Outbox:  # the connection's: the acks of all engines on it go out together
        return bus.outbox_of(self.nc)

    async def run(self, stop: asyncio.Event) -> None:
        feed = self.feed = bus.MessageFeed(
            self.nc,
            self.consumer,
            self.feed_capacity,
            expires=self.settings.pull_expires_seconds,
            keep_after=self.ack_wait / 3,
            on_error=self.watch.pull_error,
            bundles=bus.BundleBook(self.nc, self.ledger.store, label=self.label),
        )
        await self.reporter.restore()
        # A Webhook stopped by a 410 before this start stays stopped.
        info, self._consumer_at_start = self._consumer_at_start, None
        await self.watch.look(info)
        self.gone.attach(feed)
        await feed.start()
        self.watch.tidy = self.assembler.tidy if self.assembler else feed.keep_waiting  # at each look
        work = self._work_events if self.assembler is None else self._work_batches
        workers = [asyncio.create_task(work(feed), name=f"deliver {i}") for i in range(self.workers)]
        if self.assembler is not None:
            workers.append(asyncio.create_task(self.assembler.run(feed), name="assemble batches"))
        watcher = asyncio.create_task(self.watch.run(), name="watch consumer")
        self.running = True
        self.consuming.set()
        try:
            await stop.wait()
        finally:
            self.running = False
            self.watch.halt()
            watcher.cancel()
            # Stop pulling first (a NAK before that would bring the event straight back to us); then
            # events received but not started, or waiting for their turn, go back for redelivery.
            unstarted = await feed.stop()
            self.stopping.set()
            self.outbound.stop()  # workers in line for the receiver hand their events back
            for msg in unstarted:
                with contextlib.suppress(Exception):
                    await msg.nak()
            if unstarted:
                log.info("%s: returned %d unstarted events to the stream", self.label, len(unstarted))
            # Each worker finishes the request it is on (bounded by the timeout), then meets a None
            # (with batches the assembler gives back what it holds, then stops the workers).
            for _ in workers if self.assembler is None else (None,):
                feed.queue.put_nowait(None)
            await asyncio.gather(*workers, watcher, return_exceptions=True)
            await asyncio.gather(self.outbox.flush(), return_exceptions=True)  # the last acks, then close

    # --- the workers ---------------------------------------------------------------------------------

    async def _work_events(self, feed: bus.MessageFeed) -> None:
        """Without batches: each message is a request of its own."""
        queue = feed.queue
        while (msg := await queue.get()) is not None:
            await self._guarded((msg,), self._deliver_event(msg), feed, "an event")

    async def _work_batches(self, feed: bus.MessageFeed) -> None:
        assert self.assembler is not None
        while (items := await self.assembler.ready.get()) is not None:
            msgs = [item.msg for item in items]
            await self._guarded(msgs, self._deliver_batch(items), feed, "a batch")

    async def _guarded(
        self, msgs: Sequence[Msg], delivering: Awaitable[None], feed: bus.MessageFeed, what: str
    ) -> None:
        """Never let one event or batch kill a worker: on an unexpected error JetStream redelivers it."""
        self.watch.stir()
        try:
            await delivering
        except Exception:
            log.exception("%s: unexpected error delivering %s; it will be retried", self.label, what)
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=self.settings.redeliver_after_failure_seconds)
        finally:
            feed.release(len(msgs))

    async def _deliver_event(self, msg: Msg) -> None:
        try:
            event = Event.from_bytes(msg.data)
        except EventError as exc:
            # Not an event ingest published (nothing can ever deliver it): take it out of the loop.
            log.error("%s: dropping undecodable message on %s: %s", self.label, msg.subject, exc)
            await msg.term()
            return
        try:
            failed = await self.ledger.arrived(msg)
        except bus.BusUnavailable as exc:
            await self._hand_back_uncounted(msg, exc)
            return
        items = (Item(msg, event),)
        if not await self._clear_to_send(items):
            return
        pending = self.dead_letters.left(msg, event, failed)
        if pending is not None:
            await self._store_dead_letter(msg, event, *pending)
            return
        await self._send(items, batched=False)

    async def _hand_back_uncounted(self, msg: Msg, exc: BaseException) -> None:
        """An event whose failed attempts NATS cannot tell now is not sent: a guess too high would
        dead-letter it early, one too low would send it more than maxAttempts times."""
        log.warning("%s: %s; the event is tried again later", self.label, exc)
        with contextlib.suppress(Exception):
            await msg.nak(delay=self.settings.redeliver_after_failure_seconds)

    async def _store_dead_letter(self, msg: Msg, event: Event, record: DeadLetter, tries: int = 0) -> None:
        """Store the dead letter (then it is acked), and drop the event's failed-attempt record."""
        if await self.dead_letters.store(msg, event, record, tries):
            await self.ledger.settled((msg,))

    async def _deliver_batch(self, items: Sequence[Item]) -> None:
        if await self._clear_to_send(items):
            await self._send(items, batched=True)

    def _admit_at_once(self, msg: Msg) -> Event | None:
        """`_admit`'s common case without a coroutine per event: a first delivery, nothing failed, no
        dead letter waiting. None: `_admit` decides (and deals with what is wrong)."""
        if self.ledger.nothing_failed(msg):
            with contextlib.suppress(EventError):
                event = Event.from_bytes(msg.data)
                return event if self.dead_letters.left(msg, event, None) is None else None
        return None

    async def _admit(self, msg: Msg, feed: bus.MessageFeed) -> Event | None:
        """For the assembler: the event of a message, or None when it was dealt with here (undecodable,
        or only its dead letter is left to store); then it is released too."""
        try:
            event = Event.from_bytes(msg.data)
        except EventError as exc:
            log.error("%s: dropping undecodable message on %s: %s", self.label, msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.term()
            feed.release()
            return None
        try:
            failed = await self.ledger.arrived(msg)
        except bus.BusUnavailable as exc:
            await self._hand_back_uncounted(msg, exc)
            feed.release()
            return None
        pending = self.dead_letters.left(msg, event, failed)
        if pending is None:
            return event
        try:
            await self._store_dead_letter(msg, event, *pending)
        except Exception:
            log.exception("%s: unexpected error storing a dead letter; it will be retried", self.label)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.settings.redeliver_after_failure_seconds)
        finally:
            feed.release()
        return None

    # --- one request ---------------------------------------------------------------------------------

    async def _clear_to_send(self, items: Sequence[Item]) -> bool:
        """Wait for this request's turn; False when its events were handed back instead (stopping, or
        the Webhook is stopped)."""
        msgs = [item.msg for item in items]
        if self.stopping.is_set() or not await self._wait_for_turn(msgs):
            for msg in msgs:  # stopping: another replica or the next start takes them right away
                await msg.nak()
            return False
        if self.gone.state.gone:
            # They wait in the consumer (paused by then); the delay keeps them from bouncing straight back.
            for msg in msgs:
                await msg.nak(delay=self.settings.redeliver_after_failure_seconds)
            return False
        return True

    async def _wait_for_turn(self, msgs: Sequence[Msg]) -> bool:
        """Wait out a Retry-After pause, then for a rate-limit slot (again if a pause began meanwhile).

        Through a pause JetStream is told the events are in progress, so they are not redelivered.
        False when the engine is stopping: the caller hands the events back.
        """
        while True:
            while (left := self.gate.remaining()) > 0:
                if not await self._sleep_unless_stopping(min(left, self.ack_wait / 2)):
                    return False
                if self.gate.paused:
                    for held in msgs:
                        await held.in_progress()
            delay = self.bucket.reserve()
            if delay > 0 and not await self._sleep_unless_stopping(delay):
                return False
            if not self.gate.paused:
                return True

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        return not self.stopping.is_set()

    async def _send(self, items: Sequence[Item], *, batched: bool) -> None:
        """One request for `items` (one event, or a batch): render and sign, send, classify, record the
        attempt, settle, and execute the settlement."""
        events = [item.event for item in items]
        if not await self.outbound.take([item.msg for item in items]):
            return
        try:
            await self._send_now(items, events, batched=batched)
        finally:
            self.outbound.give_back()

    async def _send_now(self, items: Sequence[Item], events: list[Event], *, batched: bool) -> None:
        batch_id: str | None = None
        if batched:
            batch_id, body, headers = self.delivery.build_batch(events, time.time(), [i.part for i in items])
        else:
            body, headers = self.delivery.build(events[0], time.time())
        status, retry_after, error, answer, took = await self.outbound.post(body, headers)
        outcome = retry.classify(status, error)
        msgs = [item.msg for item in items]
        if outcome.succeeded:  # first: until the server has the ack (outbox.py), a crash forgets the 2xx
            await self.outbox.ack(msgs)
        metrics = self.metrics
        metrics.attempts[outcome.kind].inc()
        metrics.request_events.observe(len(items))
        now = time.time()
        carried = [Carried(self.ledger.failed_before(msg) + 1, bus.stored_at(msg)) for msg in msgs]
        attempt = max(c.attempt for c in carried)
        if not outcome.succeeded:  # counted in NATS before it is acted on: a crash after it still counts it
            await self.ledger.failed(msgs, outcome, now)
        await self.reporter.note(events, attempt, outcome, took, answer, now, batch_id)
        settlement = settle(
            outcome,
            carried,
            now,
            self.policy,
            retry_after,
            failing_since=self.reporter.tally.failing_since,
            disable_after_seconds=self.spec.delivery.disable_after_seconds,
        )
        await self._settle(items, carried, outcome, settlement, now, batch_id)

    async def _settle(
        self,
        items: Sequence[Item],
        carried: Sequence[Carried],
        outcome: AttemptOutcome,
        settlement: Settlement,
        now: float,
        batch_id: str | None,
    ) -> None:
        """Execute `settlement` for the events one request carried (in the order they were carried)."""
        if settlement.pause_all:
            self.gate.pause_for(settlement.pause_all)
            log.warning(
                "%s: %s, every request paused for %.0fs", self.label, outcome.detail, settlement.pause_all
            )
        if settlement.stop_cause is not None:
            await self.gone.trip(settlement.stop_cause, items[0].event.id, now)
        retried: list[int | str] = []
        delivered: list[float] = []  # when the stream stored each event acked (in _send, on the 2xx)
        for item, one, decision in zip(items, carried, settlement.decisions, strict=True):
            msg, event = item.msg, item.event
            kind = decision.kind
            if kind is retry.DecisionKind.ACK:
                delivered.append(one.stored_at)
            elif kind is retry.DecisionKind.RETRY:
                if batch_id is None:
                    log.info(
                        "%s: event %s attempt %d failed (%s), retry in %.0fs",
                        self.label,
                        event.id,
                        one.attempt,
                        outcome.detail,
                        decision.delay,
                    )
                await msg.nak(delay=decision.delay)
                retried.append(bus.event_key(msg))
            else:
                assert decision.reason is not None
                record = self.dead_letters.record(msg, event, outcome, decision.reason, now, one.attempt)
                await self._store_dead_letter(msg, event, record)
        if delivered:  # counted once per request
            self.metrics.deliveries["delivered"].inc(len(delivered))
            observe_ages(self.metrics.latency, now, delivered)
        if outcome.succeeded:
            await self.ledger.settled([item.msg for item in items])
        if batch_id is not None and retried:
            assert self.assembler is not None
            delay = settlement.retry_delay or 0.0
            log.info(
                "%s: batch %s (%d events) failed (%s); %d retried in %.0fs",
                self.label,
                batch_id,
                len(items),
                outcome.detail,
                len(retried),
                delay,
            )
            self.assembler.remember_group(retried, delay)
