"""Signing keys of every kind a Webhook may hold, parsed from a Secret's text, with their key ids.

``whsec_<base64>`` (or bare base64, as before) is an HMAC-SHA256 key (Standard Webhooks ``v1``, RFC 9421
``hmac-sha256``); ``whsk_<base64 of the 32-byte seed>`` or a PKCS#8 PEM is an ed25519 private key
(``v1a``, RFC 9421 ``ed25519``). A key id names a key without revealing it: the RFC 7638 JWK thumbprint
of an ed25519 public key, and for an HMAC key ``hmac-`` and 16 hex digits of a SHA-256 over it
(a one-way fingerprint of at least 128 random bits). Pure; errors never repeat key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hookline.sender.model.signing import MIN_KEY_BYTES, SECRET_PREFIX, parse_secret, sign

ED25519_SECRET_PREFIX = "whsk_"
ED25519_PUBLIC_PREFIX = "whpk_"
Algorithm = Literal["hmac-sha256", "ed25519"]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """One live key: its algorithm and secret bytes (HMAC key or ed25519 seed). The repr hides both."""

    algorithm: Algorithm
    secret: bytes = field(repr=False)
    key_id: str = ""

    def __post_init__(self) -> None:
        if not self.key_id:
            object.__setattr__(self, "key_id", _key_id(self.algorithm, self.secret))

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return _ed25519(self.secret)

    @property
    def public_raw(self) -> bytes | None:
        """The raw ed25519 public key (None for HMAC: nothing of it is public)."""
        if self.algorithm != "ed25519":
            return None
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def jwk(self) -> dict[str, str] | None:
        """The public JWK (RFC 8037 OKP) of an ed25519 key, with ``kid``; None for HMAC."""
        raw = self.public_raw
        if raw is None:
            return None
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(raw),
            "kid": self.key_id,
            "alg": "EdDSA",
            "use": "sig",
        }


_PRIVATE: dict[bytes, Ed25519PrivateKey] = {}


def _ed25519(seed: bytes) -> Ed25519PrivateKey:
    key = _PRIVATE.get(seed)
    if key is None:
        if len(_PRIVATE) >= 64:
            _PRIVATE.clear()
        key = _PRIVATE[seed] = Ed25519PrivateKey.from_private_bytes(seed)
    return key


def _key_id(algorithm: Algorithm, secret: bytes) -> str:
    if algorithm == "hmac-sha256":
        return "hmac-" + hashlib.sha256(b"hookline key id\x00" + secret).hexdigest()[:16]
    raw = (
        _ed25519(secret).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())  # RFC 7638 thumbprint


def parse_signing_key(text: str) -> SigningKey:
    """A key from a Secret's text; ValueError says what is wrong without repeating it."""
    if not isinstance(text, str):
        raise ValueError("a signing key must be text: whsec_<base64> (HMAC) or whsk_<base64> (ed25519)")
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_private_key(stripped.encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError(
                "the PEM signing key does not load (an unencrypted PKCS#8 ed25519 key is expected)"
            ) from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError("the PEM signing key is not an ed25519 key")
        seed = loaded.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return SigningKey("ed25519", seed)
    if stripped.startswith(ED25519_SECRET_PREFIX):
        encoded = stripped[len(ED25519_SECRET_PREFIX) :]
        encoded += "=" * (-len(encoded) % 4)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the whsk_ signing key is not base64 after the prefix") from None
        if len(raw) not in (32, 64):  # the seed, or seed + public key as some libraries write it
            raise ValueError(f"the whsk_ signing key holds {len(raw)} bytes; an ed25519 seed is 32")
        return SigningKey("ed25519", raw[:32])
    return SigningKey("hmac-sha256", parse_secret(stripped))


def generate_key_text(algorithm: Algorithm) -> str:
    """A new key as a Secret holds it: ``whsk_`` + the ed25519 seed, or ``whsec_`` + 32 random bytes."""
    if algorithm == "ed25519":
        seed = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return ED25519_SECRET_PREFIX + base64.b64encode(seed).decode()
    return SECRET_PREFIX + base64.b64encode(os.urandom(max(32, MIN_KEY_BYTES))).decode()


def public_key_text(key: SigningKey) -> str | None:
    """``whpk_<base64>``: the public key as Standard Webhooks writes it (None for HMAC)."""
    raw = key.public_raw
    return None if raw is None else ED25519_PUBLIC_PREFIX + base64.b64encode(raw).decode()


def sign_standard(keys: tuple[SigningKey, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: ``v1,<hmac>`` and ``v1a,<ed25519>`` for every live key, space-separated."""
    parts = []
    for key in keys:
        if key.algorithm == "hmac-sha256":
            parts.append(sign(key.secret, msg_id, timestamp, body))
        else:
            signed = key.private_key.sign(f"{msg_id}.{timestamp}.".encode() + body)
            parts.append("v1a," + binascii.b2a_base64(signed, newline=False).decode("ascii"))
    return " ".join(parts)
