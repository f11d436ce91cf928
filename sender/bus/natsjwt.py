"""NATS decentralized auth, the pure part: nkeys (ed25519 keys with a role prefix), the v2 JWT claims of
an operator, an account and a user, and the `.creds` file nats-py reads.

Why not the PyPI `nats-jwt` package: 0.2.2 pins old `pytz`/`dataclasses-json`, pulls `pycryptodome`, and
its account claims import a module the wheel does not ship (`nats_jwt.v2.revocation_list`). A JWT here is
three base64url parts, `{"typ":"JWT","alg":"ed25519-nkey"}`, the claims, and the ed25519 signature of the
first two by the issuer's nkey (nats-io/jwt v2's claim shapes); `nkeys` (nats-py needs it for `.creds`
anyway) encodes and signs the keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import nkeys

__all__ = [
    "KeyPair",
    "Permissions",
    "account_claims",
    "creds_file",
    "decode_jwt",
    "encode_jwt",
    "new_key",
    "operator_claims",
    "user_claims",
]

ROLES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1


@dataclass(frozen=True)
class KeyPair:
    """An nkey: its seed (secret, `S...`) and public key (`O...`, `A...`, `U...`)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        pair = nkeys.from_seed(self.seed.encode())
        try:
            return bytes(pair.sign(data))
        finally:
            pair.wipe()

    def __repr__(self) -> str:  # never the seed in a log line or a traceback
        return f"KeyPair(public={self.public!r})"


def new_key(role: str) -> KeyPair:
    """A fresh nkey of `role` (operator, account or user)."""
    seed = nkeys.encode_seed(os.urandom(32), ROLES[role]).decode()
    return key_from_seed(seed)


def key_from_seed(seed: str) -> KeyPair:
    pair = nkeys.from_seed(seed.strip().encode())
    try:
        return KeyPair(seed=seed.strip(), public=pair.public_key.decode())
    finally:
        pair.wipe()


@dataclass(frozen=True)
class Permissions:
    """A user's subjects: what it may publish and subscribe to (allow lists; all else is denied), and
    whether it may answer requests made to it (`responses`: the reply subjects it was sent, once)."""

    pub: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    pub_deny: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()
    responses: int = 0  # how many replies per request (0: none; the `resp` claim)

    def claims(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pub": _allow_deny(self.pub, self.pub_deny),
            "sub": _allow_deny(self.sub, self.sub_deny),
        }
        if self.responses:
            out["resp"] = {"max": self.responses, "ttl": 0}
        return out


def _allow_deny(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    # An empty allow list would mean "everything": a user with nothing to publish is denied ">".
    rules: dict[str, list[str]] = {"allow": list(allow)} if allow else {"deny": [">"]}
    if deny and allow:
        rules["deny"] = list(deny)
    return rules


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], issuer: KeyPair) -> str:
    """Sign `claims` with the issuer's nkey (its public key goes in `iss`; `jti` is the claims' hash)."""
    body = {**claims, "iss": issuer.public, "iat": int(claims.get("iat") or time.time())}
    body.pop("jti", None)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(HEADER).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims of a JWT (signature not checked: for reading what was minted, tests and status)."""
    try:
        return dict(json.loads(_unb64(token.split(".")[1])))
    except (IndexError, ValueError) as exc:
        raise ValueError("not a NATS JWT (three base64url parts with JSON claims)") from exc


def operator_claims(operator: KeyPair, system_account: str, *, name: str = "hookline") -> dict[str, Any]:
    return {
        "sub": operator.public,
        "name": name,
        "nats": {"system_account": system_account, "type": "operator", "version": 2},
    }


@dataclass(frozen=True)
class AccountSpec:
    """An account's claims: JetStream on or off, the keys that may sign its users, the users revoked
    (public key -> unix time: JWTs issued at or before it are refused)."""

    name: str
    public: str
    jetstream: bool = False
    signing_keys: tuple[str, ...] = ()
    revocations: dict[str, int] = field(default_factory=dict)


def account_claims(spec: AccountSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "imports": UNLIMITED,
        "exports": UNLIMITED,
        "wildcards": True,
        "conn": UNLIMITED,
        "leaf": UNLIMITED,
    }
    if spec.jetstream:
        limits.update(mem_storage=UNLIMITED, disk_storage=UNLIMITED, streams=UNLIMITED, consumer=UNLIMITED)
    nats: dict[str, Any] = {"limits": limits, "type": "account", "version": 2}
    if spec.signing_keys:
        nats["signing_keys"] = list(spec.signing_keys)
    if spec.revocations:
        nats["revocations"] = dict(sorted(spec.revocations.items()))
    return {"sub": spec.public, "name": spec.name, "nats": nats}


def user_claims(
    user: str,
    name: str,
    permissions: Permissions,
    *,
    issuer_account: str | None = None,
    expires_at: int | None = None,
) -> dict[str, Any]:
    """A user's claims; `issuer_account` when a signing key (not the account's own key) signs it."""
    nats: dict[str, Any] = {
        **permissions.claims(),
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "type": "user",
        "version": 2,
    }
    if issuer_account:
        nats["issuer_account"] = issuer_account
    claims: dict[str, Any] = {"sub": user, "name": name, "nats": nats}
    if expires_at:
        claims["exp"] = int(expires_at)
    return claims


def creds_file(user_jwt: str, user: KeyPair) -> str:
    """The `.creds` text nats-py's `user_credentials=` reads: the JWT and the user's seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def jwt_of_creds(text: str) -> str:
    """The user JWT inside a `.creds` text."""
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if "BEGIN NATS USER JWT" in line and index + 1 < len(lines):
            return lines[index + 1]
    raise ValueError("not a NATS credentials file (no user JWT block)")
