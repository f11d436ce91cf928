"""The operator's NATS identity and the senders' users it mints and revokes (I/O around natsaccounts).

At start (`load`): with the chart's embedded NATS the install's auth Secret (HOOKLINE_NATS_AUTH_SECRET, in
the operator's namespace) is read, or made when missing: new nkeys, every component's `.creds`, and the
server's `auth.conf` (the NATS, ingest and pool pods mount it and wait until it exists). Its files are
written to a private folder (0700) of the operator's own, so its connection takes paths, never values.
With an external NATS the same files come mounted (nats.auth.existingSecret, HOOKLINE_NATS_KEYS_DIR).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import kopf

from hookline.operator.adapters import kubeapi
from hookline.operator.rules import desired, natscreds
from hookline.sender import bus
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.natsaccounts import SEED_FILES, AuthKeys, revoke_users
from hookline.sender.bus.natsperms import SenderIdentity, inbox_prefix, sender_permissions
from hookline.sender.model.config import consumer_name

log = logging.getLogger(__name__)

MANAGED_LABELS = {"app.kubernetes.io/name": "hookline", "app.kubernetes.io/component": "nats-auth"}


def auth_secret_data(keys: AuthKeys) -> dict[str, str]:
    """Everything the install's auth Secret holds (seeds, component creds, the server's auth.conf)."""
    return keys.secret_files()


def auth_secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_LABELS)},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def read_or_make_auth_secret(api: kubeapi.KubeAPI, namespace: str, name: str) -> dict[str, str]:
    """The install's auth Secret's files; made with new keys when it does not exist (both operator
    replicas may try at once: the second one's create is a Conflict, and it reads the first one's)."""
    url = kubeapi.secret(namespace, name)
    have = await api.get(url)
    if have is None:
        data = auth_secret_data(AuthKeys.generate())
        try:
            await api.create(url.rsplit("/", 1)[0], auth_secret(namespace, name, data))
            log.info(
                "NATS accounts made: Secret %s/%s (the NATS server and components mount it)", namespace, name
            )
            return data
        except kubeapi.Conflict:
            have = await api.get(url)
    if have is None:
        raise RuntimeError(f"the NATS auth Secret {namespace}/{name} could not be read")
    return {k: base64.b64decode(v).decode() for k, v in (have.get("data") or {}).items()}


def write_private(files: dict[str, str]) -> Path:
    """The files in a new folder only this process's user may read; its path."""
    folder = Path(tempfile.mkdtemp(prefix="hookline-nats-"))
    os.chmod(folder, 0o700)
    for name, text in files.items():
        path = folder / name
        path.write_text(text)
        os.chmod(path, 0o600)
    return folder


class NatsMinter:
    """Mints each dedicated sender's user and revokes it when the Webhook goes."""

    def __init__(
        self,
        keys: AuthKeys,
        url: str,
        *,
        system_creds: str | None,
        ca_file: str | None,
        lifetime: int = natscreds.DEFAULT_USER_LIFETIME_SECONDS,
    ) -> None:
        self.keys = keys
        self.lifetime = lifetime  # the senders' user JWTs; their revocations are kept as long
        self.url = url
        self.system_creds = system_creds
        self.ca_file = ca_file
        self.ca = Path(ca_file).read_text() if ca_file else None

    def __repr__(self) -> str:
        return f"NatsMinter(account={self.keys.account.public!r})"

    def identity(self, namespace: str, name: str) -> SenderIdentity:
        return SenderIdentity(namespace, name, consumer_name(namespace, name))

    def planned(self, namespace: str, name: str, uid: str) -> tuple[str, str]:
        """The user's public key and its permissions' digest, without minting."""
        who = self.identity(namespace, name)
        public = self.keys.sender_user(who, uid).public
        return public, natscreds.permissions_digest(sender_permissions(who))

    def mint(self, namespace: str, name: str, uid: str) -> natscreds.MintedUser:
        who = self.identity(namespace, name)
        public, digest = self.planned(namespace, name, uid)
        expires = int(time.time()) + self.lifetime if self.lifetime else None
        creds = self.keys.sender_creds(who, uid, expires_at=expires)
        return natscreds.MintedUser(creds, public, digest, expires)

    async def revoke(self, namespace: str, name: str, uid: str) -> None:
        """Push the account's revocations with this sender's user added (a copied creds file stops
        working at once, before the Secret is garbage-collected)."""
        if not self.system_creds:
            log.warning(
                "sender %s/%s: no system account credentials; its NATS user is not revoked", namespace, name
            )
            return
        user = self.keys.sender_user(self.identity(namespace, name), uid).public
        auth = BusAuth(
            creds_file=self.system_creds, tls_ca_file=self.ca_file, inbox_prefix=inbox_prefix("system")
        )
        nc = await bus.connect(self.url, name="hookline-operator-system", auth=auth, initial_attempts=2)
        try:
            await revoke_users(nc, self.keys, [user], lifetime=self.lifetime or None)
        finally:
            await bus.close_quietly(nc)
        log.info("sender %s/%s: NATS user %s revoked", namespace, name, user)


