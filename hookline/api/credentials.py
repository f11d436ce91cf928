"""What a Webhook's requests take from Secrets: signing keys, secret header values, a client certificate.

``spec.signing`` names one key (``secretRef``, as before) or several (``secretRefs``: every live key
signs every request, so a key is rotated by adding the new one, waiting for receivers to accept it,
then removing the old one) and may ask the operator to generate a key pair (``generate``). A key's
kind is in its text: ``whsec_`` HMAC-SHA256 (Standard Webhooks ``v1``), ``whsk_`` ed25519 (``v1a``).
``scheme`` chooses the header set: Standard Webhooks (``webhook-signature``) or RFC 9421 HTTP Message
Signatures with an RFC 9530 ``Content-Digest``. ``spec.secretHeaders`` take their values from Secret
keys; ``spec.tls`` names a client certificate and an extra CA bundle. ``status.signing`` lists the live
keys by key id (public keys for ed25519), never key material.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from hookline.api.base import CamelModel, SecretRef, StatusModel
from hookline.headers import header_name_problem

MAX_SIGNING_KEYS = 4
MAX_SECRET_HEADERS = 16
GENERATED_SECRET_KEY = "signing-key"


def generated_secret_name(webhook: str) -> str:
    """The Secret the operator creates for ``signing.generate``: ``<webhook>-signing``."""
    return f"{webhook}-signing"


class SigningScheme(StrEnum):
    STANDARD_WEBHOOKS = "StandardWebhooks"
    """``webhook-signature: v1,<hmac> v1a,<ed25519>`` over ``id.timestamp.body`` (standardwebhooks.com)."""
    HTTP_MESSAGE_SIGNATURES = "HTTPMessageSignatures"
    """RFC 9421 ``Signature-Input``/``Signature`` over method, target URI, RFC 9530 ``Content-Digest``,
    webhook-id and webhook-timestamp."""


GeneratedAlgorithm = Literal["ed25519", "hmac-sha256"]


class Signing(CamelModel):
    scheme: SigningScheme | None = None  # unset: StandardWebhooks (a sender's config stays as it was)
    secret_ref: SecretRef | None = None
    secret_refs: Annotated[list[SecretRef], Field(min_length=1, max_length=MAX_SIGNING_KEYS)] | None = None
    # The operator creates Secret <webhook>-signing (key signing-key) with a new key when it is missing;
    # that key signs beside any named ones.
    generate: GeneratedAlgorithm | None = None

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        if self.secret_ref is not None and self.secret_refs is not None:
            raise ValueError("set secretRef (one key) or secretRefs (several), not both")
        if self.secret_ref is None and self.secret_refs is None and self.generate is None:
            raise ValueError("needs secretRef, secretRefs or generate")
        refs = self.refs()
        if len({(r.name, r.key) for r in refs}) != len(refs):
            raise ValueError("secretRefs names the same Secret key twice")
        return self

    def refs(self) -> list[SecretRef]:
        """The named keys, in order (``generate``'s Secret not included)."""
        if self.secret_refs is not None:
            return list(self.secret_refs)
        return [self.secret_ref] if self.secret_ref is not None else []


class HeaderValueSource(CamelModel):
    secret_key_ref: SecretRef


class SecretHeader(CamelModel):
    """A request header whose value is a Secret key (``Authorization: Bearer ...`` a receiver needs)."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    value_from: HeaderValueSource

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        problem = header_name_problem(name)
        if problem:
            raise ValueError(f"{name!r} {problem}")
        return name


def secret_header_problem(headers: list[SecretHeader], plain: dict[str, str]) -> str | None:
    """Why these secret headers cannot go beside ``spec.headers`` (a name twice), or None."""
    seen = {name.lower() for name in plain}
    for header in headers:
        if header.name.lower() in seen:
            return f"{header.name!r} is given twice (also in spec.headers or secretHeaders)"
        seen.add(header.name.lower())
    return None


class SecretName(CamelModel):
    name: Annotated[str, Field(min_length=1, max_length=253)]


class CABundleRef(CamelModel):
    kind: Literal["ConfigMap", "Secret"] = "ConfigMap"
    name: Annotated[str, Field(min_length=1, max_length=253)]
    key: Annotated[str, Field(min_length=1, max_length=253)] = "ca.crt"


class ClientTLS(CamelModel):
    """``spec.tls``: a client certificate (a ``kubernetes.io/tls`` Secret: tls.crt, tls.key) and CAs
    trusted beside the system's, for deliveries and the ownership check alike."""

    client_certificate_secret_ref: SecretName | None = None
    ca_bundle_ref: CABundleRef | None = None


# --- status ----------------------------------------------------------------------------------------------


class SigningKeyStatus(StatusModel):
    key_id: str
    algorithm: str
    secret: str | None = None  # "<Secret name>/<key>": where the key is, never what it is
    public_key: str | None = None  # ed25519: base64url of the raw public key (a JWK's "x")


class SigningStatus(StatusModel):
    scheme: str | None = None
    keys: list[SigningKeyStatus] | None = None
    generated_secret: str | None = None
    last_error: Annotated[str, Field(max_length=1024)] | None = None
