"""The Webhook API in one typed place: names, spec, status, condition types and their reasons.

Everything that the operator, dev mode, the CLI, the dashboard generator and the tests say about a
Webhook or a WebhookTest comes from here, never from a string literal of their own. The CRDs in
``crds/`` are the contract that Kubernetes enforces; ``tests/unit/test_api_contract.py`` holds this module
against them in both directions (every field written here is declared there, every declared field
exists here, enums and bounds agree), so a field the API server would prune cannot be written.

It sits at the bottom of the import graph: it imports only ``hookline.headers`` and
``hookline.durations`` (leaves beside it) and pydantic, so the data plane and the control plane can both
depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from hookline.api.base import CamelModel as CamelModel
from hookline.api.base import ProofMethodSpec
from hookline.api.base import SecretRef as SecretRef
from hookline.api.base import StatusModel as StatusModel
from hookline.api.credentials import ClientTLS, SecretHeader, Signing, SigningStatus, secret_header_problem
from hookline.durations import DURATION_PATTERN, parse_duration
from hookline.headers import header_name_problem, header_value_problem

# --- names ----------------------------------------------------------------------------------------------

GROUP = "hookline.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
WEBHOOK_KIND = "Webhook"
WEBHOOK_PLURAL = "webhooks"
WEBHOOKTEST_KIND = "WebhookTest"
WEBHOOKTEST_PLURAL = "webhooktests"

FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP  # Kopf's progress and diff-base annotations live under it
DATABASE_LABEL = f"{GROUP}/database"  # kept on each Webhook: `kubectl get wh -l hookline.io/database=x`
COLLECTION_LABEL = f"{GROUP}/collection"
WEBHOOK_LABEL = f"{GROUP}/webhook"  # on the sender objects: which Webhook they serve
RESUME_ANNOTATION = f"{GROUP}/resume-delivery"  # any new value lifts a 410 Gone stop
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
DESIRED_HASH_ANNOTATION = f"{GROUP}/desired-hash"

EVENT_TYPES: tuple[str, ...] = (
    "open",
    "click",
    "bounce",
    "failure",
    "delivery",
    "create",
    "update",
    "delete",
)
EventType = Literal["open", "click", "bounce", "failure", "delivery", "create", "update", "delete"]
assert EventType.__args__ == EVENT_TYPES  # type: ignore[attr-defined]


# --- conditions and their reasons -------------------------------------------------------------------------


class ConditionType(StrEnum):
    VERIFIED = "Verified"
    """The customer proved ownership of spec.url: the file, a DNS TXT record, or a WebhookDomain."""
    READY = "Ready"
    """A sender runs for the Webhook and is consuming its events."""
    DELIVERING = "Delivering"
    """Deliveries run (False: the receiver said 410 Gone, or deliveries are stopped otherwise)."""


CONDITION_ORDER: tuple[ConditionType, ...] = tuple(ConditionType)


class VerifiedReason(StrEnum):
    FILE_MATCHED = "FileMatched"
    """True: one of the locations held the token."""
    PENDING = "Pending"
    """False: the Webhook is new; the file has not been checked yet."""
    FILE_NOT_FOUND = "FileNotFound"
    """False: no location had the file (404 or similar)."""
    CONTENT_MISMATCH = "ContentMismatch"
    """False: a file was there but did not hold the token."""
    UNREACHABLE = "Unreachable"
    """False: the server did not answer (DNS, connection, TLS, timeout)."""
    BLOCKED = "Blocked"
    """False: the URL resolves to an address the egress policy refuses (private, metadata, ...)."""
    RECORD_MATCHED = "RecordMatched"
    """True: the TXT record _hookline-challenge.<host> holds the token (spec.verification.method DNS)."""
    RECORD_NOT_FOUND = "RecordNotFound"
    """False: no TXT record at _hookline-challenge.<host> (NXDOMAIN, or the name has no TXT)."""
    RECORD_MISMATCH = "RecordMismatch"
    """False: TXT records are there but none holds the token (status.verification.recordsFound)."""
    DOMAIN_VERIFIED = "DomainVerified"
    """True: the URL's host is on a verified WebhookDomain of the Webhook's own namespace."""
    OWNERSHIP_LAPSED = "OwnershipLapsed"
    """False: re-checks of a proof failed for longer than the grace period; deliveries pause (events
    kept) until the proof is back."""


class ReadyReason(StrEnum):
    SENDER_AVAILABLE = "SenderAvailable"
    """True: every desired sender pod is available."""
    SENDER_UNAVAILABLE = "SenderUnavailable"
    """False: fewer sender pods are available than desired."""
    SENDER_PENDING = "SenderPending"
    """False: the sender Deployment is being created."""
    NOT_VERIFIED = "NotVerified"
    """False: no sender runs until the URL is verified."""
    PAUSED = "Paused"
    """False: spec.paused is true or spec.sender.replicas is 0; events are kept."""
    INVALID_SPEC = "InvalidSpec"
    """False: the spec cannot be used (the message names the field)."""
    BUS_UNAVAILABLE = "BusUnavailable"
    """False: NATS did not answer (connection, timeout); retried by itself."""
    BUS_REFUSED = "BusRefused"
    """False: NATS refused the consumer for good (a limit or its configuration); needs a change."""
    SIGNING_SECRET_UNAVAILABLE = "SigningSecretUnavailable"
    """False: a pooled Webhook's signing Secret cannot be read (the message says what is wrong)."""
    POOL_NOT_FOUND = "PoolNotFound"
    """False: spec.sender.pool names a pool the installation does not run (or it has no replicas)."""
    SCOPE_NOT_ALLOWED = "ScopeNotAllowed"
    """False: no WebhookPolicy grants this scope to the namespace (or more Webhooks than it allows);
    its sender is stopped, events are kept; it starts again once granted."""


