"""How a dedicated sender pod gets its Webhook's credentials: Secret (and CA ConfigMap) volumes, and
the file paths its config names. Pure.

The operator mounts Secrets by reference; the values stay in the kubelet's tmpfs and never reach the
ConfigMap. A single ``signing.secretRef`` keeps the volume and path it always had (an upgrade does not
change those senders); every other reference (``secretRefs``, ``generate``'s Secret, ``secretHeaders``,
``spec.tls``) gets one volume per Secret under ``/var/run/secrets/hookline/s/<n>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hookline.api import WebhookSpec
from hookline.api.credentials import GENERATED_SECRET_KEY, generated_secret_name

SIGNING_DIR = "/var/run/secrets/hookline/signing"
SECRETS_DIR = "/var/run/secrets/hookline/s"
CA_DIR = "/var/run/secrets/hookline/ca"
TLS_CERT_KEY, TLS_KEY_KEY = "tls.crt", "tls.key"


@dataclass
class CredentialMounts:
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # SenderConfig fields: the files' paths


def secret_keys(webhook: str, spec: WebhookSpec) -> list[tuple[str, str]]:
    """Every (Secret, key) the Webhook's requests read, but a lone legacy ``secretRef``."""
    wanted: list[tuple[str, str]] = []
    signing = spec.signing
    if signing is not None:
        if signing.secret_refs is not None:
            wanted += [(ref.name, ref.key) for ref in signing.secret_refs]
        if signing.generate is not None:
            wanted.append((generated_secret_name(webhook), GENERATED_SECRET_KEY))
    for header in spec.secret_headers or ():
        ref = header.value_from.secret_key_ref
        wanted.append((ref.name, ref.key))
    if spec.tls is not None and spec.tls.client_certificate_secret_ref is not None:
        name = spec.tls.client_certificate_secret_ref.name
        wanted += [(name, TLS_CERT_KEY), (name, TLS_KEY_KEY)]
    if (
        spec.tls is not None
        and spec.tls.ca_bundle_ref is not None
        and spec.tls.ca_bundle_ref.kind == "Secret"
    ):
        wanted.append((spec.tls.ca_bundle_ref.name, spec.tls.ca_bundle_ref.key))
    return list(dict.fromkeys(wanted))


def credential_mounts(webhook: str, spec: WebhookSpec) -> CredentialMounts:
    out = CredentialMounts()
    signing = spec.signing
    if signing is not None and signing.secret_ref is not None:
        ref = signing.secret_ref
        out.volumes.append(
            {
                "name": "signing",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": ref.key}],
                    "defaultMode": 0o440,
                },
            }
        )
        out.mounts.append({"name": "signing", "mountPath": SIGNING_DIR, "readOnly": True})
        out.config["signingSecretFile"] = f"{SIGNING_DIR}/{ref.key}"
    folders: dict[str, str] = {}
    by_secret: dict[str, list[str]] = {}
    for name, key in secret_keys(webhook, spec):
        by_secret.setdefault(name, []).append(key)
    for index, (name, keys) in enumerate(by_secret.items()):
        folders[name] = folder = f"{SECRETS_DIR}/{index}"
        volume = f"secret-{index}"
        items = [{"key": key, "path": key} for key in keys]
        out.volumes.append(
            {"name": volume, "secret": {"secretName": name, "items": items, "defaultMode": 0o440}}
        )
        out.mounts.append({"name": volume, "mountPath": folder, "readOnly": True})
    if signing is not None:
        files = [f"{folders[r.name]}/{r.key}" for r in signing.secret_refs or ()]
        if signing.generate is not None:
            files.append(f"{folders[generated_secret_name(webhook)]}/{GENERATED_SECRET_KEY}")
        if files:
            out.config["signingSecretFiles"] = files
    if spec.secret_headers:
        out.config["secretHeaderFiles"] = {
            h.name: f"{folders[h.value_from.secret_key_ref.name]}/{h.value_from.secret_key_ref.key}"
            for h in spec.secret_headers
        }
    if spec.tls is not None:
        tls: dict[str, str] = {}
        if spec.tls.client_certificate_secret_ref is not None:
            folder = folders[spec.tls.client_certificate_secret_ref.name]
            tls |= {"certFile": f"{folder}/{TLS_CERT_KEY}", "keyFile": f"{folder}/{TLS_KEY_KEY}"}
        ca = spec.tls.ca_bundle_ref
        if ca is not None and ca.kind == "Secret":
            tls["caFile"] = f"{folders[ca.name]}/{ca.key}"
        elif ca is not None:
            items = [{"key": ca.key, "path": ca.key}]
            out.volumes.append({"name": "ca-bundle", "configMap": {"name": ca.name, "items": items}})
            out.mounts.append({"name": "ca-bundle", "mountPath": CA_DIR, "readOnly": True})
            tls["caFile"] = f"{CA_DIR}/{ca.key}"
        if tls:
            out.config["tlsFiles"] = tls
    return out


def referenced_names(webhook: str, spec: WebhookSpec) -> set[str]:
    """Names of the Secrets (and CA ConfigMap) the Webhook reads: a change to one re-renders it."""
    names = {name for name, _key in secret_keys(webhook, spec)}
    if spec.signing is not None and spec.signing.secret_ref is not None:
        names.add(spec.signing.secret_ref.name)
    if spec.tls is not None and spec.tls.ca_bundle_ref is not None:
        names.add(spec.tls.ca_bundle_ref.name)
    return names
