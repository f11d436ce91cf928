"""An engine's way out to its receiver: its place in the host's line for that origin, and the POST.

A pool replica's engines share a cap on requests in flight per origin. A worker waits for its place
before it signs a request (the signature's timestamp is the send's); through a long wait its events
are reported in progress, so JetStream does not hand them out again; when the engine stops, every
worker in line leaves it and hands its events back. Thousands of workers of a replica may wait at
once, so a wait is one future (one timer per engine sweeps the line), no task. The POST itself never
raises: its outcome is classified by the caller (retry.classify).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from nats.aio.msg import Msg
from yarl import URL

from hookline.sender.observe.metrics import WebhookMetrics
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.sharing import OriginGate, origin_of

PostResult = tuple[int | None, str | None, BaseException | None, bytes, float]


class _Stopped(Exception):
    """The engine stopped while a worker waited in line."""


class Outbound:
    """One engine's requests: through the shared gate (none: every turn is immediate), then POSTed."""

    def __init__(
        self,
        client: SafeHTTPClient,
        url: str,
        timeout: float,
        metrics: WebhookMetrics,
        gate: OriginGate | None,
        keep_every: float,
    ) -> None:
        self.client = client
        self.url = url
        self.timeout = timeout
        self.metrics = metrics
        self.gate = gate
        self.origin = origin_of(URL(url))
        self.keep_every = keep_every  # half of ack_wait
        # Workers in line: their events, and when JetStream last heard of them; one sweep for all.
        self._waiting: dict[asyncio.Future[None], tuple[Sequence[Msg], float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._reporting: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.posting = 0  # requests on their way
        # Both gauges read when scraped, not counted up and down per request (two metric updates
        # fewer per request; in a pool most requests wait in line, which made two more).
        metrics.in_flight.set_function(lambda: self.posting)
        metrics.waiting_for_receiver.set_function(lambda: len(self._waiting))

    async def take(self, msgs: Sequence[Msg]) -> bool:
        """A place for one request: True once it is this worker's (then `give_back` after the request);
        False when the engine stopped meanwhile: the events were handed back (NAK), as at any other
        wait, so the next engine takes them right away."""
        gate = self.gate
        if gate is None or gate.try_enter(self.origin, self):
            return True
        # The engine's loop, asked for once: asyncio.get_running_loop() makes a system call (getpid)
        # on every call, and in a busy pool most requests wait here.
        loop = self._loop or self._bind_loop()
        waiter = gate.queue(self.origin, self, loop)
        self._waiting[waiter] = (msgs, loop.time())
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.keep_every / 2, self._sweep)
        try:
            await waiter
            return True
        except BaseException as exc:
            gate.withdraw(self.origin, self, waiter)  # a place handed over meanwhile goes to the next in line
            if not isinstance(exc, _Stopped):
                raise
        finally:
            del self._waiting[waiter]
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak()
        return False

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def give_back(self) -> None:
        if self.gate is not None:
            self.gate.leave(self.origin, self)

    def stop(self) -> None:
        """Every worker in line leaves it (its `take` returns False)."""
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(_Stopped())

    def _sweep(self) -> None:
        """Events in line for `keep_every` since JetStream last heard of them are reported in progress
        (so within 1.5 x keep_every, inside ack_wait); again while workers wait."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._sweeper = None
        due: list[Msg] = []
        for waiter, (msgs, since) in self._waiting.items():
            if now - since >= self.keep_every:
                due.extend(msgs)
                self._waiting[waiter] = (msgs, now)
        if due:
            task = loop.create_task(_report_in_progress(due))
            self._reporting.add(task)
            task.add_done_callback(self._reporting.discard)
        if self._waiting:
            self._sweeper = loop.call_later(self.keep_every / 2, self._sweep)

    async def post(self, body: bytes, headers: dict[str, str]) -> PostResult:
        """One request: (status, Retry-After, error, answer, seconds); never raises for the request."""
        self.posting += 1
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        error: BaseException | None = None
        answer = b""
        try:
            response = await self.client.request(
                "POST", self.url, data=body, headers=headers, timeout=self.timeout, follow_redirects=False
            )
            status = response.status
            retry_after = response.headers.get("Retry-After")
            answer = response.body
        except Exception as exc:  # classified by the caller; the client raises many kinds
            error = exc
        finally:
            self.posting -= 1
        took = time.perf_counter() - started
        self.metrics.duration.observe(took)
        return status, retry_after, error, answer, took


async def _report_in_progress(msgs: Sequence[Msg]) -> None:
    for msg in msgs:
        with contextlib.suppress(Exception):  # not kept: JetStream hands it out again, nothing lost
            await msg.in_progress()
