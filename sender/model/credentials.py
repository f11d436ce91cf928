"""Everything secret a Webhook's requests need, as one value: signing keys, secret header values, and
the client certificate and CA bundle of ``spec.tls``.

A dedicated sender reads them from mounted Secret files (sender/cmd/sender.py); a pool replica opens
them from its entry, where the operator sealed ``to_bytes()`` with the pool key; the operator's
WebhookTest reads them from the API. The repr names key ids and header names only, so a traceback or
a log line never carries a value.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from hookline.sender.model.signingkeys import SigningKey

_MARK = b"HLC1"  # before the JSON; anything else is a pool entry of before: one raw HMAC key


@dataclass(frozen=True)
class TLSMaterial:
    """PEM text of a client certificate and key (both or neither) and of extra trusted CAs."""

    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    ca_pem: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        cert, ca = self.cert_pem is not None, self.ca_pem is not None
        return f"TLSMaterial(client_certificate={cert}, ca_bundle={ca})"


@dataclass(frozen=True)
class Credentials:
    keys: tuple[SigningKey, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    tls: TLSMaterial | None = None

    def __repr__(self) -> str:
        kids = ", ".join(k.key_id for k in self.keys)
        names = ", ".join(name for name, _ in self.headers)
        return f"Credentials(keys=[{kids}], headers=[{names}], tls={self.tls!r})"

    def __bool__(self) -> bool:
        return bool(self.keys or self.headers or self.tls)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "keys": [{"alg": k.algorithm, "secret": _b64(k.secret)} for k in self.keys],
            "headers": [list(pair) for pair in self.headers],
        }
        if self.tls is not None:
            doc["tls"] = {
                name: _b64(value)
                for name, value in (
                    ("cert", self.tls.cert_pem),
                    ("key", self.tls.key_pem),
                    ("ca", self.tls.ca_pem),
                )
                if value is not None
            }
        return _MARK + json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Credentials:
        """What ``to_bytes`` wrote; bytes without the mark are one HMAC key (a pool entry of before)."""
        if not raw.startswith(_MARK):
            return cls(keys=(SigningKey("hmac-sha256", raw),))
        try:
            doc = json.loads(raw[len(_MARK) :])
            keys = tuple(SigningKey(k["alg"], base64.b64decode(k["secret"])) for k in doc.get("keys", ()))
            headers = tuple((str(name), str(value)) for name, value in doc.get("headers", ()))
            tls = None
            if "tls" in doc:
                got = {name: base64.b64decode(value) for name, value in doc["tls"].items()}
                tls = TLSMaterial(got.get("cert"), got.get("key"), got.get("ca"))
        except (ValueError, KeyError, TypeError, AttributeError):  # never the content in the message
            raise ValueError("the sealed credentials are not in the format this version reads") from None
        return cls(keys, headers, tls)


def as_credentials(value: Credentials | bytes | None) -> Credentials | None:
    """A Webhook's credentials from what a caller has: Credentials, one HMAC key (as before), or none."""
    if value is None or isinstance(value, Credentials):
        return value
    return Credentials(keys=(SigningKey("hmac-sha256", value),))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
