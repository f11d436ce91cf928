"""The leader election loop: wait for the Lease, then keep it (the rules are in rules/leadership.py).

main.serve() starts Kopf only once `acquire` returns True, and stops it when `keep` returns: the
Lease was taken by another replica, or could not be renewed within the renew deadline. The process
then exits at once (`hookline operator`), so a handler still running cannot write after a standby
may have taken over; Kubernetes restarts the pod, which waits as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from hookline.operator.adapters.leases import LeaseAPI, LeaseError
from hookline.operator.rules.leadership import (
    LeaseRecord,
    Move,
    lease_body,
    micro_time,
    next_move,
    record_of,
    released_body,
)
from hookline.operator.settings import LeaderElection

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Writes of a release on a fresh record when the one before met a Conflict (see `release`).
RELEASE_TRIES = 3


class LeaderElector:
    """One replica's side of the election. ``leading`` is set while it holds the Lease."""

    def __init__(self, api: LeaseAPI, election: LeaderElection, *, clock: Clock = time.monotonic) -> None:
        self.api = api
        self.election = election
        self.clock = clock
        self.leading = asyncio.Event()
        self.renewed_at = 0.0  # clock time of the last successful write of the Lease by this replica
        self._record: LeaseRecord | None = None
        self._seen: tuple[str, str | None, int] | None = None
        self._seen_at = 0.0

    def holds(self) -> bool:
        """Whether this replica can still count on the Lease: renewed within the renew deadline."""
        deadline = self.election.timing.renew_deadline_seconds
        return self.leading.is_set() and self.clock() - self.renewed_at < deadline

    async def _try(self) -> bool:
        """One step: read the Lease and create, take or renew it when the rules say so."""
        e = self.election
        lease = await self.api.get(e.namespace, e.name)
        record = record_of(lease)
        now = self.clock()
        if record is None or record.observed != self._seen:
            self._seen = None if record is None else record.observed
            self._seen_at = now
        move = next_move(record, e.identity, now - self._seen_at)
        if move is Move.WAIT:
            if self._record is None or self._record.holder != (record.holder if record else None):
                holder = record.holder if record else None
                log.info("leader election: %s holds Lease %s/%s; waiting", holder, e.namespace, e.name)
            self._record = record
            return False
        body = lease_body(e.namespace, e.name, e.identity, e.timing, record, micro_time())
        if move is Move.CREATE:
            written = await self.api.create(e.namespace, body)
        else:
            written = await self.api.replace(e.namespace, e.name, body)
        if written is None:  # another replica wrote first
            return False
        self._record = record_of(written)
        self.renewed_at = now
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the Lease (True) or ``stop`` is set (False)."""
        e = self.election
        while not stop.is_set():
            try:
                if await self._try():
                    self.leading.set()
                    log.info("leader election: %s leads (Lease %s/%s)", e.identity, e.namespace, e.name)
                    return True
            except LeaseError as exc:
                log.warning("leader election: %s; trying again", exc)
            await _sleep_or_stop(stop, e.timing.retry_seconds * (1 + 0.2 * random.random()))
        return False

    async def keep(self) -> str:
        """Renew the Lease every retry period until it is lost; returns why it was lost."""
        timing = self.election.timing
        while True:
            await asyncio.sleep(timing.retry_seconds)
            left = timing.renew_deadline_seconds - (self.clock() - self.renewed_at)
            try:
                # asyncio.timeout, not wait_for: no task of its own, which Kopf would take for one of
                # its handlers' hung tasks and cancel (or wait for) when it stops.
                async with asyncio.timeout(max(left, 0.0)):
                    if left > 0 and await self._try():
                        continue
            except (LeaseError, TimeoutError) as exc:
                log.warning("leader election: renewing failed: %s", exc or "no answer in time")
            holder = self._record.holder if self._record else ""
            if holder and holder != self.election.identity:
                reason = f"the Lease is held by {holder}"
            elif self.clock() - self.renewed_at >= timing.renew_deadline_seconds:
                reason = f"the Lease was not renewed within {timing.renew_deadline_seconds:g} s"
            else:
                continue
            self.leading.clear()
            return reason

    async def release(self) -> None:
        """Give the Lease up (a clean stop), so a standby takes it without waiting for it to expire.

        A renewal cut short by the stop may have been written without this replica reading the answer:
        its record is then stale and the release a Conflict. The Lease is read again and, while this
        replica still holds it, released on the fresh record (a few tries)."""
        if not self.leading.is_set() or self._record is None:
            return
        self.leading.clear()
        e = self.election
        record = self._record
        try:
            for _ in range(RELEASE_TRIES):
                body = released_body(e.namespace, e.name, record, micro_time())
                if await self.api.replace(e.namespace, e.name, body) is not None:
                    log.info("leader election: %s released Lease %s/%s", e.identity, e.namespace, e.name)
                    return
                fresh = record_of(await self.api.get(e.namespace, e.name))
                if fresh is None or fresh.holder != e.identity:
                    return  # no longer this replica's: nothing to give up
                record = fresh
        except LeaseError as exc:
            log.warning("leader election: the Lease was not released: %s; it expires by itself", exc)
            return
        log.warning("leader election: the Lease kept changing and was not released; it expires by itself")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
