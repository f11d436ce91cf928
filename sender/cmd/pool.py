"""Sender pools: the engines of many Webhooks in the replicas of one StatefulSet (`hookline pool`).

How a replica learns its Webhooks, without a Kubernetes API token and without a restart: the
operator writes one entry per pooled Webhook into the NATS KV bucket ``HOOKLINE_POOLS`` under
``a.<pool>.<replica>.<consumer>`` (the replica from `replica_of`); each replica watches its own
prefix and hands every change to its supervisor (added, replaced in-process, removed). The entry is
the sender config (no secret) and the Webhook's signing key sealed with the installation's pool key
(AES-256-GCM, the consumer name as associated data, so an entry cannot be replayed for another
Webhook). The pool key is one Secret in the release namespace, mounted into the operator and the
pool pods: no signing secret is ever in a ConfigMap, and pool pods need no RBAC at all.

Each replica writes its roster (``r.<pool>.<replica>``: which engines consume, which do not and
why, and when) when it changes and every `ROSTER_INTERVAL`; the operator mirrors it into each
Webhook's status.sender, and a roster older than `ROSTER_STALE` counts as a replica that is down.

Assignment is rendezvous hashing (highest random weight): stable while Webhooks come and go, and
when a replica is added only the Webhooks the new one wins move (about 1/N of them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import JetStreamContext, api
from prometheus_client import CollectorRegistry

from hookline.api import POOL_NAME_PATTERN
from hookline.sender import bus
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams
from hookline.sender.model.config import ConfigError, SenderConfig, parse_sender_config
from hookline.sender.observe.health import add_health_routes, parse_listen, run_service, start_site
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy

log = logging.getLogger("hookline.sender.cmd.pool")

POOL_BUCKET = "HOOKLINE_POOLS"
ROSTER_INTERVAL = 10.0
ROSTER_STALE = 35.0  # three rosters missed: the replica is down
MIN_POOL_KEY_CHARS = 32
_SEALED_PREFIX = "v1."
_POOL_NAME = re.compile(POOL_NAME_PATTERN)


class PoolError(ValueError):
    """A pool setting or entry that cannot be used; the message names it and says what to do."""


# --- assignment (pure) ---------------------------------------------------------------------------------


def replica_of(consumer: str, replicas: int) -> int:
    """The replica (0..replicas-1) that serves `consumer`: the one with the highest hash of the pair."""
    if replicas < 1:
        raise ValueError("a pool needs at least one replica")
    return max(
        range(replicas), key=lambda r: hashlib.blake2b(f"{consumer}\0{r}".encode(), digest_size=8).digest()
    )


def assignment_prefix(pool: str, replica: int) -> str:
    return f"a.{pool}.{replica}"


def assignment_key(pool: str, replica: int, consumer: str) -> str:
    return f"{assignment_prefix(pool, replica)}.{consumer}"


def roster_key(pool: str, replica: int) -> str:
    return f"r.{pool}.{replica}"


def parse_assignment_key(key: str) -> tuple[str, int, str] | None:
    """(pool, replica, consumer) of an assignment key, or None for any other key."""
    parts = key.split(".", 3)
    if len(parts) != 4 or parts[0] != "a" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), parts[3]


def check_pool_name(name: str) -> str:
    if not _POOL_NAME.fullmatch(name):
        raise PoolError(f"pool name {name!r} must be a DNS label of at most 40 characters (a-z, 0-9, -)")
    return name


# --- the pool key and sealed signing keys ----------------------------------------------------------------


class PoolKey:
    """Seals and opens Webhooks' signing keys for pool entries (AES-256-GCM)."""

    def __init__(self, secret_text: str) -> None:
        if len(secret_text) < MIN_POOL_KEY_CHARS:
            raise PoolError(f"the pool key must be at least {MIN_POOL_KEY_CHARS} characters")
        self._aead = AESGCM(hashlib.sha256(secret_text.encode()).digest())

    @classmethod
    def from_file(cls, path: str) -> PoolKey:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise PoolError(
                f"cannot read the pool key file {path}: {getattr(exc, 'strerror', None) or exc}; "
                "check the pool key Secret is mounted (chart: senderPools)"
            ) from None
        try:
            return cls(text)
        except PoolError as exc:
            raise PoolError(f"pool key file {path}: {exc}") from None

    def seal(self, signing_key: bytes, consumer: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, signing_key, consumer.encode())
        return _SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, consumer: str) -> bytes:
        if not sealed.startswith(_SEALED_PREFIX):
            raise PoolError("the sealed signing key has an unknown format")
        try:
            raw = base64.b64decode(sealed[len(_SEALED_PREFIX) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], consumer.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise PoolError(
                "the signing key does not open with this pool key (the operator and the pool pods "
                "must mount the same pool key Secret)"
            ) from None


# --- entries and rosters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolEntry:
    """One pooled Webhook as its replica needs it: the sender config and its sealed signing key."""

    config: SenderConfig
    sealed_key: str | None = None

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"config": self.config.to_document()}
        if self.sealed_key is not None:
            doc["sealedKey"] = self.sealed_key
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str) -> PoolEntry:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise PoolError(f"{source}: not JSON: {exc}") from None
        if not isinstance(doc, dict) or "config" not in doc:
            raise PoolError(f"{source}: an entry is an object with config and sealedKey")
        try:
            config = parse_sender_config(doc["config"], source=source)
        except ConfigError as exc:
            raise PoolError(str(exc)) from None
        sealed = doc.get("sealedKey")
        return cls(config, sealed if isinstance(sealed, str) else None)


