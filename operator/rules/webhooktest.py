"""What a WebhookTest sends and what its status says about the answer. Pure.

The event is the user's data over a sample of its type, completed by the same parser ingest uses
(id, time, timestamp made fresh). With ``spec.batch: N`` (or when the Webhook has spec.delivery.batch)
it is a batch of N such events, so a customer can check that their script reads batches before
switching batching on. The outcome is the WebhookTest's whole status: phase, reason, a message that
says what to do, and the receiver's answer cut to its first KiB.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

from hookline.api import WEBHOOKTEST_MAX_BATCH_BYTES, WEBHOOKTEST_MAX_DATA_BYTES, WebhookSpec
from hookline.operator.rules.status import VERIFIED, status_of
from hookline.operator.rules.verification import is_verified_for
from hookline.sender.model.events import Event, parse_event
from hookline.sender.model.examples import example_event

BODY_LIMIT = 1024
GENERATED = ("id", "time", "timestamp")
FINISHED = ("Succeeded", "Failed")


def build_event(event_type: str, data: Mapping[str, Any]) -> tuple[Event, list[str]]:
    """The event to send: the user's fields over a sample of this type (as the dashboard tool does),
    with id and time made fresh. Returns the event and the fields that came from the sample."""
    sample = {k: v for k, v in example_event(event_type).items() if k not in GENERATED}
    filled = sorted(k for k in sample if k not in data and k != "type")
    return parse_event({**sample, **data, "type": event_type}), filled


def build_batch(event_type: str, data: Mapping[str, Any], count: int | None) -> tuple[list[Event], list[str]]:
    """The events of one test (``count`` of them, one when it is no batch), each with its own id, and
    the fields that came from the sample. EventError or ValueError when the data is no such event."""
    event, filled = build_event(event_type, data)
    return [event] + [build_event(event_type, data)[0] for _ in range((count or 1) - 1)], filled


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


def described(outcome: TestOutcome, count: int | None, filled: list[str]) -> TestOutcome:
    """The outcome with what was sent added to its message: a batch and its size, sample fields."""
    if count is not None:
        outcome.status["events"] = count
        outcome.status["message"] += f" (a batch of {count} event{'s' if count > 1 else ''})"
    if filled:
        outcome.status["message"] += f" (sample values were used for {', '.join(filled)})"
    return outcome


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


_END = object()


def json_size(value: Any, limit: int) -> int:
    """At least the size of ``value`` as compact JSON, counted without building it (escapes left
    out); counting stops once past ``limit``. Iterators, not copies: a long list costs no memory."""
    total = 0
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack and total <= limit:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, str):
            total += 2 + (len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass")))
        elif isinstance(item, Mapping):
            total += 2 * len(item) + 1  # braces, colons and commas
            stack.append(chain.from_iterable((str(k), v) for k, v in item.items()))
        elif isinstance(item, list | tuple):
            total += len(item) + 1  # brackets and commas
            stack.append(iter(item))
        elif item is None or isinstance(item, bool):
            total += 5
        else:
            total += len(repr(item))  # a number
    return total


def size_problem(test_spec: Mapping[str, Any]) -> str | None:
    """Why the test is too large to build, naming the field and the limit, or None. Checked first:
    spec.data x spec.batch events would otherwise be built in the operator's memory."""
    size = json_size(test_spec.get("data") or {}, WEBHOOKTEST_MAX_DATA_BYTES)
    if size > WEBHOOKTEST_MAX_DATA_BYTES:
        return (
            f"spec.data is over {WEBHOOKTEST_MAX_DATA_BYTES} bytes as JSON (256 KiB, the limit for a "
            "WebhookTest); send a smaller sample"
        )
    batch = test_spec.get("batch")
    count = batch if isinstance(batch, int) and batch > 1 else 1
    if size * count > WEBHOOKTEST_MAX_BATCH_BYTES:
        return (
            f"spec.data ({size} bytes as JSON) x spec.batch ({count}) is {size * count} bytes, over the "
            f"limit of {WEBHOOKTEST_MAX_BATCH_BYTES} bytes (8 MiB, the largest batch hookline sends); "
            f"lower spec.batch to at most {max(1, WEBHOOKTEST_MAX_BATCH_BYTES // size)}"
        )
    return None
