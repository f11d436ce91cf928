"""Standard Webhooks signatures and the headers every delivery carries.

``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``; several signatures are
separated by spaces so a receiver can accept either key while a secret is rotated. Secrets are written
``whsec_<base64>`` (the bare base64 form is accepted too, as the reference library does).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hookline import USER_AGENT
from hookline.headers import header_name_problem

SECRET_PREFIX = "whsec_"
PUBLIC_PREFIX = "whpk_"  # an ed25519 public key (v1a), as `hookline keys` prints it
MIN_KEY_BYTES = 16
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A request did not verify (missing header, stale timestamp, no matching signature)."""


def parse_secret(secret: str) -> bytes:
    """The HMAC key from ``whsec_<base64>``; the error never repeats the secret."""
    if not isinstance(secret, str):
        raise ValueError("signing secret must be a string 'whsec_<base64>'")
    encoded = secret.strip()
    encoded = encoded.removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)  # unpadded base64 is common in copied secrets
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "signing secret is not 'whsec_' followed by base64; generate one with "
            "`python -c \"import base64,os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\"`"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"signing secret is too short ({len(key)} bytes after base64 decoding); use at least "
            f"{MIN_KEY_BYTES} random bytes, 32 recommended"
        )
    return key


def _is_public(secret: str | bytes) -> bool:
    return isinstance(secret, str) and secret.strip().startswith(PUBLIC_PREFIX)


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The ed25519 public key of ``whpk_<base64>``."""
    encoded = text.strip()[len(PUBLIC_PREFIX) :]
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("a whpk_ public key is 32 bytes in base64 after the prefix") from None


# HMAC state after absorbing the key, per key: `copy()` of it skips the two key-pad hashes each call.
_KEYED: dict[bytes, hmac.HMAC] = {}


def _keyed(key: bytes) -> hmac.HMAC:
    keyed = _KEYED.get(key)
    if keyed is None:
        keyed = hmac.new(key, digestmod=hashlib.sha256)
        if len(_KEYED) >= 64:  # secrets rotate rarely; a bound keeps old keys from piling up
            _KEYED.clear()
        _KEYED[key] = keyed
    return keyed


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` for one key."""
    mac = _keyed(key).copy()
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + binascii.b2a_base64(mac.digest(), newline=False).decode("ascii")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, item in headers.items():
        if key.lower() == lower:
            return item
    return None


def verify(
    secret: str | bytes | Sequence[str | bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless one ``v1`` signature matches one of the secrets within tolerance, or
    one ``v1a`` signature one of the ed25519 public keys among them (``whpk_<base64>``)."""
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    publics = [
        parse_public_key(s) for s in secrets if isinstance(s, str) and s.strip().startswith(PUBLIC_PREFIX)
    ]
    keys = [s if isinstance(s, bytes) else parse_secret(s) for s in secrets if not _is_public(s)]
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    raw_sig = _header(headers, "webhook-signature")
    if not (msg_id and raw_ts and raw_sig):
        named = (("webhook-id", msg_id), ("webhook-timestamp", raw_ts), ("webhook-signature", raw_sig))
        raise SignatureError(f"missing header(s): {', '.join(n for n, v in named if not v)}")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer (Unix seconds)") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"webhook-timestamp is {int(current - timestamp)} s away from now (tolerance {tolerance:g} s); "
            "check the clocks or whether this is a replay"
        )
    offered = [part.partition(",") for part in raw_sig.split()]
    candidates = [sig.encode() for version, _, sig in offered if version == "v1" and sig]
    asymmetric = [sig for version, _, sig in offered if version == "v1a" and sig]
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for public in publics:
        for sig in asymmetric:
            try:
                public.verify(base64.b64decode(sig), signed)
                return
            except (InvalidSignature, binascii.Error, ValueError):
                continue
    if not candidates:
        raise SignatureError(
            "webhook-signature holds no v1 signature" + (" that a given key verifies" if publics else "")
        )
    for key in keys:
        expected = sign(key, msg_id, timestamp, body)[3:].encode()
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return
    raise SignatureError(
        "no signature matches the secret; check that sender and receiver use the same secret"
    )


@functools.lru_cache(maxsize=256)
def _checked_extra_header(name: str) -> str:
    """A Webhook's extra header name, validated once per name instead of once per delivery."""
    problem = header_name_problem(name)
    if problem:
        raise ValueError(f"header {name!r} {problem}")
    return name


def request_headers(
    event_id: str,
    timestamp: int,
    content_type: str,
    body: bytes,
    key: bytes | Sequence[bytes] | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of one delivery: the Webhook's extra headers, then those hookline owns."""
    headers: dict[str, str] = {}
    if extra:
        for name, value in extra.items():
            headers[_checked_extra_header(name)] = value
    headers["User-Agent"] = USER_AGENT
    headers["Content-Type"] = content_type
    headers["webhook-id"] = event_id
    headers["webhook-timestamp"] = str(timestamp)
    if isinstance(key, bytes):
        headers["webhook-signature"] = sign(key, event_id, timestamp, body)
    elif key is not None:
        keys = list(key)
        if keys:
            headers["webhook-signature"] = " ".join(sign(k, event_id, timestamp, body) for k in keys)
    return headers
