"""Webhook and Secret manifests read from a folder, for dev mode and the demo receiver (no cluster).

Each error names the file, the document, the object and the field, so the developer can fix it.

`EXAMPLES` are the manifests shipped with the package (the repository's examples/ links there), read
when no folder is given. Their URLs use the host `demo-receiver`, which stands for wherever the demo
receiver listens: `load_manifests(..., receiver="127.0.0.1:9000")` puts that address in its place, so
moving the receiver (`make run RECEIVER=...`) keeps the examples working.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from hookline.api import API_VERSION, WEBHOOK_KIND, SpecError, WebhookSpec, parse_webhook_spec
from hookline.sender.model.config import consumer_name
from hookline.sender.model.credentials import Credentials
from hookline.sender.model.signingkeys import parse_signing_key

EXAMPLES = Path(__file__).with_name("examples")
# The host name that stands for the demo receiver's HOST:PORT in a Webhook URL (dev mode only).
DEMO_RECEIVER_HOST = "demo-receiver"


class ManifestError(ValueError):
    """A manifest the developer has to fix; the message names the file, the object and the field."""


@dataclass(frozen=True)
class DevWebhook:
    namespace: str
    name: str
    spec: WebhookSpec
    source: str
    signing_secret: str | None = None  # whsec_..., from the referenced Secret manifest
    # Every signing key and secret header value from the Secret manifests (spec.tls needs the operator).
    credentials: Credentials | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Manifests:
    webhooks: list[DevWebhook]
    ignored: list[str] = field(default_factory=list)


def _secret_values(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    data = doc.get("data") or {}
    string_data = doc.get("stringData") or {}
    if not isinstance(data, Mapping) or not isinstance(string_data, Mapping):
        raise ManifestError(f"{where}: data and stringData must be maps of key to value")
    for key, value in data.items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ManifestError(
                f"{where}: data.{key} is not base64 (use stringData for plain text)"
            ) from None
    for key, value in string_data.items():
        values[str(key)] = str(value)
    return values


def _metadata(doc: Mapping[str, Any], where: str) -> tuple[str, str]:
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping) or not metadata.get("name"):
        raise ManifestError(f"{where}: metadata.name is required")
    return str(metadata.get("namespace") or "default"), str(metadata["name"])


def with_receiver(url: Any, receiver: str | None) -> Any:
    """`url` with the host `demo-receiver` (and any port) replaced by `receiver` (HOST:PORT)."""
    if receiver is None or not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return url  # parse_webhook_spec names what is wrong with it
    if host != DEMO_RECEIVER_HOST:
        return url
    return urlunsplit(parts._replace(netloc=receiver))


def uses_receiver(webhook: DevWebhook) -> bool:
    """True when the Webhook's URL still names the demo receiver by its stand-in host."""
    return urlsplit(webhook.spec.url).hostname == DEMO_RECEIVER_HOST


