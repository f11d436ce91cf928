"""The Webhooks' JetStream consumers, over one NATS connection opened when first needed.

A NATS outage must not wedge the operator: every call is bounded in time and failures come out as
ConsumerError carrying a BusProblem: transient (no connection, a timeout: retried soon, it passes by
itself) or permanent (NATS refused: a limit or its configuration; retried rarely, and the message
says what to change). Handlers turn it into the Ready condition and a retry (or, on deletion, a
warning).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from hookline.operator.rules.status import BusProblem
from hookline.sender import bus
from hookline.sender.bus import STREAM, BusUnavailable
from hookline.sender.bus.attemptlog import ensure_attempt_limits, health_bucket, health_key
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.model.config import SenderConfig
from hookline.sender.model.deliveryhealth import HealthReport
from hookline.sender.model.outcomes import GoneState

T = TypeVar("T")

# JetStream API error codes (nats-server's errors.json) that retrying alone cannot fix.
MAX_CONSUMERS = 10026
INSUFFICIENT_RESOURCES = 10023
STORAGE_FULL = 10047


class ConsumerError(BusUnavailable):
    """A consumer call failed; ``problem`` says whether it passes by itself and what to do."""

    def __init__(self, problem: BusProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def classify(what: str, url: str, exc: BaseException) -> BusProblem:
    """A NATS failure as a BusProblem; pure, so every error kind has a unit test."""
    cause = str(exc).strip() or type(exc).__name__  # nats-py timeouts stringify to ""
    if isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError):
        code = exc.err_code
        if code == MAX_CONSUMERS:
            advice = (
                f"the stream {STREAM} has as many consumers as it allows (one per verified Webhook): "
                "raise the chart value nats.streamMaxConsumers (ingest's --stream-max-consumers; ingest "
                "raises the stream's limit when it starts) or delete unused Webhooks; "
                "checked again every minute"
            )
        elif code in (INSUFFICIENT_RESOURCES, STORAGE_FULL):
            advice = (
                "JetStream has no room for another consumer: raise the server's or account's JetStream "
                "limits; checked again every minute"
            )
        else:
            advice = "check the NATS stream and consumer configuration; checked again every minute"
        detail = f"NATS refused it (err_code {code}: {exc.description or cause})"
        return BusProblem(f"{what} at {url} failed: {detail}; {advice}", permanent=True)
    return BusProblem(
        f"{what} at {url} failed: {cause}; the sender starts once NATS answers (checked again in 10 s)"
    )


async def _same(js: JetStreamContext) -> JetStreamContext:
    return js


class Consumers:
    def __init__(
        self, url: str, *, timeout: float = 5.0, auth: BusAuth | None = None, auth_pending: bool = False
    ) -> None:
        self.url = url
        self.timeout = timeout
        # The operator's NATS user (natsauth.py); `auth_pending`: read from the auth Secret once the
        # API answers (startup), connections wait for it (bounded by each call's time limit).
        self.auth = (auth or BusAuth()).with_inbox(inbox_prefix("operator"))
        self.auth_ready = asyncio.Event()
        if not auth_pending:
            self.auth_ready.set()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._lock = asyncio.Lock()

    def use_auth(self, auth: BusAuth) -> None:
        """The operator's user, once known (connections waiting for it go ahead)."""
        self.auth = auth.with_inbox(inbox_prefix("operator"))
        self.auth_ready.set()

    async def _jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                await self.auth_ready.wait()
                self._nc = await bus.connect(
                    self.url, name="hookline-operator", connect_timeout=self.timeout, auth=self.auth
                )
                self._js = self._nc.jetstream(timeout=self.timeout)
                self._stream_ready = False
            if not self._nc.is_connected:
                problem = BusProblem(f"NATS at {self.url} is not connected (reconnecting); retrying in 10 s")
                raise ConsumerError(problem)
            assert self._js is not None
            return self._js

    async def call(
        self, what: str, fn: Callable[[JetStreamContext], Awaitable[T]], *, within: float | None = None
    ) -> T:
        """Run `fn` on the JetStream context, bounded in time (`within` seconds, default twice the
        request timeout); failures come out as ConsumerError."""
        return await self._call(what, fn, within=within)

    async def _call(
        self, what: str, fn: Callable[[JetStreamContext], Awaitable[T]], *, within: float | None = None
    ) -> T:
        try:
            async with asyncio.timeout(within or self.timeout * 2):
                js = await self._jetstream()
                if not self._stream_ready:
                    # The stream exists before any consumer; ingest owns its retention settings.
                    await bus.ensure_stream(js, update_existing=False)
                    self._stream_ready = True
                return await fn(js)
        except ConsumerError:
            raise
        except Exception as exc:  # nats-py raises many kinds (timeouts, API errors, connection errors)
            raise ConsumerError(classify(what, f"NATS {self.url}", exc)) from exc

    async def ensure(self, cfg: SenderConfig) -> None:
        await self._call(f"creating consumer {cfg.nats.consumer}", lambda js: bus.ensure_consumer(js, cfg))

    async def delete(self, name: str) -> bool:
        return await self._call(f"deleting consumer {name}", lambda js: bus.delete_consumer(js, name))

    async def gone_state(self, name: str) -> GoneState:
        """The 410 Gone stop recorded on a consumer; not gone when the consumer does not exist yet."""

        async def read(js: JetStreamContext) -> GoneState:
            try:
                return await bus.read_gone(js, name)
            except NotFoundError:
                return GoneState()

        return await self._call(f"reading consumer {name}", read)

    async def clear_gone(self, name: str) -> bool:
        """Lift a 410 Gone stop (the senders notice within seconds); False if there was none."""
        return await self._call(f"resuming consumer {name}", lambda js: bus.clear_gone(js, name))

    async def health_reports(self) -> AsyncIterator[HealthReport]:
        """Every sender's latest health report, then each new one, until the watch breaks (the caller
        watches again). One watch for all Webhooks: no per-Webhook NATS call."""
        js = await self._call("opening the health bucket", _same)
        kv = await health_bucket(js)
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None or entry.value is None or entry.operation is not None:
                    continue  # the end-of-history marker, or a deleted key
                try:
                    yield HealthReport.from_bytes(entry.value)
                except (ValueError, TypeError):  # not a report this operator understands
                    continue
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def ensure_attempt_limits(self, max_age_seconds: float, max_bytes: int) -> None:
        await self._call(
            "setting the attempt log's limits",
            lambda js: ensure_attempt_limits(js, max_age_seconds, max_bytes),
        )

    async def forget_health(self, namespace: str, name: str) -> None:
        """Remove a deleted Webhook's health report (best effort: it expires by itself too)."""

        async def delete(js: JetStreamContext) -> None:
            kv = await health_bucket(js)
            await kv.delete(health_key(namespace, name))

        await self._call(f"forgetting the health report of {namespace}/{name}", delete)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()
