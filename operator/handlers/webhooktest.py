"""WebhookTest: post user-entered data once to a verified Webhook, exactly as its sender would.

The event is completed by the same parser ingest uses (id, time, timestamp filled in), rendered and
signed by the sender's own Delivery (sender/delivery.py, not the delivery loop), and sent through the
SSRF-safe client. With `spec.batch: N` (or when the Webhook has spec.delivery.batch) it is a batch in
the batch wire format: N events of the data, each with its own id, under one batch id, so a customer
can check that their script reads batches before switching batching on. The signing Secret is read
for this one request only; its value never reaches status, events or logs.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookline.api import SpecError, WebhookSpec, parse_webhook_spec
from hookline.operator.adapters import kubeapi
from hookline.operator.rules.status import VERIFIED, now_iso, status_of
from hookline.operator.rules.verification import is_verified_for
from hookline.sender.model.events import Event, EventError, example_event, parse_event
from hookline.sender.model.request import Delivery
from hookline.sender.model.signing import parse_secret
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.errors import BlockedDestination, SafeHTTPError

BODY_LIMIT = 1024
GENERATED = ("id", "time", "timestamp")


def build_event(event_type: str, data: Mapping[str, Any]) -> tuple[Event, list[str]]:
    """The event to send: the user's fields over a sample of this type (as the dashboard tool does),
    with id and time made fresh. Returns the event and the fields that came from the sample."""
    sample = {k: v for k, v in example_event(event_type).items() if k not in GENERATED}
    filled = sorted(k for k in sample if k not in data and k != "type")
    return parse_event({**sample, **data, "type": event_type}), filled


@dataclass(frozen=True)
class TestOutcome:
    status: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.status.get("phase") == "Succeeded"

    @property
    def summary(self) -> str:
        return str(self.status.get("message") or self.status.get("error") or self.status.get("phase"))


def batch_size_of(test_spec: Mapping[str, Any], spec: WebhookSpec) -> int | None:
    """How many events the test sends as a batch, or None for a single event (no batch format)."""
    count = test_spec.get("batch")
    if count is not None:
        return int(count)
    return 1 if spec.delivery.batch is not None else None


def failed(reason: str, message: str, **extra: Any) -> TestOutcome:
    return TestOutcome({"phase": "Failed", "reason": reason, "message": message, "error": message, **extra})


def outcome_of_response(
    status_code: int, elapsed: float, body: bytes, *, sent_at: str, event_id: str, signed: bool
) -> TestOutcome:
    """Succeeded on 2xx, Failed (reason HTTPError) otherwise; the body is cut to its first 1 KiB."""
    response = {
        "statusCode": status_code,
        "durationMs": round(elapsed * 1000),
        "body": body[:BODY_LIMIT].decode("utf-8", errors="replace"),
    }
    common = {"sentAt": sent_at, "eventId": event_id, "signed": signed, "response": response}
    if 200 <= status_code < 300:
        message = f"the receiver answered HTTP {status_code} in {response['durationMs']} ms"
        return TestOutcome({"phase": "Succeeded", "reason": "Delivered", "message": message, **common})
    message = (
        f"the receiver answered HTTP {status_code}; a sender would retry this. "
        "Check the receiver's logs and the response body"
    )
    return TestOutcome(
        {"phase": "Failed", "reason": "HTTPError", "message": message, "error": message, **common}
    )


def refusal(webhook: Mapping[str, Any] | None, name: str) -> TestOutcome | None:
    """Why a test may not be sent to this Webhook, or None when it may."""
    if webhook is None:
        return failed("WebhookNotFound", f"Webhook {name} does not exist in this namespace")
    status = webhook.get("status") or {}
    url = (webhook.get("spec") or {}).get("url", "")
    if status_of(status.get("conditions"), VERIFIED) != "True" or not is_verified_for(status, url):
        return failed(
            "NotVerified",
            f"Webhook {name} is not verified; tests are only sent to verified URLs. "
            f"See `kubectl describe webhook {name}` for the file to place",
        )
    return None


async def signing_key(api: kubeapi.KubeAPI, namespace: str, spec: WebhookSpec) -> bytes | None:
    if spec.signing is None:
        return None
    ref = spec.signing.secret_ref
    secret = await api.get(kubeapi.secret(namespace, ref.name))
    where = f"Secret {ref.name} key {ref.key}"
    if secret is None:
        raise LookupError(f"{where}: the Secret does not exist; create it or fix spec.signing.secretRef")
    data = (secret.get("data") or {}).get(ref.key)
    if data is None:
        raise LookupError(f"{where}: the key is missing from the Secret")
    try:
        text = base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise LookupError(f"{where}: the Secret's data is not base64-encoded text") from None
    try:
        return parse_secret(text)
    except ValueError as exc:  # the message never repeats the secret
        raise LookupError(f"{where}: {exc}") from None


async def run_test(
    api: kubeapi.KubeAPI,
    http: SafeHTTPClient,
    namespace: str,
    test_spec: Mapping[str, Any],
    *,
    max_timeout: float,
) -> TestOutcome:
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
    data = dict(test_spec.get("data") or {})
    count = batch_size_of(test_spec, spec)
    try:
        event, filled = build_event(str(test_spec.get("event")), data)
        batch = [event] + [build_event(str(test_spec.get("event")), data)[0] for _ in range((count or 1) - 1)]
    except (EventError, ValueError) as exc:
        return failed("InvalidData", f"spec.data is not a valid {test_spec.get('event')} event: {exc}")
    try:
        key = await signing_key(api, namespace, spec)
    except LookupError as exc:
        return failed("SecretUnavailable", str(exc))
    delivery = Delivery(spec, key)
    now = time.time()
    sent_id = event.id
    if count is None:
        body, headers = delivery.build(event, now)
    else:
        sent_id, body, headers = delivery.build_batch(batch, now)
    sent_at = now_iso()
    try:
        response = await http.request(
            "POST", spec.url, data=body, headers=headers, timeout=min(delivery.timeout, max_timeout)
        )
    except BlockedDestination as exc:
        return failed("Blocked", str(exc), sentAt=sent_at, eventId=sent_id)
    except SafeHTTPError as exc:
        message = f"{exc}; check that the receiver is up"
        return failed("RequestFailed", message, sentAt=sent_at, eventId=sent_id)
    outcome = outcome_of_response(
        response.status,
        response.elapsed,
        response.body,
        sent_at=sent_at,
        event_id=sent_id,
        signed=key is not None,
    )
    if count is not None:
        outcome.status["events"] = count
        outcome.status["message"] += f" (a batch of {count} event{'s' if count > 1 else ''})"
    if filled:
        outcome.status["message"] += f" (sample values were used for {', '.join(filled)})"
    return outcome