@dataclass(frozen=True)
class Roster:
    """What one replica runs: consumers whose engine consumes, and those that do not, with why."""

    pool: str
    replica: int
    at: float
    running: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def alive(self, now: float) -> bool:
        return now - self.at < ROSTER_STALE

    @functools.cached_property
    def consuming(self) -> frozenset[str]:
        """`running` as a set: the operator looks every pooled Webhook up in it every second."""
        return frozenset(self.running)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Roster:
        return cls(**json.loads(data))


async def pool_bucket(js: JetStreamContext, replicas: int = 1) -> Any:
    """The assignments and rosters bucket (one value per key, no TTL: the operator removes entries)."""
    try:
        return await js.key_value(POOL_BUCKET)
    except Exception:  # BucketNotFoundError or NotFoundError by nats-py version
        return await js.create_key_value(api.KeyValueConfig(bucket=POOL_BUCKET, history=1, replicas=replicas))


# --- a replica ---------------------------------------------------------------------------------------------


def replica_from_hostname(hostname: str) -> int:
    """A StatefulSet pod's ordinal: the number after the last '-' of its name."""
    _, sep, ordinal = hostname.rpartition("-")
    if not sep or not ordinal.isdigit():
        raise PoolError(
            f"cannot tell the replica from the host name {hostname!r}: pass --replica N "
            "(a StatefulSet pod is called <name>-<ordinal>)"
        )
    return int(ordinal)


class PoolReplica:
    """One replica of a pool: follows its assignments in NATS and keeps its supervisor in step."""

    def __init__(self, nc: bus.NATS, pool: str, replica: int, key: PoolKey, supervisor: Supervisor) -> None:
        self.nc = nc
        self.pool = pool
        self.replica = replica
        self.key = key
        self.supervisor = supervisor
        self.unusable: dict[str, str] = {}  # entries that could not be used, and why
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
            entry = PoolEntry.from_bytes(value, source=f"pool entry {key}")
            if entry.config.nats.consumer != consumer:
                raise PoolError(f"pool entry {key}: its config is for consumer {entry.config.nats.consumer}")
            signing_key = None if entry.sealed_key is None else self.key.open(entry.sealed_key, consumer)
        except PoolError as exc:
            log.error("pool %s replica %d: %s", self.pool, self.replica, exc)
            self.unusable[consumer] = str(exc)
            self.supervisor.remove(consumer)
            self.changed.set()
            return
        self.unusable.pop(consumer, None)
        outcome = self.supervisor.apply(entry.config, signing_key)
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
                await kv.put(key, roster.to_bytes())
            except Exception as exc:
                log.debug("pool %s replica %d: roster not written: %s", self.pool, self.replica, exc)
                continue
            last, last_at = facts, now

    async def say_stopped(self, kv: Any) -> None:
        """An empty roster on the way out, so the operator need not wait for this one to go stale."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                kv.put(roster_key(self.pool, self.replica), self.roster(time.time()).to_bytes()), 2
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="the pool's name (chart: senderPools[].name)")
    parser.add_argument(
        "--replica",
        type=int,
        help="this replica's number (default: the StatefulSet pod ordinal from the host name)",
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="NATS URL")
    parser.add_argument("--pool-key-file", required=True, metavar="FILE", help="the mounted pool key")
    parser.add_argument("--listen", default="0.0.0.0:8081", help="HOST:PORT for /metrics, /healthz, /readyz")


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    pool = check_pool_name(args.pool)
    replica = args.replica if args.replica is not None else replica_from_hostname(socket.gethostname())
    key = PoolKey.from_file(args.pool_key_file)
    host, port = parse_listen(args.listen, 8081)
    policy = EgressPolicy.from_cli(list(args.allow_network), args.allow_http)

    def policy_for(cfg: SenderConfig) -> EgressPolicy:
        """What the operator allows for this Webhook (its entry, as in a dedicated sender's config)
        on top of this replica's own flags."""
        if not cfg.allow_networks and not cfg.allow_http:
            return policy
        allow_http = True if cfg.allow_http else args.allow_http
        return EgressPolicy.from_cli([*cfg.allow_networks, *args.allow_network], allow_http)

    registry = CollectorRegistry()
    closed = asyncio.Event()
    nc = await bus.connect(args.nats_url, name=f"hookline-pool {pool}-{replica}", on_closed=closed.set)
    supervisor = Supervisor(nc, policy, SenderMetrics(registry), policy_for=policy_for)
    member = PoolReplica(nc, pool, replica, key, supervisor)
    tasks: list[asyncio.Task[None]] = []
    try:
        await prepare_streams(nc)
        kv = await pool_bucket(nc.jetstream())
        app = web.Application()
        add_health_routes(app, registry, member.readiness, liveness=lambda: _closed(nc))
        runner = await start_site(app, host, port)
        tasks = [
            asyncio.create_task(member.follow(kv), name="follow assignments"),
            asyncio.create_task(member.report(kv), name="write roster"),
        ]
        log.info("pool %s replica %d started: health on %s:%d", pool, replica, host, port)
        try:
            done = asyncio.create_task(stop.wait())
            lost = asyncio.create_task(closed.wait())
            await asyncio.wait({done, lost}, return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            lost.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await supervisor.close()
            await member.say_stopped(kv)
            await runner.cleanup()
    finally:
        await bus.close_quietly(nc)
    if closed.is_set() and not stop.is_set():
        log.error("pool %s replica %d: the NATS connection was closed for good; exiting", pool, replica)
        return 1
    log.info("pool %s replica %d stopped cleanly", pool, replica)
    return 0


def _closed(nc: bus.NATS) -> str | None:
    return "the NATS connection is closed for good" if nc.is_closed else None


def run(args: argparse.Namespace) -> int:
    return run_service(lambda stop: serve(args, stop), {PoolError: 2, bus.BusUnavailable: 2}, log)
