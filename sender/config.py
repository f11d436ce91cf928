"""Typed configuration: a Webhook's spec (the CRD, camelCase) and the sender process's config file.

Pure: parsing and validation only. Errors name the field the way a user wrote it
(``spec.delivery.maxAttempts: ...``) so they can go straight into a condition message or a CLI error.
Whether ``http://`` is allowed is the egress policy's call (safehttp), not the spec's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from hookline.sender.events import EVENT_TYPES, FieldError
from hookline.sender.signing import header_name_problem, header_value_problem

EventType = Literal["open", "click", "bounce", "failure", "delivery", "create", "update", "delete"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]

# Two hours inside the event stream's default retention (72 h), so a last retry never looks for an
# event that retention has just removed.
DEFAULT_MAX_AGE_SECONDS = 70 * 3600
MAX_URL_LENGTH = 2048


class _Model(BaseModel):
    """camelCase on the outside (CRD, YAML), snake_case in Python; unknown keys are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )


class SecretRef(_Model):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    key: Annotated[str, Field(min_length=1, max_length=253)]


class Signing(_Model):
    secret_ref: SecretRef


class Delivery(_Model):
    timeout_seconds: Annotated[float, Field(ge=1, le=60)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 10
    max_requests_per_second: Annotated[float, Field(gt=0, le=10000)] = 50
    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 10


class SenderSpec(_Model):
    replicas: Annotated[int, Field(ge=0, le=20)] = 1
    resources: dict[str, Any] = Field(default_factory=dict)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook URL (scheme policy aside), or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() for ch in url):
        return "must not contain whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an https:// URL, e.g. https://shop.example.com/hooks/copernica.php"
    if not parts.hostname:
        return "has no host name"
    if parts.username is not None or parts.password is not None:
        return "must not contain user:password@; put credentials in spec.headers or use signing"
    if port == 0:
        return "has port 0"
    return None


SCOPE_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
_SCOPE_NAME = re.compile(SCOPE_NAME_PATTERN)


class WebhookSpec(_Model):
    """The Webhook custom resource's ``spec`` with the CRD's defaults."""

    url: str
    events: Annotated[list[EventType], Field(min_length=1)]
    # Scope names double as label values (`kubectl get wh -l hookline.io/database=newsletter`),
    # so they follow Kubernetes' label-value rules; the CRD carries the same pattern.
    database: str | None = None
    collection: str | None = None
    format: Literal["form", "json"] = "form"
    signing: Signing | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    paused: StrictBool = False  # the CRD takes only true/false; so do we ("yes" is an error)
    delivery: Delivery = Field(default_factory=Delivery)
    sender: SenderSpec = Field(default_factory=SenderSpec)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        return url

    @field_validator("events")
    @classmethod
    def _check_events(cls, events: list[str]) -> list[str]:
        duplicates = sorted({e for e in events if events.count(e) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once; each event type once")
        return events

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        problems = []
        seen: set[str] = set()
        for name, value in headers.items():
            problem = header_name_problem(name) or header_value_problem(value)
            if problem:
                problems.append(f"{name!r} {problem}")
            elif name.lower() in seen:
                problems.append(f"{name!r} is given twice (header names are case-insensitive)")
            seen.add(name.lower())
        if problems:
            raise ValueError("; ".join(problems))
        return headers

    @field_validator("database", "collection")
    @classmethod
    def _check_scope_name(cls, name: str | None) -> str | None:
        if name is not None and not _SCOPE_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a valid scope name: use at least 1 and at most 63 letters, digits, "
                "'_', '-' or '.', starting and ending with a letter or digit (it is also a label value)"
            )
        return name

    @field_validator("collection")
    @classmethod
    def _check_scope(cls, collection: str | None, info: ValidationInfo) -> str | None:
        if collection is not None and info.data.get("database") is None:
            raise ValueError("requires database (a collection belongs to a database); set database too")
        return collection


class SpecError(ValueError):
    """A spec failed validation; ``errors`` has one FieldError per bad field (paths like ``spec.url``)."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        text = "; ".join(str(e) for e in errors)
        super().__init__(f"{source}: {text}" if source else text)


def _field_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            path = f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}" if path else str(part)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the Webhook CRD for the fields)"
        elif err["type"] == "missing":
            message = "is required"
        elif err["type"] == "literal_error" and err["loc"] and err["loc"][0] == "events":
            message = f"unknown event type {err['input']!r}; one of {', '.join(EVENT_TYPES)}"
        errors.append(FieldError(path or "$", message))
    return errors


def parse_webhook_spec(obj: Mapping[str, Any], *, prefix: str = "spec") -> WebhookSpec:
    """Validate a Webhook ``spec`` dict; raise SpecError naming every bad field."""
    if not isinstance(obj, Mapping):
        raise SpecError([FieldError(prefix, "must be an object")])
    try:
        return WebhookSpec.model_validate(dict(obj))
    except ValidationError as exc:
        raise SpecError(_field_errors(exc, prefix)) from None


# ---------------------------------------------------------------------------------------------------------
# The sender's config file (written by the operator into a ConfigMap, or by dev mode)


class WebhookRef(_Model):
    namespace: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]


class NatsSettings(_Model):
    url: Annotated[str, Field(min_length=1)] = "nats://127.0.0.1:4222"
    stream: Annotated[str, Field(min_length=1)] = "HOOKLINE_EVENTS"
    consumer: Annotated[str, Field(min_length=1)]


class SenderConfig(_Model):
    webhook: WebhookRef
    spec: WebhookSpec
    nats: NatsSettings
    signing_secret_file: str | None = None
    listen: str = "0.0.0.0:8081"
    allow_networks: list[str] = Field(default_factory=list)
    allow_http: bool = False
    replicas: Annotated[int, Field(ge=1, le=20)] = 1
    max_age_seconds: Annotated[float, Field(gt=0)] = DEFAULT_MAX_AGE_SECONDS

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
        text = "; ".join(str(e) for e in _field_errors(exc, ""))
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
