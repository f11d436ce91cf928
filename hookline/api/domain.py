"""The WebhookDomain API: one ownership proof for a domain, honoured by every Webhook of its namespace.

A customer with 40 Webhooks on one host would otherwise place 40 files; 10,000 Webhooks on a few
hundred hosts would mean 10,000 proofs. A WebhookDomain is proven once (a DNS TXT record
``_hookline-challenge.<domain>``, or a file at the domain's web root) and re-checked on the same
schedule as a Webhook's own proof. It covers the domain itself and, proven by DNS with
``includeSubdomains``, every name below it, for the Webhooks of its own namespace only: a domain
proof never crosses namespaces (a tenant cannot vouch for another tenant's URLs).

``crds/webhookdomains.hookline.io.yaml`` is the contract; tests/unit/test_api_contract.py holds these
models against it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StrictBool, ValidationError, ValidationInfo, field_validator

from hookline.api import (
    CamelModel,
    ConditionStatusModel,
    FieldError,
    OwnershipReason,
    SpecError,
    StatusModel,
    field_errors,
)
from hookline.api.base import ProofMethodSpec
from hookline.durations import DURATION_PATTERN

DOMAIN_KIND = "WebhookDomain"
DOMAIN_PLURAL = "webhookdomains"
# A lower-case DNS name: labels of letters, digits and '-', not starting or ending with '-'.
DOMAIN_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
_DOMAIN_NAME = re.compile(DOMAIN_NAME_PATTERN)


class WebhookDomainSpec(CamelModel):
    """``spec`` of a WebhookDomain, with the CRD's defaults."""

    domain: Annotated[str, Field(min_length=1, max_length=253)]
    method: ProofMethodSpec = "DNS"
    include_subdomains: StrictBool = False
    recheck_interval: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, domain: str) -> str:
        if not _DOMAIN_NAME.fullmatch(domain):
            raise ValueError(
                f"{domain!r} is not a lower-case DNS name such as shop.example.com (no scheme, port, "
                "path or trailing dot)"
            )
        return domain

    @field_validator("include_subdomains")
    @classmethod
    def _check_subdomains(cls, include: bool, info: ValidationInfo) -> bool:
        if include and info.data.get("method") == "File":
            raise ValueError(
                "needs method DNS: a file at the domain's web root does not prove the names below it"
            )
        return include


def parse_domain_spec(obj: Mapping[str, Any], *, prefix: str = "spec") -> WebhookDomainSpec:
    """Validate a WebhookDomain ``spec``; raise SpecError naming every bad field."""
    if not isinstance(obj, Mapping):
        raise SpecError([FieldError(prefix, "must be an object")])
    try:
        return WebhookDomainSpec.model_validate(dict(obj))
    except ValidationError as exc:
        raise SpecError(field_errors(exc, prefix)) from None


class DomainStatus(StatusModel):
    """``status`` of a WebhookDomain: its token, what to publish, the last check, its conditions."""

    observed_generation: int | None = None
    token: str | None = None
    record: str | None = None  # the TXT record to publish (method DNS)
    locations: list[str] | None = None  # where the file may be (method File)
    verified_at: str | None = None
    verified_for: str | None = None  # "<method>:<domain>" that was proven; another spec checks again
    last_checked_at: str | None = None
    last_result: OwnershipReason | None = None
    last_error: str | None = None
    records_found: Annotated[list[str], Field(max_length=10)] | None = None
    checks: Annotated[int, Field(ge=0)] | None = None
    failing_since: str | None = None
    lapsed_at: str | None = None
    conditions: list[ConditionStatusModel] | None = None


def host_covered(host: str, domain: str, *, include_subdomains: bool) -> bool:
    """Whether a URL's host is on ``domain``: the domain itself, or a name below it when the proof
    covers subdomains. Case and a final dot do not matter; ``evilshop.example`` is not on ``shop.example``."""
    name = host.strip().rstrip(".").lower()
    return name == domain or (include_subdomains and name.endswith("." + domain))
