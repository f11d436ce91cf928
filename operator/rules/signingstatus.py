"""status.signing of a Webhook: its scheme and live keys by key id (ed25519 public keys too), and the
JWKS document those public keys make (RFC 7517 with RFC 8037 OKP keys). Pure; never key material."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hookline.api import SigningStatus, WebhookSpec, checked_status
from hookline.api.credentials import GENERATED_SECRET_KEY, SigningScheme, generated_secret_name
from hookline.sender.model.credentials import Credentials
from hookline.sender.model.signingkeys import b64url


def signing_status(
    webhook: str, spec: WebhookSpec, creds: Credentials | None, error: str | None
) -> dict[str, Any]:
    """The whole status.signing (None removes it: the Webhook does not sign)."""
    signing = spec.signing
    if signing is None:
        return {}
    where = [f"{r.name}/{r.key}" for r in signing.refs()]
    if signing.generate is not None:
        where.append(f"{generated_secret_name(webhook)}/{GENERATED_SECRET_KEY}")
    keys = []
    for index, key in enumerate(creds.keys if creds else ()):
        item: dict[str, Any] = {"keyId": key.key_id, "algorithm": key.algorithm}
        if index < len(where):
            item["secret"] = where[index]
        if key.public_raw is not None:
            item["publicKey"] = b64url(key.public_raw)
        keys.append(item)
    part: dict[str, Any] = {
        "scheme": str(signing.scheme or SigningScheme.STANDARD_WEBHOOKS),
        "keys": keys,
        "lastError": error[:1024] if error else None,
        "generatedSecret": generated_secret_name(webhook) if signing.generate else None,
    }
    return checked_status(SigningStatus, part)


def jwks(statuses: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A JWKS document of the ed25519 keys in these status.signing parts (HMAC keys are not public)."""
    out = []
    for part in statuses:
        for key in part.get("keys") or ():
            if key.get("algorithm") == "ed25519" and key.get("publicKey"):
                kid = key["keyId"]
                out.append(
                    {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": key["publicKey"],
                        "kid": kid,
                        "alg": "EdDSA",
                        "use": "sig",
                    }
                )
    return {"keys": out}