def minter_of(
    folder: Path | None,
    url: str,
    ca_file: str | None,
    lifetime: int = natscreds.DEFAULT_USER_LIFETIME_SECONDS,
) -> NatsMinter | None:
    """A minter when the folder holds the seeds (an external NATS's Secret may hold creds only)."""
    if folder is None:
        return None
    files = {}
    for name in SEED_FILES.values():
        with contextlib.suppress(OSError):
            files[name] = (folder / name).read_text()
    if len(files) < len(SEED_FILES):
        log.warning("NATS auth: %s holds no signing keys; senders get no NATS users of their own", folder)
        return None
    system = folder / "system.creds"
    return NatsMinter(
        AuthKeys.from_files(files),
        url,
        system_creds=str(system) if system.is_file() else None,
        ca_file=ca_file,
        lifetime=lifetime,
    )


async def ensure_sender_secret(api: kubeapi.KubeAPI, minter: NatsMinter, owner: dict[str, Any]) -> str:
    """Mint the sender's user into its Secret when absent or changed: 'created', 'updated', 'unchanged'."""
    meta = owner["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], str(meta.get("uid") or "")
    url = kubeapi.secret(namespace, natscreds.secret_name(name))
    have = await api.get(url)
    public, digest = minter.planned(namespace, name, uid)
    if not natscreds.needs_mint(have, public, digest, minter.ca, now=time.time(), lifetime=minter.lifetime):
        return "unchanged"
    user = minter.mint(namespace, name, uid)
    labels = desired.sender_labels(name)
    want = natscreds.secret(desired.owner_reference(owner), namespace, name, labels, user, minter.ca)
    if have is None:
        await api.create(url.rsplit("/", 1)[0], want)
        return "created"
    want["metadata"]["resourceVersion"] = have["metadata"].get("resourceVersion")
    await api.replace(url, want)
    return "updated"


async def revoke_sender(
    minter: NatsMinter, owner: Any, *, retry: int = 0, attempts: int = 1, delay: float = 5.0
) -> None:
    """Revoke a deleted Webhook's sender user; NATS away: tried again (`attempts` in all, a Kopf retry
    of the deletion handler), then a warning Event (the Secret still goes with the Webhook)."""
    meta = owner["metadata"]
    try:
        await minter.revoke(meta["namespace"], meta["name"], str(meta.get("uid") or ""))
    except Exception as exc:
        if retry + 1 < attempts:
            raise kopf.TemporaryError(
                f"the sender's NATS user was not revoked yet: {exc}", delay=delay
            ) from None
        kopf.warn(
            owner, reason="NatsUserNotRevoked", message=f"the sender's NATS user was not revoked: {exc}"
        )
