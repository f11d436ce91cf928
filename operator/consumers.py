"""The Webhooks' JetStream consumers, over one NATS connection opened when first needed.

A NATS outage must not wedge the operator: every call is bounded in time and failures come out as
BusUnavailable, which handlers turn into a retry later (or, on deletion, into a warning).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hookline.sender import bus
from hookline.sender.bus import BusUnavailable
from hookline.sender.config import SenderConfig
from hookline.sender.retry import GoneState

T = TypeVar("T")


class Consumers:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._lock = asyncio.Lock()

    async def _jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._nc = await bus.connect(self.url, name="hookline-operator", connect_timeout=self.timeout)
                self._js = self._nc.jetstream(timeout=self.timeout)
                self._stream_ready = False
            if not self._nc.is_connected:
                raise BusUnavailable(f"NATS at {self.url} is not connected (reconnecting); retrying later")
            assert self._js is not None
            return self._js

    async def _call(self, what: str, fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout * 2):
                js = await self._jetstream()
                if not self._stream_ready:
                    # The stream exists before any consumer; ingest owns its retention settings.
                    await bus.ensure_stream(js, update_existing=False)
                    self._stream_ready = True
                return await fn(js)
        except BusUnavailable:
            raise
        except Exception as exc:  # nats-py raises many kinds (timeouts, API errors, connection errors)
            raise BusUnavailable(f"{what} failed at NATS {self.url}: {exc or type(exc).__name__}") from exc

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

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()