class DeliveringReason(StrEnum):
    DELIVERING = "Delivering"
    """True: deliveries run."""
    RECEIVER_GONE = "ReceiverGone"
    """False: the receiver answered 410 Gone; resume with the annotation or `hookline redrive --resume`."""
    FAILING = "Failing"
    """False: most recent attempts failed; the message says what the receiver answered and since when."""
    BACKLOGGED = "Backlogged"
    """False: pending events grow faster than they are delivered."""
    PAUSED = "Paused"
    """False: spec.paused (or no sender replicas); events are kept."""
    CONSUMER_MISSING = "ConsumerMissing"
    """False: the Webhook's JetStream consumer was deleted; the sender recreates it."""
    EVENTS_LOST = "EventsLost"
    """False for a day after events were lost: its consumer was deleted and the recovery window no
    longer held what it was owed (status.delivery.eventsLost counts them)."""
    DISABLED = "Disabled"
    """False: only failures for spec.delivery.disableAfter; resume like a 410 stop."""


ConditionStatus = Literal["True", "False", "Unknown"]
OwnershipReason = Literal[
    "FileMatched", "FileNotFound", "ContentMismatch", "Unreachable", "Blocked",
    "RecordMatched", "RecordNotFound", "RecordMismatch", "DomainVerified",
]  # fmt: skip
"""What one ownership check found (the Verified reasons but Pending and OwnershipLapsed)."""
ProofMethod = Literal["File", "DNS", "Domain"]  # how a proof was made (Domain: by a WebhookDomain)


