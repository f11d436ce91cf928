"""A dedicated sender's NATS user (pure): the Secret the operator mints into the Webhook's namespace, how
the sender pod mounts it, and the config fields that point at it.

The Secret `<webhook>-sender-nats` holds `user.creds` (the user JWT and its seed; its subjects:
natsperms.sender_permissions) and, with a TLS NATS, `ca.crt`. It is owned by the Webhook (garbage
collected with it) and labelled as the sender's other objects; the user is also revoked on the server
when the Webhook goes (natsaccounts.revoke_users). The sender config (a ConfigMap) holds only the
mounted paths. The annotations say which user and which permissions the Secret holds, so a reconcile
mints again only when one of them changed (the creds text differs on every mint: its JWT carries the
time it was issued)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookline.sender.bus.natsjwt import Permissions

MOUNT_DIR = "/etc/hookline/nats"
CREDS_KEY = "user.creds"
CA_KEY = "ca.crt"
VOLUME = "nats-credentials"
USER_ANNOTATION = "hookline.io/nats-user"
PERMISSIONS_ANNOTATION = "hookline.io/nats-permissions"
EXPIRES_ANNOTATION = "hookline.io/nats-expires"  # unix seconds: the user JWT's expiry
# A sender's user JWT lives this long and is minted again when a third of it is left (the kubelet
# updates the mounted file; nats-py reads it at its next connect). Revocations are kept as long.
DEFAULT_USER_LIFETIME_SECONDS = 90 * 86400
SECRET_TYPE = "hookline.io/nats-credentials"
CREDENTIALS_LABEL = "hookline.io/nats-credentials"  # = "sender": the renewal lists them by it


def secret_name(webhook: str) -> str:
    return f"{webhook}-sender-nats"


def permissions_digest(permissions: Permissions) -> str:
    text = json.dumps(permissions.claims(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class MintedUser:
    """What the operator minted for one sender: the `.creds` text (a secret), its public key and the
    digest of its permissions (not secrets: they go on the Secret's annotations)."""

    creds: str
    public: str
    permissions: str
    expires_at: int | None = None

    def __repr__(self) -> str:  # never the creds in a log line
        return f"MintedUser(public={self.public!r})"


def needs_mint(
    have: Mapping[str, Any] | None,
    public: str,
    permissions: str,
    ca: str | None,
    *,
    now: float = 0.0,
    lifetime: int | None = None,
) -> bool:
    """Whether the Secret must be written: absent, another user or permissions, another CA, or (with
    a `lifetime`) a third or less of its JWT's life left."""
    if have is None:
        return True
    notes = (have.get("metadata") or {}).get("annotations") or {}
    if notes.get(USER_ANNOTATION) != public or notes.get(PERMISSIONS_ANNOTATION) != permissions:
        return True
    if lifetime:
        try:
            expires = int(notes.get(EXPIRES_ANNOTATION, ""))
        except ValueError:
            return True
        if expires - now < lifetime / 3:
            return True
    data = have.get("data") or {}
    if CREDS_KEY not in data:
        return True
    have_ca = base64.b64decode(data[CA_KEY]).decode() if CA_KEY in data else None
    return have_ca != ca


def secret(
    owner_ref: Mapping[str, Any],
    namespace: str,
    webhook: str,
    labels: Mapping[str, str],
    user: MintedUser,
    ca: str | None,
) -> dict[str, Any]:
    data = {CREDS_KEY: base64.b64encode(user.creds.encode()).decode()}
    if ca:
        data[CA_KEY] = base64.b64encode(ca.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name(webhook),
            "namespace": namespace,
            "labels": {**labels, CREDENTIALS_LABEL: "sender"},
            "annotations": {
                USER_ANNOTATION: user.public,
                PERMISSIONS_ANNOTATION: user.permissions,
                **({EXPIRES_ANNOTATION: str(user.expires_at)} if user.expires_at else {}),
            },
            "ownerReferences": [dict(owner_ref)],
        },
        "data": data,
    }


def pod_volume(webhook: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Secret volume (readable by the pod's group only: fsGroup) and its read-only mount."""
    volume = {"name": VOLUME, "secret": {"secretName": secret_name(webhook), "defaultMode": 0o440}}
    mount = {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}
    return volume, mount


def config_fields(tls: bool) -> dict[str, str]:
    """The sender config's `nats` fields: paths of the mounted files only."""
    fields = {"credsFile": f"{MOUNT_DIR}/{CREDS_KEY}"}
    if tls:
        fields["tlsCaFile"] = f"{MOUNT_DIR}/{CA_KEY}"
    return fields


KEYS_DIR_ENV = "HOOKLINE_NATS_KEYS_DIR"
AUTH_SECRET_ENV = "HOOKLINE_NATS_AUTH_SECRET"


@dataclass(frozen=True)
class NatsAuthSettings:
    """How the operator authenticates to NATS and mints senders' users (paths and names, no secrets).

    `auth_secret`: the install's auth Secret in the operator's namespace (chart, embedded NATS): made
    at start when missing (natsaccounts.AuthKeys), read otherwise. `keys_dir`: a mounted folder with
    the seeds and component creds (an external NATS: nats.auth.existingSecret). `creds_file`: the
    operator's own user; `ca_file`: the CA of a TLS NATS, also given to every sender."""

    auth_secret: str | None = None
    keys_dir: str | None = None
    creds_file: str | None = None
    ca_file: str | None = None
    namespace: str = "default"  # the operator's own (HOOKLINE_POD_NAMESPACE): where auth_secret lives
    user_lifetime: int = DEFAULT_USER_LIFETIME_SECONDS  # senders' user JWTs (0: no expiry)
    renew_every_seconds: float = 6 * 3600.0  # how often the senders' users near expiry are looked for

    @property
    def enabled(self) -> bool:
        return bool(self.auth_secret or self.keys_dir or self.creds_file)


def nats_auth_from_env(env: Mapping[str, str]) -> NatsAuthSettings:
    """HOOKLINE_NATS_AUTH_SECRET, HOOKLINE_NATS_KEYS_DIR, HOOKLINE_NATS_CREDS, HOOKLINE_NATS_CA."""
    keys_dir = env.get(KEYS_DIR_ENV, "").strip() or None
    creds = env.get("HOOKLINE_NATS_CREDS", "").strip() or None
    return NatsAuthSettings(
        auth_secret=env.get(AUTH_SECRET_ENV, "").strip() or None,
        keys_dir=keys_dir,
        creds_file=creds or (f"{keys_dir}/operator.creds" if keys_dir else None),
        ca_file=env.get("HOOKLINE_NATS_CA", "").strip() or None,
        namespace=(env.get("HOOKLINE_NATS_AUTH_NAMESPACE") or env.get("HOOKLINE_POD_NAMESPACE") or "").strip()
        or "default",
        user_lifetime=int(
            env.get("HOOKLINE_NATS_SENDER_USER_LIFETIME_SECONDS", "").strip() or DEFAULT_USER_LIFETIME_SECONDS
        ),
    )
