"""hookline's NATS accounts: one NATS operator, the system account and the account HOOKLINE (JetStream on,
users signed by its signing key); the server config that trusts them; credentials minted per identity;
revocations pushed to a running server.

The keys are made once per install (`AuthKeys.generate`, kept as a Secret's files: `AuthKeys.files`)
and everything else is derived from them: the server's `auth.conf`, each component's `.creds`, and each
dedicated sender's `.creds` (its nkey derived from the signing key and the Webhook's uid, so the operator
can revoke a gone Webhook's user without having stored anything).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nkeys

from hookline.sender.bus.natsjwt import (
    AccountSpec,
    KeyPair,
    Permissions,
    account_claims,
    creds_file,
    decode_jwt,
    encode_jwt,
    key_from_seed,
    new_key,
    operator_claims,
    user_claims,
)
from hookline.sender.bus.natsperms import (
    SenderIdentity,
    ingest_permissions,
    layout_permissions,
    operator_permissions,
    pool_permissions,
    sender_permissions,
    system_permissions,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

ACCOUNT_NAME = "HOOKLINE"
SYSTEM_ACCOUNT_NAME = "SYS"
# The Secret's keys (files) holding the seeds; the component credentials beside them.
SEED_FILES = {
    "operator": "operator.nk",
    "system": "system-account.nk",
    "account": "account.nk",
    "signer": "account-signing.nk",
}
COMPONENT_CREDS = ("operator", "ingest", "layout", "pool", "system")
SERVER_CONFIG_FILE = "auth.conf"


@dataclass(frozen=True)
class AuthKeys:
    """The install's nkeys (secrets: a Secret's files, never a ConfigMap or a log line)."""

    operator: KeyPair
    system: KeyPair
    account: KeyPair
    signer: KeyPair

    @classmethod
    def generate(cls) -> AuthKeys:
        return cls(new_key("operator"), new_key("account"), new_key("account"), new_key("account"))

    def files(self) -> dict[str, str]:
        return {SEED_FILES[role]: getattr(self, role).seed + "\n" for role in SEED_FILES}

    @classmethod
    def from_files(cls, files: dict[str, str]) -> AuthKeys:
        missing = [name for name in SEED_FILES.values() if not files.get(name, "").strip()]
        if missing:
            raise ValueError(f"NATS auth keys: {', '.join(missing)} missing or empty")
        return cls(**{role: key_from_seed(files[name]) for role, name in SEED_FILES.items()})

    def operator_jwt(self) -> str:
        return encode_jwt(operator_claims(self.operator, self.system.public), self.operator)

    def system_jwt(self) -> str:
        spec = AccountSpec(SYSTEM_ACCOUNT_NAME, self.system.public)
        return encode_jwt(account_claims(spec), self.operator)

    def account_jwt(self, revocations: dict[str, int] | None = None, *, issued_at: int | None = None) -> str:
        spec = AccountSpec(
            ACCOUNT_NAME,
            self.account.public,
            jetstream=True,
            signing_keys=(self.signer.public,),
            revocations=dict(revocations or {}),
        )
        claims = account_claims(spec)
        if issued_at:
            claims["iat"] = issued_at
        return encode_jwt(claims, self.operator)

    def user_creds(self, user: KeyPair, name: str, permissions: Permissions, *, system: bool = False) -> str:
        """A user of HOOKLINE (signed by its signing key) or, `system`, of the system account."""
        if system:
            claims = user_claims(user.public, name, permissions)
            return creds_file(encode_jwt(claims, self.system), user)
        claims = user_claims(user.public, name, permissions, issuer_account=self.account.public)
        return creds_file(encode_jwt(claims, self.signer), user)

    def component_creds(self) -> dict[str, str]:
        """`<component>.creds` for the install's own processes (fresh user keys each call)."""
        perms = {
            "operator": operator_permissions(),
            "ingest": ingest_permissions(),
            "layout": layout_permissions(),
            "pool": pool_permissions("*"),
        }
        out = {f"{role}.creds": self.user_creds(new_key("user"), role, p) for role, p in perms.items()}
        out["system.creds"] = self.user_creds(new_key("user"), "system", system_permissions(), system=True)
        return out

    def secret_files(self) -> dict[str, str]:
        """Everything the install's auth Secret holds: seeds, components' creds, the server's auth.conf."""
        return {**self.files(), **self.component_creds(), SERVER_CONFIG_FILE: self.server_config()}

    def sender_user(self, who: SenderIdentity, uid: str) -> KeyPair:
        """The sender's nkey, derived from the signing key and the Webhook's uid (a Webhook made again
        under the same name gets another key; the old one stays revoked)."""
        material = hmac.new(
            self.signer.seed.encode(), f"sender\0{who.namespace}\0{who.name}\0{uid}".encode(), hashlib.sha256
        ).digest()
        return key_from_seed(nkeys.encode_seed(material, nkeys.PREFIX_BYTE_USER).decode())

    def sender_creds(self, who: SenderIdentity, uid: str, *, expires_at: int | None = None) -> str:
        """The sender's `.creds`; `expires_at` bounds how long a copy stays useful (and how long its
        revocation must be kept: `prune_revocations`)."""
        user = self.sender_user(who, uid)
        claims = user_claims(
            user.public,
            who.user_name,
            sender_permissions(who),
            issuer_account=self.account.public,
            expires_at=expires_at,
        )
        return creds_file(encode_jwt(claims, self.signer), user)

    def server_config(
        self, resolver_dir: str | None = None, revocations: dict[str, int] | None = None
    ) -> str:
        """nats-server's accounts: trust this operator and the system account, and preload both
        accounts' JWTs. The resolver block (where pushed JWTs, i.e. revocations, are kept) is the
        chart's (`resolver_block`, on the server's volume); with `resolver_dir` it is added here."""
        text = (
            "# hookline's NATS accounts (generated; the seeds are in the same Secret, not here).\n"
            f"operator: {self.operator_jwt()}\n"
            f"system_account: {self.system.public}\n"
            "resolver_preload: {\n"
            f"  {self.system.public}: {self.system_jwt()}\n"
            f"  {self.account.public}: {self.account_jwt(revocations)}\n"
            "}\n"
        )
        return text + resolver_block(resolver_dir) if resolver_dir else text