@dataclass(frozen=True)
class Condition:
    """One condition as a decision computes it; status.merge_conditions adds the times."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


# --- spec -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field: ``field`` is a path such as ``spec.url``, ``recipient`` or ``fields.email``."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


MAX_URL_LENGTH = 2048


BATCH_MAX_EVENTS = 1000
BATCH_MAX_WAIT_MILLISECONDS = 10_000  # well inside the consumer's ack wait (timeout + 30 s)
# The receiver-facing byte limit of one request: nginx's default client_max_body_size (1 MiB) when
# maxBytes is absent; at most PHP's default post_max_size (8 MiB).
BATCH_DEFAULT_MAX_BYTES = 1024 * 1024
BATCH_MAX_BYTES = 8 * 1024 * 1024
# A WebhookTest's spec.data as JSON, and data x batch: checked before any event is built.
WEBHOOKTEST_MAX_DATA_BYTES = 256 * 1024
WEBHOOKTEST_MAX_BATCH_BYTES = BATCH_MAX_BYTES
BATCH_MIN_BYTES = 1024


class Batch(CamelModel):
    """``spec.delivery.batch``: many events per request. Absent: one event per request."""

    max_events: Annotated[int, Field(ge=2, le=BATCH_MAX_EVENTS)]
    max_wait_milliseconds: Annotated[int, Field(ge=0, le=BATCH_MAX_WAIT_MILLISECONDS)] = 1000
    max_bytes: Annotated[int, Field(ge=BATCH_MIN_BYTES, le=BATCH_MAX_BYTES)] | None = None

    @property
    def byte_limit(self) -> int:
        """The largest body a batch may have (a single event larger than this is sent alone)."""
        return self.max_bytes if self.max_bytes is not None else BATCH_DEFAULT_MAX_BYTES


class Delivery(CamelModel):
    timeout_seconds: Annotated[float, Field(ge=1, le=60)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 10
    max_requests_per_second: Annotated[float, Field(gt=0, le=100_000)] = 50
    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 10
    batch: Batch | None = None
    # Circuit breaker: stop after only failures for this long (e.g. 5d, as Standard Webhooks
    # recommends); resumed like a 410 stop. Absent: never.
    disable_after: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None

    @property
    def disable_after_seconds(self) -> float | None:
        return None if self.disable_after is None else parse_duration(self.disable_after)


POOL_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class SenderMode(StrEnum):
    DEDICATED = "Dedicated"
    """The Webhook's own sender Deployment (isolation, its own resources and replicas)."""
    POOL = "Pool"
    """One engine in a shared sender pool (a StatefulSet from the chart's senderPools)."""


class SenderSpec(CamelModel):
    replicas: Annotated[int, Field(ge=0, le=20)] = 1
    resources: dict[str, Any] = Field(default_factory=dict)
    # Unset: the installation's default (chart value operator.defaultSenderMode / defaultSenderPool).
    mode: SenderMode | None = None
    pool: Annotated[str, Field(pattern=POOL_NAME_PATTERN)] | None = None

    @field_validator("pool")
    @classmethod
    def _check_pool(cls, pool: str | None, info: ValidationInfo) -> str | None:
        if pool is not None and info.data.get("mode") == SenderMode.DEDICATED:
            raise ValueError("is set but spec.sender.mode is Dedicated; remove one of them")
        return pool


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


class VerificationSpec(CamelModel):
    """``spec.verification``: the proof (a file, or a DNS TXT record) and how often it is re-checked."""

    method: ProofMethodSpec = "File"
    recheck_interval: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None  # unset: the operator's


class WebhookSpec(CamelModel):
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
    secret_headers: Annotated[list[SecretHeader], Field(max_length=16)] | None = None
    tls: ClientTLS | None = None
    paused: StrictBool = False  # the CRD takes only true/false; so do we ("yes" is an error)
    delivery: Delivery = Field(default_factory=Delivery)
    sender: SenderSpec = Field(default_factory=SenderSpec)
    verification: VerificationSpec = Field(default_factory=VerificationSpec)

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

    @field_validator("secret_headers")
    @classmethod
    def _check_secret_headers(cls, headers: list[SecretHeader] | None, info: ValidationInfo) -> Any:
        problem = secret_header_problem(headers or [], info.data.get("headers") or {})
        if problem:
            raise ValueError(problem)
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


def field_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
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
        raise SpecError(field_errors(exc, prefix)) from None


# --- status -----------------------------------------------------------------------------------------------


