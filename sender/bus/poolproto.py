"""The sender-pool protocol, shared by the operator (which assigns) and the pool replicas (which serve).

How a replica learns its Webhooks, without a Kubernetes API token and without a restart: the
operator writes one entry per pooled Webhook into the NATS KV bucket ``HOOKLINE_POOLS`` under
``a.<pool>.<replica>.<consumer>`` (the replica from `replica_of`); each replica watches its own
prefix (delivery/poolreplica.py). The entry is the sender config (no secret) and the Webhook's
signing key sealed with the installation's pool key (AES-256-GCM; the associated data is the Webhook's
identity, namespace/name/uid, and its URL, so a sealed key replayed in an entry with another URL or for
another Webhook does not open). The pool key is one Secret in the release namespace, mounted into the
operator and the pool pods: no signing secret is ever in a ConfigMap, and pool pods need no RBAC at all.

Every record written with the pool key is authenticated as a whole (`PoolKey.sign_record`): an HMAC-SHA256
over the KV key and the exact bytes, with a subkey derived from the pool key (HKDF, label
``hookline pool record mac``). Anyone who can write the bucket but does not hold the pool key cannot
forge an entry, change one field of it (its URL, headers, sealed key) or move it under another key; the
replica refuses such a record and says so in its roster. Egress never comes from an entry: the replica's
own flags (and the tenant's grant) decide what it may reach.

Each replica writes its roster (``r.<pool>.<replica>``: which engines consume, which do not and
why, and when; authenticated as the entries are, since only replicas hold the pool key) when it
changes and every `ROSTER_INTERVAL`; the operator mirrors it into each
Webhook's status.sender, and a roster older than `ROSTER_STALE` counts as a replica that is down.

Assignment is rendezvous hashing (highest random weight): stable while Webhooks come and go, and
when a replica is added only the Webhooks the new one wins move (about 1/N of them).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nats.js import JetStreamContext, api

from hookline.api import POOL_NAME_PATTERN
from hookline.sender.model.config import ConfigError, SenderConfig, parse_sender_config

POOL_BUCKET = "HOOKLINE_POOLS"
ROSTER_INTERVAL = 10.0
ROSTER_STALE = 35.0  # three rosters missed: the replica is down
MIN_POOL_KEY_CHARS = 32
_SEALED_PREFIX = "v1."
_MAC_LABEL = b"hookline pool record mac"
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


def seal_binding(namespace: str, name: str, uid: str, url: str) -> str:
    """What a sealed signing key is bound to (its associated data): the Webhook's identity and URL."""
    return f"{namespace}/{name}/{uid}\n{url}"


