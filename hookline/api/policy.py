"""The WebhookPolicy API: an admin-owned grant of data to namespaces, and its pure evaluation.

A WebhookPolicy (cluster-scoped, so only cluster admins write it) says which namespaces may subscribe
to which databases and collections (exact names; ``*`` only where written), optionally which event
types, how many Webhooks, which extra egress networks and plain http, and a rate ceiling. Several
policies selecting one namespace combine as a union: a (database, collection, event type) is granted
when one policy grants it; limits and ceilings take the highest; networks and http add up.

`effective_grant` folds the policies that select a namespace into one `Grant`; `scope_problem` says
which field of a Webhook's spec its grant does not cover (a FieldError naming the field and the
missing grant), the same rule the chart's ValidatingAdmissionPolicy applies at `kubectl apply`
(`grant_record` is what that policy reads; README, "Running hookline for many teams").
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, ValidationError, field_validator

from hookline.api import (
    SCOPE_NAME_PATTERN,
    CamelModel,
    EventType,
    FieldError,
    SpecError,
    StatusModel,
    WebhookSpec,
    field_errors,
)

POLICY_KIND = "WebhookPolicy"
POLICY_PLURAL = "webhookpolicies"
POLICY_SHORT_NAME = "whp"
ALL = "*"
# On a Webhook: its grant's digest as the operator last saw it change (a new value reconciles it). Not
# under hookline.io/: Kopf leaves its own prefix out of the diffs that run handlers.
GRANT_ANNOTATION = "tenancy.hookline.io/grant"
GRANT_NAME_PATTERN = r"^(\*|" + SCOPE_NAME_PATTERN[1:-1] + r")$"
MAX_POLICY_NETWORKS = 32
CIDR_PATTERN = r"^[0-9a-fA-F.:]+/[0-9]{1,3}$"


class LabelRequirement(CamelModel):
    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(CamelModel):
    """A Kubernetes LabelSelector over the namespace's labels (all terms must hold)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            has, value = req.key in labels, labels.get(req.key)
            if req.operator == "In" and (not has or value not in req.values):
                return False
            if req.operator == "NotIn" and has and value in req.values:
                return False
            if req.operator == "Exists" and not has:
                return False
            if req.operator == "DoesNotExist" and has:
                return False
        return True


class DatabaseGrant(CamelModel):
    """One database (or ``*``: every database) and its collections (``*``: every collection)."""

    name: Annotated[str, Field(pattern=GRANT_NAME_PATTERN)]
    collections: Annotated[list[Annotated[str, Field(pattern=GRANT_NAME_PATTERN)]], Field(min_length=1)]


class EgressGrant(CamelModel):
    """What the namespace's Webhooks may reach on top of the installation's --allow-network/--allow-http."""

    allow_networks: Annotated[
        list[Annotated[str, Field(max_length=43, pattern=CIDR_PATTERN)]],
        Field(max_length=MAX_POLICY_NETWORKS),
    ] = Field(default_factory=list)
    allow_http: StrictBool = False

    @field_validator("allow_networks")
    @classmethod
    def _check_networks(cls, networks: list[str]) -> list[str]:
        for text in networks:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network in CIDR notation (e.g. 10.1.2.0/24)") from None
        return networks


