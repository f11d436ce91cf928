"""Who may publish for which database: ingest's producer tokens.

Each producer has a token of its own, named, and a list of the databases it may publish events for
(``*``: any). A request's bearer token is hashed (SHA-256) and compared, in constant time, with every
configured token's hash (no early exit: timing says nothing about which token or how much of it
matched). A token may be given in clear or as its SHA-256, so the tokens file need not hold the
secret itself. Only a token's NAME ever reaches a log line or a metric label.

A request whose events name a database the token may not publish for is refused as a whole (403,
each such event listed with its index, id and database): nothing of it is published, as with a 400.
An event without a database is allowed only to a token with ``*``.

The tokens file (``--tokens-file``, a Secret in the chart), YAML or JSON::

    tokens:
      - name: crm                    # [a-z0-9_.-], 1..63: what logs and metrics show
        token: "s3cret..."           # or sha256: "<64 hex>", or tokenFile: /path/to/a/mounted/secret
        databases: [newsletter, crm] # or ["*"]

The single token of earlier versions (``--token-file`` / ``HOOKLINE_INGEST_TOKEN``) is a producer
named ``default`` with ``*``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hookline.sender.ingest.body import Outgoing, Rejection

__all__ = ["ANY_DATABASE", "ProducerAuth", "ProducerToken", "TokensError", "load_tokens_file"]

ANY_DATABASE = "*"
MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_REPORTED = 20


class TokensError(ValueError):
    """The tokens file cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class ProducerToken:
    """One producer: its name (for logs and metrics), its token's SHA-256, and its databases."""

    name: str
    digest: bytes
    databases: frozenset[str]

    def allows(self, database: str | None) -> bool:
        if ANY_DATABASE in self.databases:
            return True
        return database is not None and database in self.databases


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class ProducerAuth:
    """The producers ingest knows, or explicitly none (``--insecure-no-auth``, and dev mode)."""

    def __init__(self, producers: Sequence[ProducerToken], *, insecure: bool = False) -> None:
        if not producers and not insecure:
            raise TokensError("no producer token: give tokens, or say --insecure-no-auth")
        names = [p.name for p in producers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise TokensError(f"producer names must be unique: {', '.join(twice)} given twice")
        by_digest: dict[bytes, list[str]] = {}
        for producer in producers:
            by_digest.setdefault(producer.digest, []).append(producer.name)
        shared = [names for names in by_digest.values() if len(names) > 1]
        if shared:
            raise TokensError(
                f"producers {', '.join(shared[0])} have the same token: each producer needs its own"
            )
        self.producers = tuple(producers)
        self.insecure = insecure

    @classmethod
    def single(cls, token: bytes, name: str = "default") -> ProducerAuth:
        """The one shared token of earlier versions: every database."""
        return cls([ProducerToken(name, _digest(token), frozenset({ANY_DATABASE}))])

    @classmethod
    def open(cls) -> ProducerAuth:
        return cls([], insecure=True)

    def identify(self, header: str | None) -> ProducerToken | None:
        """The producer whose token the ``Authorization`` header carries (None when auth is off);
        401 without one or with an unknown one."""
        if self.insecure:
            return None
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Rejection(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        digest = _digest(given.strip().encode())
        found: ProducerToken | None = None
        for producer in self.producers:  # every one compared: no early exit
            if hmac.compare_digest(digest, producer.digest):
                found = producer
        if found is None:
            raise Rejection(401, "wrong bearer token")
        return found

    @staticmethod
    def check_databases(producer: ProducerToken | None, batch: Iterable[Outgoing]) -> None:
        """403 naming every event (first ones) whose database the producer may not publish for."""
        if producer is None:
            return
        refused = [(index, out) for index, out in enumerate(batch) if not producer.allows(out.database)]
        if not refused:
            return
        databases = sorted({out.database or "(none)" for _, out in refused})
        allowed = ", ".join(sorted(producer.databases))
        errors = [
            {
                "index": index,
                "id": out.id,
                "field": "database",
                "message": f"token {producer.name!r} may not publish for database "
                f"{out.database or '(none)'!r} (it may for: {allowed})",
            }
            for index, out in refused[:MAX_REPORTED]
        ]
        raise Rejection(
            403,
            f"token {producer.name!r} may not publish for database {', '.join(map(repr, databases))}; "
            f"{len(refused)} event(s) refused and nothing of this request was published",
            errors,
            rejected_events=len(refused),
        )


def load_tokens_file(path: str) -> list[ProducerToken]:
    """The producers of a tokens file (see the module docstring); TokensError naming what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokensError(f"cannot read the tokens file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TokensError(f"tokens file {path} is not valid YAML/JSON: {exc}") from None
    items = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise TokensError(f"tokens file {path}: needs 'tokens:', a non-empty list of name/token/databases")
    return [_producer(item, f"tokens file {path}: tokens[{i}]") for i, item in enumerate(items)]


def _producer(item: Any, where: str) -> ProducerToken:
    if not isinstance(item, dict):
        raise TokensError(f"{where}: must be a mapping with name, token (or sha256, tokenFile), databases")
    unknown = sorted(set(item) - {"name", "token", "sha256", "tokenFile", "databases"})
    if unknown:
        raise TokensError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TokensError(f"{where}.name: {name!r} must be 1-63 characters of a-z, 0-9, '_', '.', '-'")
    given = [k for k in ("token", "sha256", "tokenFile") if item.get(k) is not None]
    if len(given) != 1:
        raise TokensError(f"{where}: give exactly one of token, sha256, tokenFile")
    digest = _digest_of(item, given[0], where)
    databases = item.get("databases")
    if (
        not isinstance(databases, list)
        or not databases
        or not all(isinstance(d, str) and d.strip() for d in databases)
    ):
        raise TokensError(f"{where}.databases: a non-empty list of database names, or ['*'] for any")
    return ProducerToken(name, digest, frozenset(d.strip() for d in databases))


def _digest_of(item: dict[str, Any], field: str, where: str) -> bytes:
    value = item[field]
    if not isinstance(value, str):
        raise TokensError(f"{where}.{field}: must be a string")
    if field == "sha256":
        if not _SHA256_HEX.fullmatch(value.strip().lower()):
            raise TokensError(f"{where}.sha256: must be 64 hex digits (sha256sum of the token)")
        return bytes.fromhex(value.strip())
    if field == "tokenFile":
        try:
            value = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokensError(f"{where}.tokenFile: cannot read {value}: {exc.strerror or exc}") from None
    token = value.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise TokensError(f"{where}.{field}: a token must be at least {MIN_TOKEN_CHARS} characters")
    return _digest(token.encode())
