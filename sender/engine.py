"""The delivery loop of one Webhook: take events from its consumer, POST each, ack or retry.

`maxInFlight` workers share one SafeHTTPClient (one keep-alive session). Each attempt ends in an
`AttemptResult`; `decide_attempt` (pure) turns that into ack or retry-with-delay, and only a 2xx
acks, so a receiver error or a crash leaves the event in JetStream. On stop the engine takes no new
events, lets requests in progress finish (each is bounded by the Webhook's timeout), and NAKs what
it had received but not started, so another replica or the next start delivers it right away.

Swapping in the full retry policy (issue 4, `retry.py`) means replacing `decide_attempt` and handling
the extra decision kinds in `Engine._settle`; nothing else here knows about the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hookline.sender import bus
from hookline.sender.config import WebhookSpec
from hookline.sender.events import Event, EventError
from hookline.sender.metrics import WebhookMetrics
from hookline.sender.safehttp import BlockedDestination, RequestTimeout, SafeHTTPClient, SafeHTTPError
from hookline.sender.signing import request_headers
from hookline.sender.wire import render_body

log = logging.getLogger(__name__)

# The interim retry schedule: 1 s, 2 s, 4 s, ... capped at 5 minutes, never giving up.
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one HTTP attempt ended. `outcome` is the `outcome` label of hookline_delivery_attempts_total."""

    outcome: Literal["success", "http_error", "timeout", "connection_error", "blocked"]
    status: int | None = None
    error: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Literal["ack", "retry"]
    delay: float = 0.0


def classify_attempt(
    status: int | None, error: BaseException | None, retry_after: str | None = None
) -> AttemptResult:
    """2xx is success; any other status an http_error; no response by the client's error kind."""
    if error is not None:
        if isinstance(error, BlockedDestination):
            return AttemptResult("blocked", error=str(error))
        if isinstance(error, (RequestTimeout, TimeoutError)):
            return AttemptResult("timeout", error="no response within the timeout")
        if isinstance(error, SafeHTTPError):
            return AttemptResult("connection_error", error=error.reason)
        return AttemptResult("connection_error", error=str(error) or type(error).__name__)
    if status is not None and 200 <= status < 300:
        return AttemptResult("success", status=status)
    return AttemptResult("http_error", status=status, error=f"HTTP {status}", retry_after=retry_after)


def retry_delay(attempt: int) -> float:
    """Delay after failed attempt number `attempt` (1-based): doubling from 1 s, capped."""
    return min(RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1), RETRY_CAP_SECONDS)


def decide_attempt(result: AttemptResult, attempt: int) -> Decision:
    """What to do with an event after attempt number `attempt` (1-based) ended in `result`."""
    if result.outcome == "success":
        return Decision("ack")
    return Decision("retry", retry_delay(attempt))


Decider = Callable[[AttemptResult, int], Decision]


class Delivery:
    """Everything about one Webhook's requests that is fixed: URL, format, headers, key, timeout."""

    def __init__(self, spec: WebhookSpec, signing_key: bytes | None) -> None:
        self.url = spec.url
        self.format = spec.format
        self.extra_headers = dict(spec.headers)
        self.key = signing_key
        self.timeout = float(spec.delivery.timeout_seconds)

    def build(self, event: Event, now: float) -> tuple[bytes, dict[str, str]]:
        content_type, body = render_body(event.payload, self.format)
        headers = request_headers(event.id, int(now), content_type, body, self.key, self.extra_headers)
        return body, headers


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
        decide: Decider = decide_attempt,
        pending_interval: float = 5.0,
        label: str = "",
    ) -> None:
        self.nc = nc
        self.js = js
        self.consumer = consumer
        self.spec = spec
        self.client = client
        self.metrics = metrics
        self.decide = decide
        self.delivery = Delivery(spec, signing_key)
        self.workers = spec.delivery.max_in_flight
        self.pending_interval = pending_interval
        self.label = label or consumer
        self.feed: bus.MessageFeed | None = None
        self.running = False

    def readiness(self) -> str | None:
        if not self.nc.is_connected:
            return "not connected to NATS"
        if not self.running:
            return "not consuming yet"
        return None

    async def run(self, stop: asyncio.Event) -> None:
        feed = self.feed = bus.MessageFeed(self.nc, self.consumer, self.workers)
        feed.pause(self.spec.paused)
        await feed.start()
        workers = [asyncio.create_task(self._work(feed), name=f"deliver {i}") for i in range(self.workers)]
        reporter = asyncio.create_task(self._report_pending(), name="pending")
        self.running = True
        try:
            await stop.wait()
        finally:
            self.running = False
            reporter.cancel()
            # Stop pulling first; events received but not started go back at once for redelivery.
            unstarted = await feed.stop()
            for msg in unstarted:
                with contextlib.suppress(Exception):
                    await msg.nak()
            if unstarted:
                log.info("%s: returned %d unstarted events to the stream", self.label, len(unstarted))
            # Each worker finishes the request it is on (bounded by the timeout), then meets a None.
            for _ in workers:
                feed.queue.put_nowait(None)
            await asyncio.gather(*workers, reporter, return_exceptions=True)

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
                await msg.nak(delay=RETRY_BASE_SECONDS)
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
        body, headers = self.delivery.build(event, time.time())
        metrics = self.metrics
        metrics.in_flight.inc()
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        error: BaseException | None = None
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
        except Exception as exc:  # classified below; the client raises many kinds
            error = exc
        finally:
            metrics.in_flight.dec()
        metrics.duration.observe(time.perf_counter() - started)
        result = classify_attempt(status, error, retry_after)
        metrics.attempts[result.outcome].inc()
        attempt = msg.metadata.num_delivered
        await self._settle(msg, event, result, self.decide(result, attempt), attempt)

    async def _settle(
        self, msg: Msg, event: Event, result: AttemptResult, decision: Decision, attempt: int
    ) -> None:
        if decision.kind == "ack":
            await msg.ack()
            self.metrics.deliveries["delivered"].inc()
            stored_at = msg.metadata.timestamp.timestamp()
            self.metrics.latency.observe(max(0.0, time.time() - stored_at))
            return
        log.info(
            "%s: event %s attempt %d failed (%s), retry in %.0fs",
            self.label,
            event.id,
            attempt,
            result.error,
            decision.delay,
        )
        await msg.nak(delay=decision.delay)

    async def _report_pending(self) -> None:
        while True:
            try:
                info = await self.js.consumer_info(bus.STREAM, self.consumer)
                self.metrics.pending.set(bus.pending_of(info))
            except Exception as exc:  # NATS briefly away: keep the last value
                log.debug("%s: consumer info unavailable: %s", self.label, exc)
            await asyncio.sleep(self.pending_interval)