class WebhookPolicySpec(CamelModel):
    """The WebhookPolicy custom resource's ``spec``."""

    namespace_selector: LabelSelector | None = None
    namespaces: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(default_factory=list)
    databases: Annotated[list[DatabaseGrant], Field(min_length=1)]
    event_types: Annotated[list[EventType], Field(min_length=1)] | None = None
    max_webhooks: Annotated[int, Field(ge=0, le=100_000)] | None = None
    egress: EgressGrant | None = None
    max_requests_per_second: Annotated[float, Field(gt=0, le=100_000)] | None = None

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether this policy covers ``namespace`` (by name, or by its labels)."""
        if namespace in self.namespaces:
            return True
        return self.namespace_selector is not None and self.namespace_selector.matches(labels)


class WebhookPolicyStatus(StatusModel):
    """What the operator counts for a policy (cheap: from its own indexes, written when it changes)."""

    observed_generation: int | None = None
    namespaces: int | None = None
    webhooks: int | None = None


def parse_policy_spec(obj: Mapping[str, Any], *, prefix: str = "spec") -> WebhookPolicySpec:
    """Validate a WebhookPolicy ``spec`` dict; raise SpecError naming every bad field."""
    if not isinstance(obj, Mapping):
        raise SpecError([FieldError(prefix, "must be an object")])
    try:
        return WebhookPolicySpec.model_validate(dict(obj))
    except ValidationError as exc:
        raise SpecError(field_errors(exc, prefix)) from None


# --- the effective grant of one namespace ------------------------------------------------------------------

Scope = tuple[str, str, str]
"""(database, collection, event type), each a name or ``*``."""


@dataclass(frozen=True)
class Grant:
    """The union of every policy selecting one namespace. ``policies`` empty: nothing is granted."""

    policies: tuple[str, ...] = ()
    scopes: frozenset[Scope] = frozenset()
    max_webhooks: int | None = None  # None: no limit
    allow_networks: tuple[str, ...] = ()
    allow_http: bool = False
    max_requests_per_second: float | None = None  # None: no ceiling
    databases: tuple[str, ...] = field(default=())  # granted database names, for messages

    @property
    def granted(self) -> bool:
        return bool(self.policies)

    def allows(self, database: str | None, collection: str | None, event: str) -> bool:
        """Whether events of this type, database and collection are granted (None: every one)."""
        for db, coll, ev in self.scopes:
            if ev not in (event, ALL):
                continue
            if database is None and db != ALL:
                continue
            if database is not None and db not in (database, ALL):
                continue
            if collection is None and coll != ALL:
                continue
            if collection is not None and coll not in (collection, ALL):
                continue
            return True
        return False

    def digest(self) -> str:
        """A short digest of everything the operator derives from the grant (a change reconciles)."""
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:  # once per grant: the grants loop asks for every Webhook of a namespace
        doc = {
            "p": list(self.policies),
            "s": sorted(self.scopes),
            "m": self.max_webhooks,
            "n": list(self.allow_networks),
            "h": self.allow_http,
            "r": self.max_requests_per_second,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


NO_GRANT = Grant()


def effective_grant(
    namespace: str, labels: Mapping[str, str], policies: Iterable[tuple[str, WebhookPolicySpec]]
) -> Grant:
    """The union of the policies that select ``namespace`` (with these labels)."""
    names: list[str] = []
    scopes: set[Scope] = set()
    databases: list[str] = []
    limits: list[int | None] = []
    ceilings: list[float | None] = []
    networks: list[str] = []
    http = False
    for name, spec in sorted(policies, key=lambda p: p[0]):
        if not spec.selects(namespace, labels):
            continue
        names.append(name)
        events = [str(e) for e in spec.event_types] if spec.event_types else [ALL]
        for db in spec.databases:
            if db.name not in databases:
                databases.append(db.name)
            scopes.update((db.name, coll, ev) for coll in db.collections for ev in events)
        limits.append(spec.max_webhooks)
        ceilings.append(spec.max_requests_per_second)
        if spec.egress is not None:
            networks.extend(n for n in spec.egress.allow_networks if n not in networks)
            http = http or spec.egress.allow_http
    if not names:
        return NO_GRANT
    return Grant(
        policies=tuple(names),
        scopes=frozenset(scopes),
        max_webhooks=None if None in limits else max(x for x in limits if x is not None),
        allow_networks=tuple(networks),
        allow_http=http,
        max_requests_per_second=None if None in ceilings else max(x for x in ceilings if x is not None),
        databases=tuple(databases),
    )


def _names(items: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in items) or "none"


def scope_problem(
    spec: WebhookSpec, grant: Grant, namespace: str, *, floor_http: bool = False, check_rate: bool = True
) -> FieldError | None:
    """The first field of ``spec`` its namespace's grant does not cover, naming the missing grant.

    The operator passes ``check_rate=False``: above the ceiling it caps the rate instead of stopping.
    """
    if not grant.granted:
        return FieldError(
            "metadata.namespace",
            f"no WebhookPolicy grants namespace {namespace!r} any data; missing grant: a WebhookPolicy "
            f"whose namespaces or namespaceSelector selects {namespace!r} (ask your cluster admins)",
        )
    db, coll = spec.database, spec.collection
    where = f"namespace {namespace!r} (WebhookPolicy {', '.join(grant.policies)})"
    if db is None:
        if not any(s[0] == ALL for s in grant.scopes):
            return FieldError(
                "spec.database",
                f"is required: {where} is not granted every database ('*'); granted: "
                f"{_names(grant.databases)}",
            )
    elif not any(s[0] in (db, ALL) for s in grant.scopes):
        return FieldError(
            "spec.database",
            f"{db!r} is not granted to {where}; missing grant: databases[].name {db!r} "
            f"(granted: {_names(grant.databases)})",
        )
    if not any(grant.allows(db, coll, ev) for ev in {s[2] for s in grant.scopes}):
        colls = sorted({s[1] for s in grant.scopes if s[0] in (db or ALL, ALL)})
        what = f"database {db!r}" if db else "every database"
        if coll is None:
            return FieldError(
                "spec.collection",
                f"is required: {where} is granted only the collections {_names(colls)} of {what}; "
                f"missing grant: collections ['*'] of {what}",
            )
        return FieldError(
            "spec.collection",
            f"{coll!r} of {what} is not granted to {where}; missing grant: collections [{coll!r}] "
            f"(granted: {_names(colls)})",
        )
    missing = [e for e in spec.events if not grant.allows(db, coll, e)]
    if missing:
        return FieldError(
            "spec.events",
            f"{', '.join(missing)} not granted for {_scope_text(db, coll)} to {where}; missing grant: "
            f"eventTypes [{', '.join(missing)}]",
        )
    if spec.url.lower().startswith("http://") and not (floor_http or grant.allow_http):
        return FieldError(
            "spec.url",
            f"plain http is not granted to {where}; use https, or missing grant: egress.allowHttp true",
        )
    ceiling = grant.max_requests_per_second
    rate = spec.delivery.max_requests_per_second
    if check_rate and ceiling is not None and rate > ceiling:
        return FieldError(
            "spec.delivery.maxRequestsPerSecond",
            f"{rate:g} is above the ceiling {ceiling:g} granted to {where}; missing grant: "
            f"maxRequestsPerSecond >= {rate:g}",
        )
    return None


def _scope_text(db: str | None, coll: str | None) -> str:
    if db is None:
        return "every database"
    return f"database {db!r}" + (f" collection {coll!r}" if coll else "")


def capped_rate(spec: WebhookSpec, grant: Grant) -> float:
    """The rate the sender runs at: the Webhook's own, at most the grant's ceiling."""
    rate = spec.delivery.max_requests_per_second
    ceiling = grant.max_requests_per_second
    return rate if ceiling is None else min(rate, ceiling)


def over_limit(names_by_age: list[str], name: str, grant: Grant) -> int | None:
    """The namespace's limit when ``name`` is beyond it (the oldest Webhooks keep running), else None.

    ``names_by_age``: the namespace's Webhooks, oldest first (creation time, then name).
    """
    limit = grant.max_webhooks
    if limit is None or name not in names_by_age:
        return None
    return limit if names_by_age.index(name) >= limit else None


# --- what the admission policy reads ----------------------------------------------------------------------


def grant_record(namespace: str, grant: Grant) -> dict[str, str]:
    """The ConfigMap keys the chart's ValidatingAdmissionPolicy reads for ``namespace`` (CEL can test
    a string for a token, not walk several objects, so the union is compiled here): ``<ns>.scopes``
    holds ``;database/collection/event;`` tokens, ``<ns>.http`` true/false, ``<ns>.rate`` the ceiling."""
    if not grant.granted:
        return {}
    tokens = "".join(f"{db}/{coll}/{ev};" for db, coll, ev in sorted(grant.scopes))
    record = {
        f"{namespace}.scopes": ";" + tokens,
        f"{namespace}.http": "true" if grant.allow_http else "false",
        f"{namespace}.policies": ",".join(grant.policies),
    }
    if grant.max_requests_per_second is not None:
        record[f"{namespace}.rate"] = f"{grant.max_requests_per_second:g}"
    return record
