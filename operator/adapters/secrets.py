"""A Webhook's credentials read from its Secrets (and CA ConfigMap), for the operator's own use: a pool
entry's sealed credentials, a WebhookTest's one request, the key ids of status.signing and the digest
that rolls a dedicated sender when a Secret changes; and the key Secret that ``signing.generate`` asks
for. Values never reach status, events or logs; errors name the field, the Secret and the key only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from hookline.api import WEBHOOK_LABEL, WebhookSpec
from hookline.api.credentials import GENERATED_SECRET_KEY, generated_secret_name
from hookline.operator.adapters import kubeapi
from hookline.operator.rules.credmounts import TLS_CERT_KEY, TLS_KEY_KEY
from hookline.sender.model.credentials import Credentials, TLSMaterial
from hookline.sender.model.signingkeys import SigningKey, generate_key_text, parse_signing_key


class _Reader:
    """Reads each Secret once per pass; remembers the resourceVersions it saw (the digest)."""

    def __init__(self, api: kubeapi.KubeAPI, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.seen: dict[str, dict[str, Any] | None] = {}

    async def value(self, field: str, name: str, key: str, *, config_map: bool = False) -> bytes:
        kind = "ConfigMap" if config_map else "Secret"
        url = kubeapi.configmaps(self.namespace, name) if config_map else kubeapi.secret(self.namespace, name)
        if url not in self.seen:
            self.seen[url] = await self.api.get(url)
        obj = self.seen[url]
        where = f"{field}: {kind} {name} key {key}"
        if obj is None:
            raise LookupError(f"{where}: the {kind} does not exist in namespace {self.namespace}")
        if config_map:
            text = (obj.get("data") or {}).get(key)
            if text is None:
                raise LookupError(f"{where}: the key is missing from the ConfigMap")
            return str(text).encode()
        data = (obj.get("data") or {}).get(key)
        if data is None:
            raise LookupError(f"{where}: the key is missing from the Secret")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise LookupError(f"{where}: the Secret's data is not base64") from None

    async def key(self, field: str, name: str, key: str) -> SigningKey:
        raw = await self.value(field, name, key)
        try:
            return parse_signing_key(raw.decode())
        except (UnicodeDecodeError, ValueError) as exc:  # the message never repeats the key
            raise LookupError(f"{field}: Secret {name} key {key}: {exc}") from None

    def digest(self) -> str:
        """A digest of the resourceVersions read: it changes when any of those objects changes."""
        versions = sorted(
            f"{url}@{(obj or {}).get('metadata', {}).get('resourceVersion', '-')}"
            for url, obj in self.seen.items()
        )
        return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]


async def read_credentials(
    api: kubeapi.KubeAPI, namespace: str, webhook: str, spec: WebhookSpec
) -> tuple[Credentials | None, str]:
    """The Webhook's credentials (None: it has none) and the digest of the objects they came from;
    LookupError says which field, object and key is wrong."""
    reader = _Reader(api, namespace)
    keys: list[SigningKey] = []
    signing = spec.signing
    if signing is not None:
        for index, ref in enumerate(signing.refs()):
            field = (
                "spec.signing.secretRef"
                if signing.secret_ref is not None
                else f"spec.signing.secretRefs[{index}]"
            )
            keys.append(await reader.key(field, ref.name, ref.key))
        if signing.generate is not None:
            keys.append(
                await reader.key(
                    "spec.signing.generate", generated_secret_name(webhook), GENERATED_SECRET_KEY
                )
            )
    headers = []
    for index, header in enumerate(spec.secret_headers or ()):
        ref = header.value_from.secret_key_ref
        raw = await reader.value(f"spec.secretHeaders[{index}]", ref.name, ref.key)
        value = raw.decode("utf-8", "replace").strip()
        if not value or any(ch in value for ch in "\r\n\x00"):
            raise LookupError(
                f"spec.secretHeaders[{index}]: Secret {ref.name} key {ref.key}: "
                "empty, or holds a line break or NUL"
            )
        headers.append((header.name, value))
    tls = None
    if spec.tls is not None:
        cert = key = ca = None
        if spec.tls.client_certificate_secret_ref is not None:
            name = spec.tls.client_certificate_secret_ref.name
            field = "spec.tls.clientCertificateSecretRef"
            cert = await reader.value(field, name, TLS_CERT_KEY)
            key = await reader.value(field, name, TLS_KEY_KEY)
        if spec.tls.ca_bundle_ref is not None:
            ref = spec.tls.ca_bundle_ref
            ca = await reader.value(
                "spec.tls.caBundleRef", ref.name, ref.key, config_map=ref.kind == "ConfigMap"
            )
        tls = TLSMaterial(cert, key, ca)
    creds = Credentials(tuple(keys), tuple(headers), tls)
    return (creds if creds else None), (reader.digest() if reader.seen else "")


async def ensure_generated_key(api: kubeapi.KubeAPI, owner: dict[str, Any], spec: WebhookSpec) -> bool:
    """Create ``<webhook>-signing`` with a new key when ``signing.generate`` asks and it is missing
    (owned by the Webhook: deleted with it). True when it was created now."""
    if spec.signing is None or spec.signing.generate is None:
        return False
    meta = owner["metadata"]
    name = generated_secret_name(meta["name"])
    url = kubeapi.secret(meta["namespace"], name)
    if await api.get(url) is not None:
        return False
    text = generate_key_text(spec.signing.generate)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {WEBHOOK_LABEL: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": owner.get("apiVersion", "hookline.io/v1alpha1"),
                    "kind": owner.get("kind", "Webhook"),
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {GENERATED_SECRET_KEY: base64.b64encode(text.encode()).decode()},
    }
    try:
        await api.create(kubeapi.path("", "v1", "secrets", meta["namespace"]), body)
    except kubeapi.Conflict:
        return False  # made meanwhile
    return True


async def signing_key(
    api: kubeapi.KubeAPI, namespace: str, spec: WebhookSpec, webhook: str = ""
) -> Credentials | None:
    """The Webhook's credentials (None: it has none); LookupError says what is wrong."""
    creds, _digest = await read_credentials(api, namespace, webhook, spec)
    return creds