def resolver_block(resolver_dir: str) -> str:
    """The full (NATS-based) resolver: account JWTs pushed to `$SYS.REQ.CLAIMS.UPDATE` are stored in
    `resolver_dir` and outlive a restart (deletes refused)."""
    return (
        "resolver: {\n"
        "  type: full\n"
        f"  dir: {json.dumps(resolver_dir)}\n"
        "  allow_delete: false\n"
        '  interval: "2m"\n'
        '  timeout: "5s"\n'
        "}\n"
    )


class RevocationRefused(Exception):
    """The server did not take the account JWT with the new revocations."""


def prune_revocations(revocations: dict[str, int], now: int, lifetime: int | None) -> dict[str, int]:
    """Drop the revocations no JWT needs any more: a revocation at T refuses JWTs issued up to T, and
    a sender's JWT lives `lifetime` seconds, so after T + lifetime every JWT it refuses has expired.
    This bounds the account JWT (10,000 revocations are ~0.94 MB, near NATS's 1 MiB max payload) by
    the Webhooks deleted within one lifetime, not by all ever deleted."""
    if not lifetime:
        return dict(revocations)
    return {user: at for user, at in revocations.items() if at + lifetime > now}


async def revoke_users(
    nc: NATS, keys: AuthKeys, users: list[str], *, within: float = 5.0, lifetime: int | None = None
) -> dict[str, int]:
    """Add `users` to HOOKLINE's revocations on the running server (over a system-account connection):
    read the account JWT the server holds, add them, drop the expired ones (`lifetime`: the users'
    JWT lifetime), sign it again, push it. Returns the revocations."""
    lookup = await nc.request(f"$SYS.REQ.ACCOUNT.{keys.account.public}.CLAIMS.LOOKUP", b"", timeout=within)
    current: dict[str, int] = {}
    if lookup.data:
        with_claims = decode_jwt(lookup.data.decode())
        current = dict(with_claims.get("nats", {}).get("revocations") or {})
    now = int(time.time())
    current = prune_revocations(current, now, lifetime)
    current.update({user: now for user in users})
    token = keys.account_jwt(current, issued_at=now)
    reply = await nc.request("$SYS.REQ.CLAIMS.UPDATE", token.encode(), timeout=within)
    answer = json.loads(reply.data or b"{}")
    if "error" in answer:
        raise RevocationRefused(str(answer["error"].get("description") or answer["error"]))
    return current