def load_manifests(directory: str | Path, *, receiver: str | None = None) -> Manifests:
    """Every Webhook and Secret in the YAML files of `directory`; other kinds are listed as ignored.
    With `receiver` (HOST:PORT), URLs on the host `demo-receiver` are pointed at it."""
    root = Path(directory)
    if not root.is_dir():
        raise ManifestError(f"--manifests {directory}: not a directory")
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    raw_webhooks: list[tuple[str, str, str, Mapping[str, Any]]] = []
    secrets: dict[tuple[str, str], dict[str, str]] = {}
    ignored: list[str] = []
    for path in files:
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML: {exc}") from None
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            where = f"{path} (document {index + 1})"
            if not isinstance(doc, Mapping):
                raise ManifestError(f"{where}: a manifest must be a map with apiVersion, kind, metadata")
            kind = doc.get("kind")
            if kind == "Secret":
                namespace, name = _metadata(doc, where)
                secrets[(namespace, name)] = _secret_values(doc, f"{where} Secret {name}")
            elif kind == WEBHOOK_KIND:
                namespace, name = _metadata(doc, where)
                if doc.get("apiVersion") != API_VERSION:
                    raise ManifestError(
                        f"{where} Webhook {name}: apiVersion must be {API_VERSION}, "
                        f"not {doc.get('apiVersion')!r}"
                    )
                raw_webhooks.append((namespace, name, where, doc.get("spec") or {}))
            else:
                ignored.append(f"{where}: {kind or 'no kind'}")
    webhooks: list[DevWebhook] = []
    seen: set[tuple[str, str]] = set()
    for namespace, name, where, raw_spec in raw_webhooks:
        label = f"{where} Webhook {namespace}/{name}"
        if (namespace, name) in seen:
            raise ManifestError(f"{label}: another manifest defines the same Webhook")
        seen.add((namespace, name))
        try:
            consumer_name(namespace, name)
        except ValueError as exc:
            raise ManifestError(f"{label}: metadata: {exc}") from None
        if isinstance(raw_spec, Mapping) and "url" in raw_spec:
            raw_spec = {**raw_spec, "url": with_receiver(raw_spec["url"], receiver)}
        try:
            spec = parse_webhook_spec(raw_spec)
        except SpecError as exc:
            raise ManifestError(f"{label}: {exc}") from None
        secret, creds = _dev_credentials(label, namespace, spec, secrets, root)
        webhooks.append(DevWebhook(namespace, name, spec, where, secret, creds))
    return Manifests(webhooks, ignored)


def _dev_credentials(
    label: str,
    namespace: str,
    spec: WebhookSpec,
    secrets: Mapping[tuple[str, str], Mapping[str, str]],
    root: Any,
) -> tuple[str | None, Credentials | None]:
    """The first HMAC key's text (the demo receiver verifies with it) and all the Webhook's credentials."""

    def value(field: str, ref_name: str, ref_key: str) -> str:
        values = secrets.get((namespace, ref_name))
        if values is None:
            raise ManifestError(
                f"{label}: {field}.name: no Secret {ref_name!r} in namespace {namespace} among the manifests "
                f"in {root}; add one with stringData.{ref_key}"
            )
        if ref_key not in values:
            raise ManifestError(
                f"{label}: {field}.key: Secret {ref_name!r} has no key {ref_key!r} "
                f"(it has: {', '.join(sorted(values)) or 'none'})"
            )
        return values[ref_key].strip()

    keys, texts = [], []
    if spec.signing is not None:
        if not spec.signing.refs():
            raise ManifestError(f"{label}: spec.signing.generate needs the operator; name a secretRef")
        for index, ref in enumerate(spec.signing.refs()):
            field = (
                "spec.signing.secretRef" if spec.signing.secret_ref else f"spec.signing.secretRefs[{index}]"
            )
            text = value(field, ref.name, ref.key)
            try:
                keys.append(parse_signing_key(text))
            except ValueError as exc:
                raise ManifestError(f"{label}: Secret {ref.name!r} key {ref.key!r}: {exc}") from None
            texts.append(text)
    headers = []
    for index, header in enumerate(spec.secret_headers or ()):
        ref = header.value_from.secret_key_ref
        headers.append(
            (header.name, value(f"spec.secretHeaders[{index}].valueFrom.secretKeyRef", ref.name, ref.key))
        )
    first_hmac = next((t for t, k in zip(texts, keys, strict=True) if k.algorithm == "hmac-sha256"), None)
    creds = Credentials(tuple(keys), tuple(headers))
    return first_hmac, (creds if creds else None)


def secrets_by_path(webhooks: list[DevWebhook]) -> dict[str, list[str]]:
    """The signing secrets a receiver path may be signed with (several Webhooks may share a path)."""
    out: dict[str, list[str]] = {}
    for hook in webhooks:
        if hook.signing_secret:
            out.setdefault(urlsplit(hook.spec.url).path or "/", []).append(hook.signing_secret)
    return out
