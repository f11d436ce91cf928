"""RFC 9421 HTTP Message Signatures with an RFC 9530 ``Content-Digest``: the alternative scheme.

Each live key adds one signature (labels ``sig1``, ``sig2``, ...) over the same covered components:
``@method``, ``@target-uri``, ``content-digest``, ``webhook-id`` and ``webhook-timestamp``, with the
parameters ``created``, ``keyid`` and ``alg`` (``ed25519`` or ``hmac-sha256``). The digest binds the
body, the covered ``webhook-timestamp`` and ``created`` bind the time, so a receiver verifying with any
RFC 9421 library refuses a changed body, method, URL, id or timestamp. A small signer of our own
(pure, no I/O): the signature base is a few lines, and the tests verify it with the independent
``http-message-signatures`` library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from hookline.sender.model.signingkeys import SigningKey

COVERED = ("@method", "@target-uri", "content-digest", "webhook-id", "webhook-timestamp")
ALGORITHMS = {"ed25519": "ed25519", "hmac-sha256": "hmac-sha256"}


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` with SHA-256 (a structured-field dictionary of byte sequences)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _params(key: SigningKey, created: int) -> str:
    components = " ".join(f'"{name}"' for name in COVERED)
    return f'({components});created={created};keyid="{key.key_id}";alg="{ALGORITHMS[key.algorithm]}"'


def signature_base(
    method: str, target_uri: str, digest: str, msg_id: str, timestamp: int, params: str
) -> bytes:
    """The RFC 9421 section 2.5 signature base of one request."""
    lines = (
        f'"@method": {method.upper()}',
        f'"@target-uri": {target_uri}',
        f'"content-digest": {digest}',
        f'"webhook-id": {msg_id}',
        f'"webhook-timestamp": {timestamp}',
        f'"@signature-params": {params}',
    )
    return "\n".join(lines).encode()


def signature_headers(
    keys: Sequence[SigningKey], method: str, target_uri: str, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """``Content-Digest``, ``Signature-Input`` and ``Signature`` of one request (``created`` is the
    webhook-timestamp: the same clock reading)."""
    digest = content_digest(body)
    inputs, signatures = [], []
    for index, key in enumerate(keys, start=1):
        params = _params(key, timestamp)
        base = signature_base(method, target_uri, digest, msg_id, timestamp, params)
        if key.algorithm == "hmac-sha256":
            raw = hmac.new(key.secret, base, hashlib.sha256).digest()
        else:
            raw = key.private_key.sign(base)
        inputs.append(f"sig{index}={params}")
        signatures.append(f"sig{index}=:{base64.b64encode(raw).decode('ascii')}:")
    return {
        "Content-Digest": digest,
        "Signature-Input": ", ".join(inputs),
        "Signature": ", ".join(signatures),
    }
