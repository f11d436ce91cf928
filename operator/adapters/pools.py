"""Sender pools from the operator's side: the NATS bucket through which pool replicas learn their
Webhooks. Where a Webhook runs is decided in rules/placement.py; the protocol is sender/bus/poolproto.py's.

For each pooled Webhook the operator keeps two values in ``HOOKLINE_POOLS``: the entry itself under
``e.<consumer>`` (so a move or a late-appearing pool needs no Kubernetes read), and a copy under the
assignment key of the replica that serves it. A move writes the new assignment before it removes
the old one: for a moment both replicas pull from the same durable consumer, which JetStream shares
out (at-least-once, as always), so nothing waits and nothing is lost. Each value is authenticated for
its own key (`PoolKey.sign_record`), so a move opens the stored copy and signs it again for the new key.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from hookline.operator.adapters.consumers import Consumers
from hookline.sender.bus.poolproto import (
    PoolEntry,
    PoolError,
    PoolKey,
    Roster,
    assignment_key,
    pool_bucket,
    roster_key,
)
from hookline.sender.model.config import SenderConfig
from hookline.sender.model.credentials import Credentials

log = logging.getLogger(__name__)
NO_POOL_KEY = "pool entries need the pool key: set the chart's senderPools (HOOKLINE_POOL_KEY_FILE)"


def pool_entry(
    cfg: SenderConfig,
    signing_key: Credentials | bytes | None,
    key: PoolKey | None,
    *,
    uid: str = "",
    generation: int = 0,
) -> PoolEntry:
    """The pool entry of a Webhook (uid: its metadata.uid): its config without a secret file or egress
    (the replica's own settings decide that), and its key sealed for its identity and URL."""
    cfg = cfg.model_copy(
        update={
            "signing_secret_file": None,
            "signing_secret_files": None,
            "secret_header_files": None,
            "tls_files": None,
            "replicas": 1,
            "allow_networks": [],
            "allow_http": False,
        }
    )
    if key is None:
        raise ValueError(NO_POOL_KEY)
    entry = PoolEntry(cfg, webhook_uid=uid, issued_at=time.time(), generation=generation)
    if not signing_key:  # no keys, secret headers or client certificate: nothing to seal
        return entry
    # Everything secret, sealed together (sender/model/credentials.py); bytes: one HMAC key, as before.
    raw = signing_key.to_bytes() if isinstance(signing_key, Credentials) else signing_key
    return replace(entry, sealed_key=key.seal(raw, entry.binding))


def entry_key(consumer: str) -> str:
    return f"e.{consumer}"


class PoolDirectory:
    """The operator's side of HOOKLINE_POOLS, over the operator's NATS connection (Consumers)."""

    def __init__(self, consumers: Consumers, key: PoolKey | None = None) -> None:
        self.consumers = consumers
        self.key = key

    def _signed(self, kv_key: str, payload: bytes) -> bytes:
        if self.key is None:
            raise ValueError(NO_POOL_KEY)
        return self.key.sign_record(kv_key, payload)

    async def place(
        self, consumer: str, entry: bytes, pool: str, replica: int | None, old: tuple[str, int] | None
    ) -> None:
        """Store the entry and assign it to `replica` (None: keep it for when the pool runs); the
        old assignment is removed after the new one exists."""

        async def write(js: Any) -> None:
            kv = await pool_bucket(js)
            await kv.put(entry_key(consumer), self._signed(entry_key(consumer), entry))
            if replica is not None:
                at = assignment_key(pool, replica, consumer)
                await kv.put(at, self._signed(at, entry))
            if old is not None and old != (pool, replica):
                await _delete(kv, assignment_key(old[0], old[1], consumer))

        await self.consumers.call(f"assigning {consumer} to pool {pool}", write)

    async def move(self, consumer: str, pool: str, replica: int | None, old: int | None) -> bool:
        """Assign a stored entry to another replica of its pool; False when no entry is stored."""

        async def write(js: Any) -> bool:
            kv = await pool_bucket(js)
            try:
                entry = await kv.get(entry_key(consumer))
            except Exception:  # KeyNotFoundError: placed before this operator stored entries
                return False
            if entry.value is None or self.key is None:
                return False
            try:  # not ours (forged, or written before entries were authenticated): placed again
                payload = self.key.open_record(entry_key(consumer), entry.value)
            except PoolError:
                return False
            if replica is not None:
                at = assignment_key(pool, replica, consumer)
                await kv.put(at, self._signed(at, payload))
            if old is not None and old != replica:
                await _delete(kv, assignment_key(pool, old, consumer))
            return True

        return await self.consumers.call(f"moving {consumer} in pool {pool}", write)

    async def remove(self, consumer: str, where: tuple[str, int | None] | None) -> None:
        """Stop the Webhook's pool engine: its assignment (where known, else wherever it is) and entry."""

        async def delete(js: Any) -> None:
            kv = await pool_bucket(js)
            if where is not None and where[1] is not None:
                await _delete(kv, assignment_key(where[0], where[1], consumer))
            else:
                for key in await _keys(kv, f"a.*.*.{consumer}"):
                    await _delete(kv, key)
            await _delete(kv, entry_key(consumer))

        await self.consumers.call(f"removing {consumer} from its pool", delete)

    async def rosters(self) -> AsyncIterator[Roster]:
        """Every replica's roster, then each new one, until the watch breaks (the caller watches again).
        A roster whose MAC does not hold (not written by a replica with the pool key) is ignored."""
        js = await self.consumers.call("opening the pool bucket", _same)
        kv = await pool_bucket(js)
        watcher = await kv.watch("r.>")
        try:
            async for entry in watcher:
                if entry is None or entry.value is None or entry.operation is not None:
                    continue
                if self.key is None:
                    continue
                try:
                    yield Roster.from_bytes(self.key.open_record(entry.key, entry.value))
                except PoolError as exc:
                    log.warning("pool roster %s ignored: %s", entry.key, exc)
                except (ValueError, TypeError):
                    continue
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def forget_roster(self, pool: str, replica: int) -> None:
        async def delete(js: Any) -> None:
            await _delete(await pool_bucket(js), roster_key(pool, replica))

        await self.consumers.call(f"forgetting pool {pool} replica {replica}", delete)


async def _same(js: Any) -> Any:
    return js


async def _delete(kv: Any, key: str) -> None:
    with contextlib.suppress(Exception):  # absent already
        await kv.delete(key)


async def _keys(kv: Any, pattern: str) -> list[str]:
    try:
        return list(await kv.keys(filters=[pattern]))
    except Exception:  # NoKeysError: none
        return []