class PoolKey:
    """Seals and opens Webhooks' signing keys for pool entries (AES-256-GCM) and authenticates the
    records of the pool bucket (HMAC-SHA256 with a subkey of its own)."""

    def __init__(self, secret_text: str) -> None:
        if len(secret_text) < MIN_POOL_KEY_CHARS:
            raise PoolError(f"the pool key must be at least {MIN_POOL_KEY_CHARS} characters")
        self._aead = AESGCM(hashlib.sha256(secret_text.encode()).digest())
        self._mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_LABEL).derive(
            secret_text.encode()
        )

    def mac(self, kv_key: str, payload: bytes) -> str:
        """The record's MAC: HMAC-SHA256 over its KV key and its bytes (base64url, no padding)."""
        digest = hmac.new(self._mac_key, kv_key.encode() + b"\0" + payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def check_mac(self, kv_key: str, payload: bytes, mac: str) -> bool:
        """Whether `mac` is this record's under this key (constant-time)."""
        return hmac.compare_digest(self.mac(kv_key, payload), mac)

    def sign_record(self, kv_key: str, payload: bytes) -> bytes:
        """The value to store under `kv_key`: the payload and its MAC (``{"mac", "record"}``)."""
        doc = {"mac": self.mac(kv_key, payload), "record": payload.decode()}
        return json.dumps(doc, separators=(",", ":")).encode()

    def open_record(self, kv_key: str, value: bytes) -> bytes:
        """The payload of a value `sign_record` made for `kv_key`; PoolError when it is not authentic."""
        try:
            doc = json.loads(value)
            payload, mac = doc["record"].encode(), doc["mac"]
            if not isinstance(mac, str):
                raise TypeError
        except (ValueError, TypeError, KeyError, AttributeError):
            raise PoolError(
                f"{kv_key}: not an authenticated record (no MAC): refused; only the operator writes "
                "pool entries"
            ) from None
        if not self.check_mac(kv_key, payload, mac):
            raise PoolError(
                f"{kv_key}: the record's MAC does not match (forged, changed, or copied from another "
                "key; or the operator and the pool pods mount different pool keys): refused"
            )
        return payload

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

    def seal(self, signing_key: bytes, binding: str) -> str:
        """The signing key sealed for `binding` (`seal_binding`: the Webhook's identity and URL)."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, signing_key, binding.encode())
        return _SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, binding: str) -> bytes:
        if not sealed.startswith(_SEALED_PREFIX):
            raise PoolError("the sealed signing key has an unknown format")
        try:
            raw = base64.b64decode(sealed[len(_SEALED_PREFIX) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], binding.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise PoolError(
                "the signing key does not open for this Webhook and URL with this pool key (sealed for "
                "another Webhook or URL; or the operator and the pool pods must mount the same pool key "
                "Secret)"
            ) from None


# --- entries and rosters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    """How new an entry is: its Webhook's uid and generation, and when the operator issued it."""

    uid: str
    generation: int
    issued_at: float

    def older_than(self, applied: Freshness) -> bool:
        """Of the same Webhook (uid), a lower generation, or the same one issued earlier (a rotated
        Secret: same generation, issued again); of an earlier Webhook of that name, issued earlier.
        The generation comes first, so a clock behind on a new operator leader never holds back a
        spec change."""
        if self.uid == applied.uid and self.generation != applied.generation:
            return self.generation < applied.generation
        return self.issued_at < applied.issued_at


@dataclass(frozen=True)
class PoolEntry:
    """One pooled Webhook as its replica needs it: the sender config, the Webhook's uid, its sealed
    signing key (sealed for `binding`), and how new it is: the Webhook's metadata.generation and when
    the operator issued it (a replica refuses an entry older than the one it applied, `older_than`:
    an authentic entry replayed after a newer one, e.g. with an old URL)."""

    config: SenderConfig
    sealed_key: str | None = None
    webhook_uid: str = ""
    issued_at: float = 0.0
    generation: int = 0

    @property
    def freshness(self) -> Freshness:
        return Freshness(self.webhook_uid, self.generation, self.issued_at)

    @property
    def binding(self) -> str:
        ref = self.config.webhook
        return seal_binding(ref.namespace, ref.name, self.webhook_uid, self.config.spec.url)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "config": self.config.to_document(),
            "webhookUid": self.webhook_uid,
            "issuedAt": self.issued_at,
            "generation": self.generation,
        }
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
        uid = doc.get("webhookUid")
        issued, generation = doc.get("issuedAt"), doc.get("generation")
        return cls(
            config,
            sealed if isinstance(sealed, str) else None,
            uid if isinstance(uid, str) else "",
            float(issued) if isinstance(issued, int | float) and not isinstance(issued, bool) else 0.0,
            generation if isinstance(generation, int) and not isinstance(generation, bool) else 0,
        )


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


def replica_from_hostname(hostname: str) -> int:
    """A StatefulSet pod's ordinal: the number after the last '-' of its name."""
    _, sep, ordinal = hostname.rpartition("-")
    if not sep or not ordinal.isdigit():
        raise PoolError(
            f"cannot tell the replica from the host name {hostname!r}: pass --replica N "
            "(a StatefulSet pod is called <name>-<ordinal>)"
        )
    return int(ordinal)
