"""Per-namespace egress for sender pools: the grant records of the ``HOOKLINE_POOLS`` bucket.

A dedicated sender's config carries its namespace's egress (the installation's flags plus what its
WebhookPolicy grants). A pool replica takes no egress from a pool entry: whoever can write an entry
could widen it. Instead the operator writes one record per namespace whose grant adds egress, under
``g.<namespace>``, authenticated like every pool record (`PoolKey.sign_record`: HMAC-SHA256 over the
key and the bytes, with a subkey of the pool key); a replica applies its own flags plus the record of
the entry's namespace, and refuses a record whose MAC does not hold (then only its flags count).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hookline.sender.bus.poolproto import PoolError, PoolKey
from hookline.sender.transport.egress import EgressPolicy

log = logging.getLogger(__name__)

GRANT_PREFIX = "g"


def grant_key(namespace: str) -> str:
    return f"{GRANT_PREFIX}.{namespace}"


@dataclass(frozen=True)
class GrantRecord:
    """What a namespace's Webhooks may reach beyond a replica's own flags."""

    namespace: str
    allow_networks: tuple[str, ...] = ()
    allow_http: bool = False

    def to_bytes(self) -> bytes:
        doc = {
            "namespace": self.namespace,
            "allowNetworks": list(self.allow_networks),
            "allowHttp": self.allow_http,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> GrantRecord:
        doc = json.loads(data)
        networks = doc.get("allowNetworks") or []
        if not isinstance(doc.get("namespace"), str) or not all(isinstance(n, str) for n in networks):
            raise PoolError("a grant record is {namespace, allowNetworks, allowHttp}")
        return cls(doc["namespace"], tuple(networks), doc.get("allowHttp") is True)


async def publish_grant(kv: Any, key: PoolKey | None, namespace: str, record: GrantRecord | None) -> None:
    """Store (or, with None, remove) a namespace's grant record, signed with the pool key."""
    name = grant_key(namespace)
    if record is None:
        with contextlib.suppress(Exception):  # absent already
            await kv.delete(name)
        return
    if key is None:
        raise PoolError("per-namespace egress for pools needs the pool key (HOOKLINE_POOL_KEY_FILE)")
    await kv.put(name, key.sign_record(name, record.to_bytes()))


class GrantTable:
    """A pool replica's view of the grant records (authentic ones only), and the policy they give."""

    def __init__(self, key: PoolKey, floor: EgressPolicy) -> None:
        self.key = key
        self.floor = floor
        self.records: dict[str, GrantRecord] = {}
        self.loaded = asyncio.Event()

    def policy(self, namespace: str) -> EgressPolicy:
        """The replica's own flags plus the namespace's grant."""
        record = self.records.get(namespace)
        if record is None or not (record.allow_networks or record.allow_http):
            return self.floor
        networks = [*self.floor.allow_networks, *record.allow_networks]
        return EgressPolicy(networks, self.floor.allow_http or record.allow_http)

    def apply(self, kv_key: str, value: bytes | None) -> str | None:
        """One change of a record; the namespace whose egress changed, if any."""
        namespace = kv_key.partition(".")[2]
        old = self.records.get(namespace)
        if value is None:
            self.records.pop(namespace, None)
        else:
            try:
                record = GrantRecord.from_bytes(self.key.open_record(kv_key, value))
                if record.namespace != namespace:
                    raise PoolError(f"{kv_key}: a record for namespace {record.namespace}: refused")
                EgressPolicy(record.allow_networks)  # a bad network refuses the whole record
            except (PoolError, ValueError) as exc:
                log.error("grant record %s refused: %s; only this replica's flags apply there", kv_key, exc)
                self.records.pop(namespace, None)
            else:
                self.records[namespace] = record
        return namespace if self.records.get(namespace) != old else None

    async def follow(self, kv: Any, on_change: Callable[[str], Any]) -> None:
        """Keep the table in step with the bucket; ``on_change(namespace)`` after the first load."""
        while True:
            try:
                watcher = await kv.watch(f"{GRANT_PREFIX}.>")
                try:
                    async for entry in watcher:
                        if entry is None:
                            self.loaded.set()
                            continue
                        deleted = entry.operation is not None or entry.value is None
                        changed = self.apply(entry.key, None if deleted else entry.value)
                        if changed is not None and self.loaded.is_set():
                            result = on_change(changed)
                            if asyncio.iscoroutine(result):
                                await result
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("grant records: watch broke: %s; watching again", exc)
                self.loaded.set()  # do not hold the replica's Webhooks back for it
            await asyncio.sleep(1.0)
