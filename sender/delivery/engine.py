"""The delivery loop of one Webhook: take events from its consumer, POST each (or each batch), then do
what `settlement.settle` says: ack, retry later, dead-letter, or stop the Webhook after a 410 Gone.

Workers (this replica's share of `maxInFlight`) share one SafeHTTPClient (one keep-alive session).
Before each request a worker passes the Retry-After gate (a 429/503 pauses every worker) and takes a
slot of the token bucket (this replica's share of `maxRequestsPerSecond`). Only a 2xx, or a dead letter
durably stored, acks; anything else leaves the event in JetStream, so a crash loses nothing.

A 410 stops pulling at once and records the stop on the consumer (bus.mark_gone), which also pauses
it for every replica and for the next start. The watcher that reports `hookline_pending_events`
also reads that record, so a stop made by another replica, or a resume (`hookline redrive --resume`),
reaches this one within `watch_interval`.

A dead letter NATS does not store is tried again (the event is NAKed with a delay, never POSTed
again: the engine remembers it by stream sequence, and an event past maxAttempts is not POSTed after
a restart either); after `DEAD_LETTER_MAX_TRIES` the engine logs an error, counts
`hookline_dead_letter_failures_total` and keeps the event, trying again only every
`DEAD_LETTER_KEPT_DELAY_SECONDS`.

A consumer deleted behind hookline's back is noticed within seconds (a pull request answered "409
Consumer Deleted" wakes the watcher; it also looks every `watch_interval`): `/readyz` turns false,
`hookline_consumer_lost` is 1, and the consumer is recreated from its last ack floor (bus.ensure_consumer),
so the events the stream still holds for it are delivered; `hookline_consumer_recreated_total` counts it.

With `spec.delivery.batch` one assembler task groups the messages into batches (up to maxEvents
events and maxBytes bytes, the first event waiting at most maxWaitMilliseconds) and the workers send a
batch per request: one Retry-After gate pass and one token per request, one attempt record, one
settlement (sender/settlement.py) for all its events. The events of a failed batch that are retried
are remembered as a group; when JetStream hands them back (together, after the same delay) they are
sent again as the same batch, with the same batch id. After a restart the group is forgotten and the
events are batched afresh (another set of events, so another batch id).

What each request's outcome means for its events (ack, retry after a delay, dead-letter, pause every
request, stop as gone) is `settlement.settle`, a pure function; `_settle` only executes it.

On stop the engine takes no new events, lets requests in progress finish (each is bounded by the
Webhook's timeout), and NAKs what it had received but not started (also events waiting out a
Retry-After or a rate-limit slot), so another replica or the next start delivers them right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hookline.api import WebhookSpec
from hookline.sender import bus
from hookline.sender.bus.attemptlog import AttemptLog
from hookline.sender.bus.deadletter import DeadLetter, count_dead_letters, publish_dead_letter
from hookline.sender.delivery import retry
from hookline.sender.delivery.ratelimit import (
    BackoffGate,
    TokenBucket,
    per_replica_in_flight,
    per_replica_rate,
)
from hookline.sender.delivery.settlement import Carried, Settlement, settle
from hookline.sender.model import outcomes
from hookline.sender.model.deliveryhealth import DeliveryTally, HealthReport, attempt_record
from hookline.sender.model.events import Event, EventError
from hookline.sender.model.request import Delivery
from hookline.sender.model.wire import batch_size
from hookline.sender.observe.metrics import WebhookMetrics
from hookline.sender.transport.client import SafeHTTPClient

log = logging.getLogger(__name__)

# A dead letter NATS did not confirm, or an unexpected error: the event comes back after this long.
REDELIVER_AFTER_FAILURE_SECONDS = 5.0
DEAD_LETTER_MAX_TRIES = 5
# The stream's count of this Webhook's dead letters is read again this often (a redrive lowers it);
# in between the engine counts its own.
DEAD_LETTER_RECOUNT_SECONDS = 600.0
DEAD_LETTER_KEPT_DELAY_SECONDS = 3600.0
# Batches: messages in hand at most (they count as ack-pending, next to the retries that wait).
BATCH_FEED_LIMIT = bus.MAX_ACK_PENDING // 2
# How long the first returning event of a failed batch waits for the others (at least maxWait).
REGROUP_WAIT_SECONDS = 1.0

__all__ = ["Delivery", "Engine"]  # Delivery lives in sender/delivery.py; importable from here too


@dataclass(slots=True)
class _Item:
    """One event of a batch being assembled: its message, the event, its rendered part."""

    msg: Msg
    event: Event
    part: bytes


@dataclass(eq=False)
class _Group:
    """The retried events of a failed batch (stream sequences, in the batch's order)."""

    members: tuple[int, ...]
    expires: float  # loop time after which members that never came back are forgotten


# One carried event as `_settle` executes it: the message, the event, when it entered the stream.
Carrying = tuple[Msg, Event, float]


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
        signing_key: bytes | None = None,
        namespace: str = "default",
        name: str = "",
        replicas: int = 1,
        max_age_seconds: float = retry.DEFAULT_MAX_AGE_SECONDS,
        watch_interval: float = 5.0,
        label: str = "",
        consumer_spec: bus.ConsumerSpec | None = None,
        attempt_log: AttemptLog | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.consumer = consumer
        self.spec = spec
        self.client = client
        self.metrics = metrics
        self.namespace = namespace
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
        self.batch = limits.batch
        # Messages in hand: one per worker, or with batches every worker's batch and one being assembled.
        self.feed_capacity = (
            self.workers
            if self.batch is None
            else min((self.workers + 1) * self.batch.max_events, BATCH_FEED_LIMIT)
        )
        self.ready: asyncio.Queue[list[_Item] | None] = asyncio.Queue()  # assembled batches
        self.assembling: list[_Item] = []  # the batch the assembler is filling
        self.regroup: dict[int, _Group] = {}  # stream sequence -> the failed batch it belongs to
        self.gone = outcomes.GoneState()
        self.gone_recorded = False  # the stop is on the consumer (so a missing record means a resume)
        self.watch_interval = watch_interval
        self.consumer_spec = consumer_spec  # None: a lost consumer is reported, not recreated
        self.consumer_lost = False
        self.floor = 0  # the consumer's last ack floor seen (stream sequence)
        self.floor_recorded = -1
        self.watch_now = asyncio.Event()
        # Dead letters NATS did not store yet, by the event's stream sequence: (record, tries).
        self.unstored: dict[int, tuple[DeadLetter, int]] = {}
        # Delivery health (sender/attempts.py): every failed attempt and a sample of successes go to the
        # attempt log; the watcher reports the tally when it changed.
        self.attempt_log = attempt_log
        self.tally = DeliveryTally(namespace, self.name)
        self.last_report: HealthReport | None = None
        self.dead_letters_counted_at = -math.inf
        self.feed: bus.MessageFeed | None = None
        self.running = False
        self.consuming = asyncio.Event()  # set once the feed pulls (hosts report Ready from it)
        self.stopping = asyncio.Event()  # set on stop: workers waiting for their turn give events back

    def readiness(self) -> str | None:
        if not self.nc.is_connected:
            return "not connected to NATS"
        if not self.running:
            return "not consuming yet"
        if self.consumer_lost:
            return f"consumer {self.consumer} is missing; recreating it"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        feed = self.feed = bus.MessageFeed(
            self.nc, self.consumer, self.feed_capacity, on_error=self._pull_error
        )
        if self.attempt_log is not None and (previous := await self.attempt_log.previous()) is not None:
            self.tally.restore(previous)
        await self._watch_once()  # a Webhook stopped by a 410 before this start stays stopped
        feed.pause(self.spec.paused or self.gone.gone)
        await feed.start()
        if self.batch is None:
            work = self._work
            workers = [asyncio.create_task(work(feed), name=f"deliver {i}") for i in range(self.workers)]
        else:
            work = self._work_batches
            workers = [asyncio.create_task(work(feed), name=f"deliver {i}") for i in range(self.workers)]
            workers.append(asyncio.create_task(self._assemble(feed), name="assemble batches"))
        watcher = asyncio.create_task(self._watch(), name="watch consumer")
        self.running = True
        self.consuming.set()
        try:
            await stop.wait()
        finally:
            self.running = False
            watcher.cancel()
            # Stop pulling first (a NAK before that would bring the event straight back to us); then
            # events received but not started, or waiting for their turn, go back for redelivery.
            unstarted = await feed.stop()
            self.stopping.set()
            for msg in unstarted:
                with contextlib.suppress(Exception):
                    await msg.nak()
            if unstarted:
                log.info("%s: returned %d unstarted events to the stream", self.label, len(unstarted))
            # Each worker finishes the request it is on (bounded by the timeout), then meets a None
            # (with batches the assembler gives back what it holds, then stops the workers).
            for _ in workers if self.batch is None else (None,):
                feed.queue.put_nowait(None)
            await asyncio.gather(*workers, watcher, return_exceptions=True)

    async def _work(self, feed: bus.MessageFeed) -> None:
        queue = feed.queue
        while (msg := await queue.get()) is not None:
            await self._handle(msg, feed)

    async def _handle(self, msg: Msg, feed: bus.MessageFeed) -> None:
        try:
            await self._deliver(msg)
        except Exception:  # never let one event kill a worker; JetStream redelivers it
            log.exception("%s: unexpected error delivering an event; it will be retried", self.label)
            with contextlib.suppress(Exception):
                await msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
        finally:
            feed.release()

    async def _deliver(self, msg: Msg) -> None:
        try:
            event = Event.from_bytes(msg.data)
        except EventError as exc:
            # Not an event ingest published (nothing can ever deliver it): take it out of the loop.
            log.error("%s: dropping undecodable message on %s: %s", self.label, msg.subject, exc)
            await msg.term()
            return
        if not await self._wait_for_turn(msg):
            await msg.nak()  # stopping: another replica or the next start takes it right away
            return
        if self.gone.gone:
            # It waits in the consumer (paused by then); the delay keeps it from bouncing straight back.
            await msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
            return
        meta = msg.metadata
        pending = self._dead_letter_left(msg, event)
        if pending is not None:
            await self._store_dead_letter(msg, event, *pending)
            return
        body, headers = self.delivery.build(event, time.time())
        status, retry_after, error, answer, took = await self._post(body, headers)
        outcome = retry.classify(status, error)
        metrics = self.metrics
        metrics.attempts[outcome.kind].inc()
        metrics.request_events.observe(1)
        now = time.time()
        await self._note_attempt(event, meta.num_delivered, outcome, took, answer, now)
        stored_at = meta.timestamp.timestamp()
        carried = (Carried(meta.num_delivered, stored_at),)
        await self._settle(
            ((msg, event, stored_at),), outcome, settle(outcome, carried, now, self.policy, retry_after), now
        )

    async def _post(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None, BaseException | None, bytes, float]:
        """One request: (status, Retry-After, error, answer, seconds); never raises for the request."""
        metrics = self.metrics
        metrics.in_flight.inc()
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        error: BaseException | None = None
        answer = b""
        try:
            response = await self.client.request(
                "POST",
                self.delivery.url,
                data=body,
                headers=headers,
                timeout=self.delivery.timeout,
                follow_redirects=False,
            )
            status = response.status
            retry_after = response.headers.get("Retry-After")
            answer = response.body
        except Exception as exc:  # classified by the caller; the client raises many kinds
            error = exc
        finally:
            metrics.in_flight.dec()
        took = time.perf_counter() - started
        metrics.duration.observe(took)
        return status, retry_after, error, answer, took

    # --- batches (spec.delivery.batch) ----------------------------------------------------------------

    def _dead_letter_left(self, msg: Msg, event: Event) -> tuple[DeadLetter, int] | None:
        """The dead letter (and its tries so far) still to be stored for this message, if that is all
        that is left of it: one NATS refused before, or one whose last attempt was made before a
        restart. None: the message is to be delivered."""
        meta = msg.metadata
        pending = self.unstored.get(meta.sequence.stream)
        if pending is None and meta.num_delivered > self.policy.max_attempts:
            outcome = outcomes.AttemptOutcome(
                outcomes.AttemptKind.HTTP_ERROR, None, "dead letter not stored earlier"
            )
            reason = outcomes.DeadLetterReason.MAX_ATTEMPTS
            pending = (self._dead_letter(msg, event, outcome, reason, time.time()), 0)
        return pending

    async def _admit(self, msg: Msg, feed: bus.MessageFeed) -> Event | None:
        """The event of a message for a batch, or None when it was dealt with here (undecodable,
        or only its dead letter is left to store): then it is released too."""
        try:
            event = Event.from_bytes(msg.data)
        except EventError as exc:
            log.error("%s: dropping undecodable message on %s: %s", self.label, msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.term()
            feed.release()
            return None
        pending = self._dead_letter_left(msg, event)
        if pending is None:
            return event
        try:
            await self._store_dead_letter(msg, event, *pending)
        except Exception:
            log.exception("%s: unexpected error storing a dead letter; it will be retried", self.label)
            with contextlib.suppress(Exception):
                await msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
        finally:
            feed.release()
        return None

    async def _assemble(self, feed: bus.MessageFeed) -> None:
        """Group the feed's messages into batches for the workers (`self.ready`).

        A batch is handed over when it holds maxEvents events, when the next event would take it past
        maxBytes, or maxWaitMilliseconds after its first event arrived (once the events already
        received are in). Events of a failed batch coming back are held until all of them are back
        (at most max(maxWait, REGROUP_WAIT_SECONDS)), then sent as that batch again.
        """
        assert self.batch is not None
        loop = asyncio.get_running_loop()
        queue = feed.queue
        fmt = self.delivery.format
        max_events = self.batch.max_events
        limit = self.batch.byte_limit
        wait = self.batch.max_wait_milliseconds / 1000
        regroup_wait = max(wait, REGROUP_WAIT_SECONDS)
        items: list[_Item] = []
        self.assembling = items
        size = 0  # bytes of the parts in `items`
        deadline = math.inf
        held: dict[_Group, tuple[dict[int, tuple[Msg, Event]], float]] = {}

        def hand_over() -> None:
            nonlocal items, size, deadline
            if items:
                self.ready.put_nowait(items)
            items, size, deadline = [], 0, math.inf
            self.assembling = items

        def hand_over_group(group: _Group) -> None:
            members, _ = held.pop(group)
            for sequence in group.members:
                if self.regroup.get(sequence) is group:
                    del self.regroup[sequence]
            order = [members[s] for s in group.members if s in members]
            self.ready.put_nowait(
                [_Item(m, e, self.delivery.part(e, index)) for index, (m, e) in enumerate(order)]
            )

        while True:
            if not queue.empty():  # the common case under load: no timer needed
                msg = queue.get_nowait()
            else:
                wake = min(deadline, min((d for _, d in held.values()), default=math.inf))
                try:
                    if wake == math.inf:
                        msg = await queue.get()
                    else:
                        async with asyncio.timeout_at(wake):
                            msg = await queue.get()
                except TimeoutError:
                    msg = False  # a deadline passed
            if msg is None:  # stopping: everything held goes back to the stream
                back = [i.msg for i in items] + [m for ms, _ in held.values() for m, _ in ms.values()]
                for m in back:
                    with contextlib.suppress(Exception):
                        await m.nak()
                feed.release(len(back))
                for _ in range(self.workers):
                    self.ready.put_nowait(None)
                return
            if msg is not False:
                try:
                    event = await self._admit(msg, feed)
                except Exception:  # never let one message stop the assembler
                    log.exception("%s: unexpected error taking an event; it will be retried", self.label)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
                    feed.release()
                    event = None
                if event is not None:
                    sequence = msg.metadata.sequence.stream
                    group = self.regroup.get(sequence)
                    if group is not None:
                        members, until = held.get(group) or ({}, loop.time() + regroup_wait)
                        members[sequence] = (msg, event)
                        held[group] = (members, until)
                        if len(members) == len(group.members):
                            hand_over_group(group)
                    else:
                        part = self.delivery.part(event, len(items))
                        if items and batch_size(size + len(part), len(items) + 1, fmt) > limit:
                            hand_over()
                            part = self.delivery.part(event, 0)
                        if not items:
                            deadline = loop.time() + wait
                        items.append(_Item(msg, event, part))
                        size += len(part)
                        if len(items) >= max_events:
                            hand_over()
            now = loop.time()
            # At the deadline, first take in what has already arrived (maxWait 0 batches those).
            if items and now >= deadline and (queue.empty() or now >= deadline + wait + 0.05):
                hand_over()
            if held:
                for group, (_, until) in list(held.items()):
                    if now >= until:  # some never came back (another replica took them): send the rest
                        hand_over_group(group)

    async def _work_batches(self, feed: bus.MessageFeed) -> None:
        while (items := await self.ready.get()) is not None:
            try:
                await self._deliver_batch(items)
            except Exception:  # never let one batch kill a worker; JetStream redelivers its events
                log.exception("%s: unexpected error delivering a batch; it will be retried", self.label)
                for item in items:
                    with contextlib.suppress(Exception):
                        await item.msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
            finally:
                feed.release(len(items))

    async def _deliver_batch(self, items: list[_Item]) -> None:
        msgs = [item.msg for item in items]
        if self.stopping.is_set() or not await self._wait_for_turn(msgs[0], msgs):
            for msg in msgs:  # stopping: another replica or the next start takes them right away
                await msg.nak()
            return
        if self.gone.gone:
            for msg in msgs:
                await msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
            return
        events = [item.event for item in items]
        ident, body, headers = self.delivery.build_batch(events, time.time(), [i.part for i in items])
        status, retry_after, error, answer, took = await self._post(body, headers)
        outcome = retry.classify(status, error)
        metrics = self.metrics
        metrics.attempts[outcome.kind].inc()
        metrics.request_events.observe(len(items))
        now = time.time()
        metas = [msg.metadata for msg in msgs]
        carried = [Carried(meta.num_delivered, meta.timestamp.timestamp()) for meta in metas]
        attempt = max(c.attempt for c in carried)
        await self._note_attempt(events[0], attempt, outcome, took, answer, now, batch=(ident, events))
        settlement = settle(outcome, carried, now, self.policy, retry_after)
        carrying = [(m, e, c.stored_at) for m, e, c in zip(msgs, events, carried, strict=True)]
        await self._settle(carrying, outcome, settlement, now, batch_id=ident)

    def _remember_group(self, sequences: list[int], delay: float) -> None:
        """The retried events of a failed batch come back as one batch (see `_assemble`)."""
        loop_time = asyncio.get_running_loop().time()
        group = _Group(tuple(sequences), loop_time + delay + self.ack_wait + REGROUP_WAIT_SECONDS)
        for sequence in sequences:
            self.regroup[sequence] = group

    async def _keep_waiting_batches(self) -> None:
        """Through a Retry-After pause, tell JetStream that events waiting in batches no worker holds
        yet are in progress (the workers do so for theirs), so it does not hand them out again."""
        if self.batch is None or not self.gate.paused:
            return
        waiting = [b for b in list(self.ready._queue) if b is not None]  # type: ignore[attr-defined]
        for item in [i for batch in waiting for i in batch] + list(self.assembling):
            with contextlib.suppress(Exception):
                await item.msg.in_progress()

    def _forget_groups(self) -> None:
        """Drop groups whose events did not come back (taken by another replica, or acked elsewhere)."""
        if not self.regroup:
            return
        now = asyncio.get_running_loop().time()
        for sequence in [s for s, g in self.regroup.items() if g.expires < now]:
            del self.regroup[sequence]

    async def _note_attempt(
        self,
        event: Event,
        attempt: int,
        outcome: outcomes.AttemptOutcome,
        took: float,
        answer: bytes,
        now: float,
        batch: tuple[str, Sequence[Event]] | None = None,
    ) -> None:
        """One attempt record per request; for a batch (batch id, its events) it names them all."""
        self.tally.record(now, outcome, answer)
        if not outcome.succeeded:
            await self._trip_breaker(event, now)
        if self.attempt_log is None:
            return
        successes = 1
        if outcome.succeeded and not (successes := self.tally.sample_success(now)):
            return
        if batch is None:
            event_id, event_type, event_ids = event.id, event.type, ()
        else:
            event_id, events = batch
            event_type = ",".join(sorted({e.type for e in events}))
            event_ids = tuple(e.id for e in events)
        record = attempt_record(
            at=now,
            event_id=event_id,
            event_type=event_type,
            attempt=attempt,
            outcome=outcome,
            duration=took,
            url=self.delivery.url,
            response=answer,
            successes=successes,
            event_ids=event_ids,
        )
        try:
            await self.attempt_log.record(record)
        except Exception as exc:  # a lost log line, never a lost event
            log.debug("%s: attempt not recorded: %s", self.label, exc)

    async def _report_health(self, now: float) -> None:
        """Tell the operator how deliveries go, when that changed since the last report."""
        if self.attempt_log is None:
            return
        if now - self.dead_letters_counted_at >= DEAD_LETTER_RECOUNT_SECONDS:
            try:  # the stream's count: redrive takes records out, and it survives restarts
                self.tally.dead_letters = await count_dead_letters(self.js, self.namespace, self.name)
                self.dead_letters_counted_at = now
            except Exception as exc:
                log.debug("%s: dead letters not counted: %s", self.label, exc)
        report = self.tally.report(now, consumer_missing=self.consumer_lost, gone=self.gone)
        if report.same_as(self.last_report):
            return
        try:
            await self.attempt_log.report(report)
        except Exception as exc:  # NATS away: the next watch reports again
            log.debug("%s: health not reported: %s", self.label, exc)
            return
        self.last_report = report

    async def _wait_for_turn(self, msg: Msg, batch: Sequence[Msg] = ()) -> bool:
        """Wait out a Retry-After pause, then for a rate-limit slot (again if a pause began meanwhile).

        Through a pause JetStream is told the event is in progress, so it is not redelivered.
        False when the engine is stopping: the caller hands the event back.
        """
        while True:
            while (left := self.gate.remaining()) > 0:
                if not await self._sleep_unless_stopping(min(left, self.ack_wait / 2)):
                    return False
                if self.gate.paused:
                    for held in batch or (msg,):
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

    async def _settle(
        self,
        carried: Sequence[Carrying],
        outcome: outcomes.AttemptOutcome,
        settlement: Settlement,
        now: float,
        batch_id: str | None = None,
    ) -> None:
        """Execute `settlement` for the events one request carried (in the order they were carried)."""
        decisions = settlement.decisions
        if settlement.pause_all:
            self.gate.pause_for(settlement.pause_all)
            log.warning(
                "%s: %s, every request paused for %.0fs", self.label, outcome.detail, settlement.pause_all
            )
        if settlement.stop_gone:
            await self._stop_for_gone(carried[0][1], now)
        retried: list[int] = []
        for (msg, event, stored_at), decision in zip(carried, decisions, strict=True):
            kind = decision.kind
            if kind is retry.DecisionKind.ACK:
                await msg.ack()
                self.metrics.deliveries["delivered"].inc()
                self.metrics.latency.observe(max(0.0, now - stored_at))
            elif kind is retry.DecisionKind.RETRY:
                if batch_id is None:
                    log.info(
                        "%s: event %s attempt %d failed (%s), retry in %.0fs",
                        self.label,
                        event.id,
                        msg.metadata.num_delivered,
                        outcome.detail,
                        decision.delay,
                    )
                await msg.nak(delay=decision.delay)
                retried.append(msg.metadata.sequence.stream)
            else:
                assert decision.reason is not None
                await self._store_dead_letter(
                    msg, event, self._dead_letter(msg, event, outcome, decision.reason, now), 0
                )
        if batch_id is not None and retried:
            delay = settlement.retry_delay or 0.0
            log.info(
                "%s: batch %s (%d events) failed (%s); %d retried in %.0fs",
                self.label,
                batch_id,
                len(carried),
                outcome.detail,
                len(retried),
                delay,
            )
            self._remember_group(retried, delay)

    def _dead_letter(
        self,
        msg: Msg,
        event: Event,
        outcome: outcomes.AttemptOutcome,
        reason: outcomes.DeadLetterReason,
        now: float,
    ) -> DeadLetter:
        meta = msg.metadata
        return DeadLetter.from_attempts(
            namespace=self.namespace,
            name=self.name,
            event=event.payload,
            reason=reason,
            last_outcome=outcome,
            attempts=meta.num_delivered,
            first_attempt_at=meta.timestamp.timestamp(),
            last_attempt_at=now,
            subject=msg.subject,
            source_sequence=meta.sequence.stream,
        )

    async def _store_dead_letter(self, msg: Msg, event: Event, record: DeadLetter, tries: int) -> None:
        """Publish the dead letter, then ack; if NATS does not store it, keep the event (not POSTed again)."""
        sequence = msg.metadata.sequence.stream
        try:
            await publish_dead_letter(self.js, record, max_payload=self.nc.max_payload)
        except Exception as exc:  # not stored: keep the event and try again later; nothing is lost
            tries += 1
            self.unstored[sequence] = (record, tries)
            if tries % DEAD_LETTER_MAX_TRIES:
                log.warning(
                    "%s: dead letter for %s not stored (%s); try %d of %d",
                    self.label,
                    event.id,
                    exc,
                    tries,
                    DEAD_LETTER_MAX_TRIES,
                )
                await msg.nak(delay=REDELIVER_AFTER_FAILURE_SECONDS)
                return
            self.metrics.dead_letter_failures.inc()
            log.error(
                "%s: dead letter for %s not stored after %d tries (%s); the event is kept in the stream "
                "and tried again in %.0fs",
                self.label,
                event.id,
                tries,
                exc,
                DEAD_LETTER_KEPT_DELAY_SECONDS,
            )
            await msg.nak(delay=DEAD_LETTER_KEPT_DELAY_SECONDS)
            return
        self.unstored.pop(sequence, None)
        await msg.ack()
        self.tally.dead_letters += 1
        reason = record.reason
        self.metrics.deliveries["dead_lettered"].inc()
        self.metrics.dead_letters[reason].inc()
        log.warning("%s: event %s dead-lettered (%s: %s)", self.label, event.id, reason, record.last_error)

    async def _trip_breaker(self, event: Event, now: float) -> None:
        """spec.delivery.disableAfter: only failures for that long stop the Webhook like a 410 does."""
        after = self.spec.delivery.disable_after_seconds
        since = self.tally.failing_since
        if after is None or since is None or now - since < after or self.gone.gone:
            return
        self._set_gone(self.gone.mark(now, event.id, self.delivery.url, cause=outcomes.DISABLED_CAUSE))
        log.warning(
            "%s: only failed attempts for %s (spec.delivery.disableAfter): deliveries stopped, events are "
            "kept. Resume with `hookline redrive %s -n %s --resume` once the receiver works again",
            self.label,
            self.spec.delivery.disable_after,
            self.name,
            self.namespace,
        )
        await self._record_gone()

    async def _stop_for_gone(self, event: Event, now: float) -> None:
        """Stop pulling at once, then record the stop on the consumer (the watcher retries if NATS fails)."""
        if self.gone.gone:
            return
        self._set_gone(self.gone.mark(now, event.id, self.delivery.url))
        log.warning(
            "%s: the receiver answered 410 Gone; deliveries stopped, undelivered events are kept. "
            "Resume with `hookline redrive %s -n %s --resume` once it accepts events again",
            self.label,
            self.name,
            self.namespace,
        )
        await self._record_gone()

    async def _record_gone(self) -> None:
        try:
            await bus.mark_gone(self.js, self.consumer, self.gone)
        except Exception as exc:  # the watcher tries again
            log.warning("%s: could not record the 410 stop on the consumer (%s); will retry", self.label, exc)
            return
        self.gone_recorded = True

    def _set_gone(self, state: outcomes.GoneState) -> None:
        self.gone = state
        self.watch_now.set()  # the health report tells the operator at once
        self.metrics.gone.set(state.metric_value)
        if self.feed is not None:
            self.feed.pause(self.spec.paused or state.gone)

    def _pull_error(self, status: str, description: str) -> None:
        if status == "409" and "deleted" in description.lower():
            self.watch_now.set()  # look at once instead of at the next interval

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.watch_interval):
                    await self.watch_now.wait()
            self.watch_now.clear()
            await self._watch_once()

    async def _consumer_missing(self) -> None:
        """The consumer was deleted outside hookline: report it, and recreate it from the last floor."""
        if not self.consumer_lost:
            self.consumer_lost = True
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
            "%s: consumer %s recreated from stream sequence %d", self.label, self.consumer, self.floor + 1
        )
        await self._watch_once()

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

    async def _watch_once(self) -> None:
        """Report pending events; follow a 410 stop or resume made elsewhere (another replica, redrive)."""
        self._forget_groups()
        await self._keep_waiting_batches()
        try:
            info = await self.js.consumer_info(bus.STREAM, self.consumer)
        except NotFoundError:
            await self._consumer_missing()
            await self._report_health(time.time())
            return
        except Exception as exc:  # NATS briefly away: keep the last state
            log.debug("%s: consumer info unavailable: %s", self.label, exc)
            return
        if self.consumer_lost:
            self.consumer_lost = False
            self.metrics.consumer_lost.set(0)
        pending = bus.pending_of(info)
        self.metrics.pending.set(pending)
        self.tally.observe_pending(time.time(), pending)
        await self._record_floor(info)
        stored = bus.gone_of(info)
        if stored.gone:
            self.gone_recorded = True
            if not self.gone.gone:
                log.warning(
                    "%s: stopped: the receiver answered 410 Gone (recorded on the consumer)", self.label
                )
                self._set_gone(stored)
        elif self.gone.gone and self.gone_recorded:
            log.info("%s: the 410 Gone stop was cleared; deliveries resume", self.label)
            self.gone_recorded = False
            self._set_gone(outcomes.GoneState())
        elif self.gone.gone:
            await self._record_gone()
        await self._report_health(time.time())
