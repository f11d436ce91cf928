"""The rules of a `POST /v1/events` request, pure (no I/O, no clock but the one passed in): the headers
it must carry, how its body is inflated and decoded, and the events it must hold.

Validation is all or nothing: every event is validated and encoded before any is published. Limits
hold wherever input enters, each refusal naming the field and the limit: an encoded event must fit
the bus with room for its dead letter (`max_event_bytes`), values are bounded
(`values.value_problems`), a request holds at most `max_events` events, gzip/deflate bodies inflate to
at most the body limit, and error bodies list the first `MAX_REPORTED_ERRORS` errors and a count.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hookline.sender.model.events import Event, EventError, parse_event
from hookline.sender.model.subjects import subject_for
from hookline.sender.model.values import MAX_DEPTH, HugeInteger

__all__ = [
    "CONTENT_ENCODINGS",
    "JSON_CONTENT_TYPES",
    "MAX_REPORTED_ERRORS",
    "Outgoing",
    "Rejection",
    "check_content_encoding",
    "check_content_type",
    "costs_the_worker",
    "decode_document",
    "inflate",
    "parse_events_body",
    "prepare_body",
]

MAX_REPORTED_ERRORS = 20
CONTENT_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")
JSON_CONTENT_TYPES = ("application/json",)


@dataclass
class Rejection(Exception):
    """A request ingest refuses: HTTP status, a message saying what to do, and per-event field errors."""

    status: int
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    retry_after: int | None = None
    rejected_events: int = 0  # events of the request found invalid (errors lists only the first ones)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


def decode_document(body: bytes) -> Any:
    """The JSON document of a body: strict UTF-8 (no UTF-16/32 guessing), bounded nesting, numbers
    kept as written so that `values.value_problems` can name a non-finite or oversized one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(
            400, f"the body is not UTF-8 encoded JSON (byte {exc.start} cannot be decoded as UTF-8)"
        ) from None
    try:
        return json.loads(text, parse_constant=_nonfinite)
    except json.JSONDecodeError as exc:
        raise Rejection(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise Rejection(400, f"JSON nested too deeply; events may nest at most {MAX_DEPTH} levels") from None
    except ValueError:
        # An integer literal past Python's conversion limit (4300 digits): parse again, marking it,
        # so that the error names the field.
        return json.loads(text, parse_constant=_nonfinite, parse_int=_bounded_int)


def _nonfinite(literal: str) -> float:
    return float(literal)  # NaN, Infinity, -Infinity: refused by value_problems, naming the field


def _bounded_int(literal: str) -> int:
    if len(literal) <= 40:
        return int(literal)
    marker = HugeInteger(0)
    marker.digits = len(literal.lstrip("-"))
    return marker


def parse_events_body(
    body: bytes, *, max_events: int, now: float | None = None, max_event_bytes: int | None = None
) -> list[tuple[Event, bytes]]:
    """Decode, validate and encode one event object or a JSON array of at most `max_events`; all must
    be valid.

    Returns each event with the bytes to publish, so nothing of a refused request is published.
    Errors name the event by its index in the request (0 for a single object) and the field; the
    error body lists the first MAX_REPORTED_ERRORS of them and says how many there were.
    """
    document = decode_document(body)
    items = document if isinstance(document, list) else [document]
    if not items:
        raise Rejection(400, "the array holds no events; send one event object or a non-empty array")
    if len(items) > max_events:
        raise Rejection(400, f"{len(items)} events in one request; send at most {max_events} per request")
    batch: list[tuple[Event, bytes]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(
                {"index": index, "field": "", "message": f"must be a JSON object, not {_json_type(item)}"}
            )
            continue
        try:
            event = parse_event(item, now=now)
        except EventError as exc:
            errors.extend({"index": index, "field": e.field, "message": e.message} for e in exc.errors)
            continue
        data = event.to_bytes()
        if max_event_bytes is not None and len(data) > max_event_bytes:
            errors.append(
                {"index": index, "field": "", "message": _size_message(event, len(data), max_event_bytes)}
            )
            continue
        batch.append((event, data))
    if errors:
        bad = len({e["index"] for e in errors})
        shown = errors[:MAX_REPORTED_ERRORS]
        described = "; ".join(f"events[{e['index']}]{_dotted(e['field'])}: {e['message']}" for e in shown)
        more = f" (and {len(errors) - len(shown)} more errors)" if len(errors) > len(shown) else ""
        raise Rejection(
            400,
            f"{bad} of {len(items)} events are invalid, nothing was published: {described}{more}",
            shown,
            rejected_events=bad,
        )
    return batch


class Outgoing(NamedTuple):
    """One validated event, encoded: what is published and answered."""

    id: str
    subject: str
    data: bytes
    database: str | None = None  # what producer tokens are checked against (producers.py)


def prepare_body(
    raw: bytes, encoding: str, max_body_bytes: int, max_event_bytes: int, max_events: int
) -> list[Outgoing]:
    """Inflate, decode, validate and encode a request body (pure, CPU only): the events to publish,
    or a Rejection. Heavy bodies (costs_the_worker) run this in a worker process (heavy.py), small
    ones inline."""
    inflated = inflate(raw, encoding, max_body_bytes)
    batch = parse_events_body(inflated, max_events=max_events, max_event_bytes=max_event_bytes)
    return [Outgoing(event.id, subject_for(event), data, event.database) for event, data in batch]


def costs_the_worker(encoding: str, size: int | None, heavy_body_bytes: int) -> bool:
    """Whether a body is heavy (inflated and parsed in ingest's worker, service.py): compressed, or
    larger than `heavy_body_bytes`. `size` None (not declared): known only once the body is read."""
    return encoding != "identity" or (size is not None and size > heavy_body_bytes)


def _size_message(event: Event, size: int, limit: int) -> str:
    fields = {k: len(json.dumps(v, ensure_ascii=False).encode()) for k, v in event.payload.items()}
    largest = max(fields, key=fields.__getitem__)
    return (
        f"the event is {size} bytes encoded, over the limit of {limit} bytes per event (the bus's "
        f"max_payload less room for its dead letter); its largest field is {largest} "
        f"({fields[largest]} bytes)"
    )


def _dotted(name: str) -> str:
    return f".{name}" if name else ""


def _json_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_content_type(content_type: str) -> None:
    if content_type not in JSON_CONTENT_TYPES:
        shown = content_type or "none"
        raise Rejection(415, f"Content-Type must be application/json (got {shown})")


def check_content_encoding(header: str | None) -> str:
    encoding = (header or "identity").strip().lower()
    if encoding not in CONTENT_ENCODINGS:
        raise Rejection(
            415, f"Content-Encoding {encoding!r} is not supported; send identity, gzip or deflate"
        )
    return encoding


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body inflated to at most `limit` bytes: past that, 413 without inflating more."""
    if encoding == "identity":
        return data
    wbits = 31 if encoding in ("gzip", "x-gzip") else (15 if data[:1] == b"\x78" else -15)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Rejection(400, f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Rejection(413, f"the body inflates to more than {limit} bytes; send fewer events per request")
    if not inflater.eof:
        raise Rejection(400, f"the {encoding} body is truncated")
    return out
