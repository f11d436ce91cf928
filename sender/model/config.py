"""Typed configuration of the sender process: its config file (the Webhook's spec is in hookline.api).

Pure: parsing and validation only. Errors name the field the way a user wrote it
(``spec.delivery.maxAttempts: ...``) so they can go straight into a condition message or a CLI error.
Whether ``http://`` is allowed is the egress policy's call (sender/transport/egress.py), not the spec's.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
)

from hookline.api import CamelModel, WebhookSpec, field_errors

# Two hours inside the event stream's default retention (72 h), so a last retry never looks for an
# event that retention has just removed.
DEFAULT_MAX_AGE_SECONDS = 70 * 3600
# The one place the default NATS server, its environment variable and the events stream are named:
# the sender config defaults to them, and the bus, ingest, the CLI commands and the operator import them.
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
NATS_URL_ENV = "HOOKLINE_NATS_URL"
EVENTS_STREAM = "HOOKLINE_EVENTS"
DEFAULT_LISTEN = "0.0.0.0:8081"


# ---------------------------------------------------------------------------------------------------------
# The sender's config file (written by the operator into a ConfigMap, or by dev mode)


class WebhookRef(CamelModel):
    namespace: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]


class NatsSettings(CamelModel):
    url: Annotated[str, Field(min_length=1)] = DEFAULT_NATS_URL
    stream: Annotated[str, Field(min_length=1)] = EVENTS_STREAM
    consumer: Annotated[str, Field(min_length=1)]
    # The consumer's replicas; 0: as many as the stream (the operator sets it from HOOKLINE_NATS_REPLICAS).
    replicas: Annotated[int, Field(ge=0, le=5)] = 0
    # Paths of mounted files (the operator's Secret of this Webhook's NATS user; the CA of a TLS NATS):
    # never the credentials themselves. With credentials the sender runs least-privileged.
    creds_file: str | None = None
    tls_ca_file: str | None = None


class TLSFiles(CamelModel):
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None


class SenderConfig(CamelModel):
    webhook: WebhookRef
    spec: WebhookSpec
    nats: NatsSettings
    signing_secret_file: str | None = None
    # Mounted Secret files, never their content (sender/delivery/credfiles.py): every live signing key of
    # spec.signing.secretRefs/generate, each spec.secretHeaders value by header name, spec.tls.
    signing_secret_files: list[str] | None = None
    secret_header_files: dict[str, str] | None = None
    tls_files: TLSFiles | None = None
    listen: str = DEFAULT_LISTEN
    allow_networks: list[str] = Field(default_factory=list)
    allow_http: bool = False
    replicas: Annotated[int, Field(ge=1, le=20)] = 1
    max_age_seconds: Annotated[float, Field(gt=0)] = DEFAULT_MAX_AGE_SECONDS
    # The attempt log and health reports (sender/model/deliveryhealth.py, sender/bus/attemptlog.py); off
    # only to measure what they cost.
    record_attempts: bool = True

    @field_validator("allow_networks")
    @classmethod
    def _check_networks(cls, networks: list[str]) -> list[str]:
        bad = []
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                bad.append(repr(network))
        if bad:
            raise ValueError(f"{', '.join(bad)} is not a CIDR such as 10.0.0.0/8 or fd00::/8")
        return networks

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str) -> str:
        _host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{listen!r} is not host:port, e.g. 0.0.0.0:8081")
        return listen

    @classmethod
    def for_webhook(
        cls,
        namespace: str,
        name: str,
        spec: WebhookSpec,
        *,
        nats_url: str,
        nats_replicas: int = 0,
        signing_secret_file: str | None = None,
        listen: str = DEFAULT_LISTEN,
        allow_networks: Sequence[str] = (),
        allow_http: bool = False,
        replicas: int = 1,
    ) -> SenderConfig:
        """The sender config of one Webhook, whoever runs its engine: the operator (a ConfigMap, or a
        pool entry made from the same config) and dev mode. Its consumer is ``consumer_name``'s."""
        return cls.model_validate(
            {
                "webhook": {"namespace": namespace, "name": name},
                "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                "nats": {
                    "url": nats_url,
                    "consumer": consumer_name(namespace, name),
                    # Left out at 0 (as the stream): an upgrade does not change every sender's ConfigMap.
                    **({"replicas": nats_replicas} if nats_replicas else {}),
                },
                "signingSecretFile": signing_secret_file,
                "listen": listen,
                "allowNetworks": list(allow_networks),
                "allowHttp": allow_http,
                "replicas": replicas,
            }
        )

    def to_document(self) -> dict[str, Any]:
        """The camelCase dict `load_sender_config` reads back (what the operator puts in a ConfigMap)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConfigError(ValueError):
    """The sender config file is unreadable or invalid; the message names the file and the field."""


def parse_sender_config(obj: Any, *, source: str = "sender config") -> SenderConfig:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{source}: must be a mapping with webhook, spec and nats")
    try:
        return SenderConfig.model_validate(dict(obj))
    except ValidationError as exc:
        text = "; ".join(str(e) for e in field_errors(exc, ""))
        raise ConfigError(f"{source}: {text}") from None


def load_sender_config(path: str | Path) -> SenderConfig:
    """Read a YAML or JSON sender config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read sender config {path}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"sender config {path} is not valid YAML/JSON: {exc}") from None
    return parse_sender_config(obj, source=f"sender config {path}")


# ---------------------------------------------------------------------------------------------------------
# JetStream durable consumer names

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
MAX_CONSUMER_NAME = 200


@functools.lru_cache(maxsize=1 << 16)  # the operator's loops ask for every Webhook's, every second
def consumer_name(namespace: str, name: str) -> str:
    """``hookline_<namespace>_<name>``: stable, unique per Webhook, valid as a JetStream durable name.

    Durable names cannot hold ``.``; Kubernetes names cannot hold ``_``, so ``.`` -> ``_`` keeps names
    distinct and the first ``_`` after the prefix still separates namespace from name. Names too long
    for a durable are cut and suffixed with a hash of the full pair.
    """
    if not _DNS_LABEL_RE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} is not a Kubernetes namespace name (a DNS label)")
    if not _DNS_SUBDOMAIN_RE.fullmatch(name):
        raise ValueError(f"name {name!r} is not a Kubernetes object name (a DNS subdomain)")
    durable = f"hookline_{namespace}_{name.replace('.', '_')}"
    if len(durable) <= MAX_CONSUMER_NAME:
        return durable
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]
    return f"{durable[: MAX_CONSUMER_NAME - 17]}-{digest}"
