"""WebhookTest: post user-entered data once to a verified Webhook, exactly as its sender would.

The event is rendered and signed by the sender's own Delivery (sender/model/request.py, not the
delivery loop) and sent through the SSRF-safe client; what to send and what the answer means are
decided in rules/webhooktest.py. The signing Secret is read for this one request only. A finished
WebhookTest is indexed for the expiry loop (loops/expiry.py), which deletes it after the TTL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kopf

from hookline.api import SpecError, parse_webhook_spec
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.secrets import signing_key
from hookline.operator.handlers import grants
from hookline.operator.rules.webhooktest import (
    FINISHED,
    TestOutcome,
    batch_size_of,
    build_batch,
    described,
    failed,
    outcome_of_response,
    refusal,
    size_problem,
)
from hookline.operator.runtime import runtime_of
from hookline.sender.model.events import EventError
from hookline.sender.model.request import Delivery
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.errors import BlockedDestination, SafeHTTPError
from hookline.sender.transport.tlsmaterial import client_tls_context
from hookline.timestamps import rfc3339


async def webhook_test_created(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    if status.get("phase") in FINISHED:
        return  # sent once, never again (a resume after a restart must not repeat it)
    rt = runtime_of(memo)
    too_large = size_problem(spec)  # before anything is built or fetched
    stopped = rt.tenancy.stopped.get((meta["namespace"], str(spec.get("webhook", ""))))
    if too_large is not None:
        outcome = failed("TooLarge", too_large)
    elif stopped is not None:  # outside its namespace's grant (tenancy): nothing goes out
        outcome = failed("ScopeNotAllowed", f"the Webhook is stopped: {stopped}")
    else:
        namespace = meta["namespace"]
        # The namespace's share of the outbound client, reaching what its grant adds (tenancy).
        async with rt.shares.slot(namespace), grants.grant_client(rt, namespace) as http:
            outcome = await run_test(rt.api, http, namespace, dict(spec), max_timeout=rt.config.test_timeout)
    patch.status.update(outcome.status)
    if outcome.succeeded:
        kopf.info(body, reason="TestSucceeded", message=outcome.summary)
    else:
        kopf.warn(body, reason="TestFailed", message=outcome.summary)


async def webhook_test_seen(
    event: Mapping[str, Any], status: kopf.Status, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    """Keep the index of finished WebhookTests that the expiry loop reads (rebuilt from the first
    list after a restart, like every Kopf watch)."""
    finished = runtime_of(memo).tests.finished
    key = (meta["namespace"], meta["name"])
    if event.get("type") == "DELETED" or status.get("phase") not in FINISHED:
        finished.pop(key, None)
    else:
        finished[key] = str(status.get("sentAt") or meta.get("creationTimestamp") or "")


async def run_test(
    api: kubeapi.KubeAPI,
    http: SafeHTTPClient,
    namespace: str,
    test_spec: Mapping[str, Any],
    *,
    max_timeout: float,
) -> TestOutcome:
    too_large = size_problem(test_spec)
    if too_large is not None:
        return failed("TooLarge", too_large)
    name = str(test_spec.get("webhook", ""))
    webhook = await api.get(kubeapi.webhook(namespace, name)) if name else None
    refused = refusal(webhook, name)
    if refused is not None:
        return refused
    assert webhook is not None
    try:
        spec = parse_webhook_spec(webhook.get("spec") or {})
    except SpecError as exc:
        return failed("InvalidWebhook", f"Webhook {name} has an invalid spec: {exc}")
    count = batch_size_of(test_spec, spec)
    try:
        batch, filled = build_batch(str(test_spec.get("event")), dict(test_spec.get("data") or {}), count)
    except (EventError, ValueError) as exc:
        return failed("InvalidData", f"spec.data is not a valid {test_spec.get('event')} event: {exc}")
    try:
        key = await signing_key(api, namespace, spec, name)
    except LookupError as exc:
        return failed("SecretUnavailable", str(exc))
    delivery = Delivery(spec, key)
    now = time.time()
    sent_id = batch[0].id
    if count is None:
        body, headers = delivery.build(batch[0], now)
    else:
        sent_id, body, headers = delivery.build_batch(batch, now)
    sent_at = rfc3339()
    client = http
    try:
        if key is not None and key.tls is not None:  # spec.tls: a client of this Webhook's own
            client = await SafeHTTPClient(http.policy, ssl=client_tls_context(key.tls)).start()
        response = await client.request(
            "POST", spec.url, data=body, headers=headers, timeout=min(delivery.timeout, max_timeout)
        )
    except ValueError as exc:
        return failed("SecretUnavailable", str(exc))
    except BlockedDestination as exc:
        return failed("Blocked", str(exc), sentAt=sent_at, eventId=sent_id)
    except SafeHTTPError as exc:
        message = f"{exc}; check that the receiver is up"
        return failed("RequestFailed", message, sentAt=sent_at, eventId=sent_id)
    finally:
        if client is not http:
            await client.close()
    outcome = outcome_of_response(
        response.status,
        response.elapsed,
        response.body,
        sent_at=sent_at,
        event_id=sent_id,
        signed=bool(key and key.keys),
    )
    return described(outcome, count, filled)