class ConditionStatusModel(StatusModel):
    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class VerificationStatus(StatusModel):
    file_name: str | None = None
    content: str | None = None
    locations: list[str] | None = None
    verified_url: str | None = Field(default=None, alias="verifiedURL")
    verified_at: str | None = None
    verified_for: str | None = None
    """Fingerprint of the spec.url that was verified (verification.url_fingerprint)."""
    last_checked_at: str | None = None
    checked_for: str | None = None
    """Fingerprint of the spec.url that ``checks`` counts for; a new URL restarts the count."""
    checks: Annotated[int, Field(ge=0)] | None = None
    last_result: OwnershipReason | None = None
    next_check_at: str | None = None
    last_error: str | None = None
    method: ProofMethod | None = None  # what proved it (or, unverified, what was looked for)
    record: str | None = None  # the TXT record name (DNS), or the WebhookDomain's name (Domain)
    records_found: Annotated[list[str], Field(max_length=10)] | None = None  # TXT strings seen instead
    failing_since: str | None = None  # first failed re-check of a verified proof (the grace starts)
    lapsed_at: str | None = None  # the grace passed: Verified=False/OwnershipLapsed until the proof is back


class SenderStatus(StatusModel):
    mode: SenderMode | None = None
    pool: str | None = None
    replica: Annotated[int, Field(ge=0)] | None = None
    engine_problem: Annotated[str, Field(max_length=512)] | None = None
    deployment: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    config_hash: str | None = None


class DeliveryStatus(StatusModel):
    gone: bool | None = None
    gone_since: str | None = None
    disabled: bool | None = None
    disabled_since: str | None = None
    resume_handled: str | None = None
    resumed_at: str | None = None
    resume_reason: str | None = None
    last_success_at: str | None = None
    last_failure_at: str | None = None
    last_failure: Annotated[str, Field(max_length=512)] | None = None
    failing_since: str | None = None
    pending: Annotated[int, Field(ge=0)] | None = None
    pending_growth_per_minute: int | None = None
    dead_letters: Annotated[int, Field(ge=0)] | None = None
    recent_attempts: Annotated[int, Field(ge=0)] | None = None
    recent_failures: Annotated[int, Field(ge=0)] | None = None
    window_seconds: Annotated[int, Field(ge=1)] | None = None
    consumer_missing: bool | None = None
    events_lost: Annotated[int, Field(ge=0)] | None = None
    events_lost_at: str | None = None
    reported_at: str | None = None


class WebhookStatus(StatusModel):
    observed_generation: int | None = None
    verification: VerificationStatus | None = None
    conditions: list[ConditionStatusModel] | None = None
    sender: SenderStatus | None = None
    delivery: DeliveryStatus | None = None
    signing: SigningStatus | None = None


class TestResponse(StatusModel):
    status_code: int | None = None
    duration_ms: int | None = None
    body: str | None = None


TestPhase = Literal["Pending", "Succeeded", "Failed"]


class WebhookTestStatus(StatusModel):
    phase: TestPhase | None = None
    reason: str | None = None
    message: str | None = None
    sent_at: str | None = None
    event_id: str | None = None
    events: int | None = None  # a batch test: how many events it carried (event_id is the batch id)
    signed: bool | None = None
    response: TestResponse | None = None
    error: str | None = None


class WebhookTestSpec(CamelModel):
    webhook: Annotated[str, Field(min_length=1, max_length=253)]
    event: EventType
    data: dict[str, Any] = Field(default_factory=dict)
    # Send this many events (the data, each with its own id) as one batch in the batch wire format,
    # whether or not the Webhook batches yet; absent: a batch of one when spec.delivery.batch is set.
    batch: Annotated[int, Field(ge=1, le=BATCH_MAX_EVENTS)] | None = None


def checked_status(model: type[StatusModel], value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` (a status part about to be written) as the model reads it: an undeclared field or a
    wrong type raises here, in the operator's own tests, instead of being pruned by the API server."""
    return model.model_validate(dict(value)).patch()
