"""One replica of a sender pool at run time: it follows its assignments in the pool bucket (protocol:
bus/poolproto.py), keeps its supervisor's engines in step with them, and writes its roster.

An assignment is used only when its MAC holds for its key, its config is for the consumer the key
names, and its sealed signing key opens for the Webhook's identity and URL; anything else is refused
(nothing sent, its reason in the roster's problems). The entry's egress fields are ignored: what a
Webhook may reach comes from this replica's settings (and the tenant's grant), never from NATS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from hookline.sender import bus
from hookline.sender.bus.poolproto import (
    ROSTER_INTERVAL,
    Freshness,
    PoolEntry,
    PoolError,
    PoolKey,
    Roster,
    assignment_prefix,
    parse_assignment_key,
    roster_key,
)
from hookline.sender.delivery.supervisor import Supervisor
from hookline.sender.model.config import consumer_name
from hookline.sender.model.credentials import Credentials

log = logging.getLogger(__name__)


class PoolReplica:
    """One replica of a pool: follows its assignments in NATS and keeps its supervisor in step."""

    def __init__(self, nc: bus.NATS, pool: str, replica: int, key: PoolKey, supervisor: Supervisor) -> None:
        self.nc = nc
        self.pool = pool
        self.replica = replica
        self.key = key
        self.supervisor = supervisor
        self.unusable: dict[str, str] = {}  # entries that could not be used, and why
        self.applied: dict[str, Freshness] = {}  # how new the entry applied is, per consumer (replays)
        self.loaded = asyncio.Event()  # every entry there was at the start has been applied
        self.changed = asyncio.Event()
        supervisor.on_change = self.changed.set

    def readiness(self) -> str | None:
        if not self.nc.is_connected:
            return "not connected to NATS"
        if not self.loaded.is_set():
            return "loading this replica's Webhooks"
        return None

    def roster(self, now: float) -> Roster:
        problems = {**self.supervisor.problems(), **self.unusable}
        return Roster(self.pool, self.replica, now, self.supervisor.running(), problems)

    def apply(self, key: str, value: bytes | None) -> None:
        """One change of an assignment: a put (value) or a delete (None)."""
        parsed = parse_assignment_key(key)
        if parsed is None:
            return
        consumer = parsed[2]
        if value is None:
            self.unusable.pop(consumer, None)
            if self.supervisor.remove(consumer):
                log.info("pool %s replica %d: %s removed", self.pool, self.replica, consumer)
            return
        try:
            payload = self.key.open_record(key, value)
            entry = PoolEntry.from_bytes(payload, source=f"pool entry {key}")
            ref = entry.config.webhook
            if consumer_name(ref.namespace, ref.name) != consumer or entry.config.nats.consumer != consumer:
                raise PoolError(f"pool entry {key}: its config is for consumer {entry.config.nats.consumer}")
            sealed = None if entry.sealed_key is None else self.key.open(entry.sealed_key, entry.binding)
            try:  # keys, secret header values, spec.tls (sender/model/credentials.py)
                signing_key = None if sealed is None else Credentials.from_bytes(sealed)
            except ValueError as exc:
                raise PoolError(f"pool entry {key}: {exc}") from None
            newest = self.applied.get(consumer)
            if newest is not None and entry.freshness.older_than(newest):
                # An authentic entry, but older than the one running: a replay. The running engine stays.
                stale = (
                    f"pool entry {key}: generation {entry.generation} issued at {entry.issued_at:.3f}, "
                    f"older than the entry applied (generation {newest.generation} issued at "
                    f"{newest.issued_at:.3f}): a replayed old entry, refused"
                )
                log.error("pool %s replica %d: %s", self.pool, self.replica, stale)
                self.unusable[consumer] = stale
                self.changed.set()
                return
        except PoolError as exc:
            log.error("pool %s replica %d: %s", self.pool, self.replica, exc)
            self.unusable[consumer] = str(exc)
            self.supervisor.remove(consumer)
            self.changed.set()
            return
        self.unusable.pop(consumer, None)
        self.applied[consumer] = entry.freshness
        config = entry.config.model_copy(update={"allow_networks": [], "allow_http": False})
        outcome = self.supervisor.apply(config, signing_key)
        if outcome != "unchanged":
            log.info("pool %s replica %d: %s %s", self.pool, self.replica, consumer, outcome)

    async def follow(self, kv: Any) -> None:
        """Apply every assignment of this replica, then each change, until cancelled; a broken watch
        is opened again, and what went away meanwhile is removed."""
        prefix = assignment_prefix(self.pool, self.replica)
        while True:
            try:
                watcher = await kv.watch(f"{prefix}.>")
                seen: set[str] = set()
                initial = True
                try:
                    async for entry in watcher:
                        if entry is None:  # the end of what was there: drop what is no longer
                            if initial:
                                for consumer in self.supervisor.consumers() - seen:
                                    self.supervisor.remove(consumer)
                                initial = False
                                self.loaded.set()
                                self.changed.set()
                            continue
                        deleted = entry.operation is not None or entry.value is None
                        if initial and not deleted:
                            parsed = parse_assignment_key(entry.key)
                            if parsed is not None:
                                seen.add(parsed[2])
                        self.apply(entry.key, None if deleted else entry.value)
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "pool %s replica %d: watch broke: %s; watching again", self.pool, self.replica, exc
                )
            await asyncio.sleep(1.0)

    async def report(self, kv: Any) -> None:
        """Write the roster when it changed (at most twice a second) and every ROSTER_INTERVAL."""
        key = roster_key(self.pool, self.replica)
        last: tuple[list[str], dict[str, str]] | None = None
        last_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), ROSTER_INTERVAL)
            await asyncio.sleep(0.5)  # let a burst of changes settle into one write
            self.changed.clear()
            if not self.loaded.is_set():
                continue
            now = time.time()
            roster = self.roster(now)
            facts = (roster.running, roster.problems)
            if facts == last and now - last_at < ROSTER_INTERVAL:
                continue
            try:
                await kv.put(key, self.key.sign_record(key, roster.to_bytes()))
            except Exception as exc:
                log.debug("pool %s replica %d: roster not written: %s", self.pool, self.replica, exc)
                continue
            last, last_at = facts, now

    async def say_stopped(self, kv: Any) -> None:
        """An empty roster on the way out, so the operator need not wait for this one to go stale."""
        key = roster_key(self.pool, self.replica)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                kv.put(key, self.key.sign_record(key, self.roster(time.time()).to_bytes())), 2
            )
