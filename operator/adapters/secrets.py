"""Signing Secrets, read for the operator's own use: a WebhookTest's one request, a pool entry's
sealed key. The value never reaches status, events or logs; errors say what to fix without it."""

from __future__ import annotations

import base64
import binascii

from hookline.api import WebhookSpec
from hookline.operator.adapters import kubeapi
from hookline.sender.model.signing import parse_secret


async def signing_key(api: kubeapi.KubeAPI, namespace: str, spec: WebhookSpec) -> bytes | None:
    """The Webhook's signing key (None: it does not sign); LookupError says what is wrong."""
    if spec.signing is None:
        return None
    ref = spec.signing.secret_ref
    secret = await api.get(kubeapi.secret(namespace, ref.name))
    where = f"Secret {ref.name} key {ref.key}"
    if secret is None:
        raise LookupError(f"{where}: the Secret does not exist; create it or fix spec.signing.secretRef")
    data = (secret.get("data") or {}).get(ref.key)
    if data is None:
        raise LookupError(f"{where}: the key is missing from the Secret")
    try:
        text = base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise LookupError(f"{where}: the Secret's data is not base64-encoded text") from None
    try:
        return parse_secret(text)
    except ValueError as exc:  # the message never repeats the secret
        raise LookupError(f"{where}: {exc}") from None
