"""The reconcile's credential step: make the key Secret ``signing.generate`` asks for, read every
Secret the Webhook names, and say what status.signing shows. A dedicated sender mounts the Secrets
itself; the operator reads them for the key ids, for the digest that rolls the sender when one of
them changes, and for a pooled Webhook's sealed entry."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from hookline.api.credentials import generated_secret_name
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.secrets import ensure_generated_key, read_credentials
from hookline.operator.rules import tenancy
from hookline.operator.rules.reconcile import Facts
from hookline.operator.rules.signingstatus import signing_status
from hookline.operator.runtime import Runtime, runtime_of
from hookline.sender.model.credentials import Credentials
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.tlsmaterial import client_tls_context

# "<Secret>@<resourceVersion>" that woke it; not under hookline.io/, where Kopf hides annotations from diffs
SECRETS_CHANGED_ANNOTATION = "secrets.hookline.io/changed"


@dataclass(frozen=True)
class Gathered:
    credentials: Credentials | None
    digest: str  # of the Secrets read ("" when none): part of a dedicated sender's config hash
    problem: str | None  # why they cannot be read (the message names field, Secret and key)
    status: dict[str, Any]  # status.signing


async def gather_credentials(rt: Runtime, facts: Facts, body: kopf.Body) -> Gathered:
    assert facts.spec is not None
    spec = facts.spec
    creds, digest, problem = None, "", None
    try:
        if await ensure_generated_key(rt.api, dict(body), spec):
            kopf.info(
                body,
                reason="SigningKeyGenerated",
                message=f"created Secret {generated_secret_name(facts.name)} with a new signing key",
            )
        creds, digest = await read_credentials(rt.api, facts.namespace, facts.name, spec)
    except LookupError as exc:
        problem = str(exc)
    except kubeapi.APIError as exc:  # 403 and the like: say so in status; 5xx: Kopf retries
        if (getattr(exc, "status", None) or 500) >= 500:
            raise
        problem = (
            f"the Secrets spec.signing, spec.secretHeaders or spec.tls name cannot be read or created: {exc}"
        )
    rt.credentials.watch(facts.namespace, facts.name, spec)
    status = signing_status(facts.name, spec, creds, problem)
    if status:
        rt.credentials.public[(facts.namespace, facts.name)] = status
    else:
        rt.credentials.public.pop((facts.namespace, facts.name), None)
    return Gathered(creds, digest, problem, status)


async def show_credentials(rt: Runtime, facts: Facts, body: kopf.Body, patch: kopf.Patch) -> Gathered:
    """``gather_credentials``, and status.signing written when it changed."""
    creds = await gather_credentials(rt, facts, body)
    shown = {k: v for k, v in creds.status.items() if v is not None}
    if shown != dict(facts.status.get("signing") or {}):
        patch.status["signing"] = creds.status or None
    return creds


async def secret_changed(event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any) -> None:
    """A Secret changed: each Webhook that reads it gets its reconcile again (through an annotation
    that the reconcile is registered for), which re-reads the Secrets: a pooled Webhook gets a new
    entry, a dedicated sender a new config hash (its pods roll, draining first). Any other Secret
    costs a dictionary lookup."""
    rt = runtime_of(memo)
    meta = body.get("metadata") or {}
    readers = rt.credentials.webhooks_reading(meta.get("namespace", ""), meta.get("name", ""))
    if not readers or event.get("type") is None:  # None: the initial listing, already reconciled
        return
    version = f"{meta.get('name')}@{meta.get('resourceVersion')}"
    for webhook in sorted(readers):
        patch = {"metadata": {"annotations": {SECRETS_CHANGED_ANNOTATION: version}}}
        await rt.api.patch(kubeapi.webhook(meta["namespace"], webhook), patch)


@contextlib.asynccontextmanager
async def ownership_client(rt: Runtime, facts: Facts) -> AsyncIterator[SafeHTTPClient]:
    """The client of the ownership check: the shared one, or for a Webhook with spec.tls one that
    presents its client certificate and trusts its CA bundle (a Secret it cannot read yet: the shared
    client, and the check says why the receiver refused)."""
    spec = facts.spec
    # The namespace's grant may add egress (tenancy): the check reaches what its sender may reach.
    networks, allow_http = tenancy.egress_of(facts.grant, rt.http.policy)
    policy = rt.http.policy if facts.grant is None else EgressPolicy(networks, allow_http)
    context: Any = True
    if spec is not None and spec.tls is not None:
        try:
            creds, _digest = await read_credentials(rt.api, facts.namespace, facts.name, spec)
            context = client_tls_context(creds.tls if creds else None)
        except (LookupError, ValueError):
            context = True
    if context is True and policy == rt.http.policy:
        yield rt.http
        return
    client = await SafeHTTPClient(policy, max_response_bytes=rt.http.max_response_bytes, ssl=context).start()
    try:
        yield client
    finally:
        await client.close()
