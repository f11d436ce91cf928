"""The event model: Copernica's webhook events, validated once at ingest and carried as JSON on the bus.

Field names follow Copernica's webhook documentation (DESIGN.md, "Events"). Decisions made here:

- Unknown top-level fields are rejected, naming each one. Copernica receivers are PHP scripts that read
  ``$_POST``; silently keeping a misspelt field (``recipent``) would hide the typo until a customer asks
  why their script sees nothing.
- ``id`` is optional (a uuid4 hex is filled in); when given it must be 1..128 characters of
  ``[A-Za-z0-9_.:-]`` because it becomes the NATS ``Nats-Msg-Id`` and the ``webhook-id`` header.
- ``timestamp`` (``YYYY-MM-DD HH:MM:SS``, UTC) and ``time`` (Unix seconds): when one is given the other
  is derived from it; when both are given they must agree; when neither is given "now" is used.
- List and map fields that a producer may have nothing for (``tags``, ``fields``, ``interests``,
  ``parameters``) default to empty; ``created`` / ``modified`` of profile events default to the event's
  ``timestamp``. Everything else marked required in DESIGN.md is required.
- A profile event carrying ``subprofile`` must carry ``collection`` and vice versa; ``collection``
  always requires ``database`` (the Webhook scope is database, then collection).

The per-type tables (required, optional, defaults, each field's kind) are eventtypes.py's: the same
tables build the JSON Schema (schema.py) and docs/events.md.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from hookline.api import EVENT_TYPES, FieldError
from hookline.sender.model.eventtypes import (
    ENVELOPE,
    ENVELOPE_KINDS,
    EVENT_SPECS,
    MAX_UNIX_TIME,
    TIMESTAMP,
    parse_timestamp,
)
from hookline.sender.model.subjects import subject_for
from hookline.sender.model.values import json_type, value_problems

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


class EventError(ValueError):
    """An event failed validation; ``errors`` lists every bad field, not just the first."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid event")


def format_timestamp(unix_seconds: int) -> str:
    """Copernica's ``timestamp``: UTC, ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime(TIMESTAMP_FORMAT)


def _a(word: str) -> str:
    """The indefinite article for a type name: "an open event", "a click event"."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


_ALLOWED: dict[str, frozenset[str]] = {name: spec.allowed for name, spec in EVENT_SPECS.items()}


def _scalar_problem(v: Any) -> str | None:
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number"
    if v is None or isinstance(v, (str, int, float, bool)):
        return None
    return f"must be a string, number, boolean or null, got {json_type(v)}"


def _check_nested(name: str, value: Any, errors: list[FieldError]) -> None:
    """Profile field values are scalars; list items are strings."""
    if name == "fields" and isinstance(value, dict):
        for key, item in value.items():
            problem = _scalar_problem(item)
            if problem:
                errors.append(FieldError(f"fields.{key}", problem))
    elif name in ("tags", "interests") and isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                errors.append(FieldError(f"{name}[{i}]", f"must be a string, got {json_type(item)}"))


# ---------------------------------------------------------------------------------------------------------
# The event


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. ``payload`` is exactly what receivers get (all fields, id/time filled in)."""

    id: str
    type: str
    database: str | None
    collection: str | None
    payload: dict[str, Any]
    # The JSON this event was read from (`from_bytes`): what ingest and redrive put on the bus is
    # exactly `to_bytes()`, so a JSON delivery can send it as it is (wire.render_event).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """Compact JSON for the bus."""
        return compact_json(self.payload)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Event:
        """Rebuild an event published by ingest (validated there); raises EventError on garbage."""
        try:
            payload = _loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventError([FieldError("$", f"not valid JSON: {exc}")]) from None
        if not isinstance(payload, dict):
            raise EventError([FieldError("$", f"must be an object, got {json_type(payload)}")])
        event_id, event_type = payload.get("id"), payload.get("type")
        errors = []
        if not isinstance(event_id, str):
            errors.append(FieldError("id", "missing or not a string"))
        if not isinstance(event_type, str) or event_type not in EVENT_SPECS:
            errors.append(FieldError("type", f"unknown event type {event_type!r}"))
        if errors:
            raise EventError(errors)
        event = _new_event(cls)  # what __init__ does, a third faster (_EVENT_SLOTS): paid per event
        set_id, set_type, set_database, set_collection, set_payload, set_raw = _EVENT_SLOTS
        set_id(event, event_id)
        set_type(event, event_type)
        set_database(event, _ref_str(payload.get("database")))
        set_collection(event, _ref_str(payload.get("collection")))
        set_payload(event, payload)
        set_raw(event, data if isinstance(data, bytes) else None)
        return event

    @property
    def subject(self) -> str:
        return subject_for(self)

    @property
    def time(self) -> int:
        return int(self.payload["time"])


# The slots of Event's fields, in order, written straight: a frozen dataclass's __init__ writes each
# through object.__setattr__, which was a third of `Event.from_bytes`, paid by every sender per event.
# tests/unit/test_events.py holds an event read this way equal to one built by __init__.
_new_event = object.__new__
_EVENT_SLOTS = tuple(Event.__dict__[f.name].__set__ for f in fields(Event))

# Built once: json.dumps with arguments builds a new encoder on every call, which the sender pays per
# delivery.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def compact_json(value: Any) -> bytes:
    """The same bytes as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()``."""
    return _COMPACT_JSON.encode(value).encode()


def _loads(data: bytes | str) -> Any:
    """``json.loads``, read by orjson first: the events on the bus in a quarter of the time, paid once
    per event by every sender. They are ingest's validated events, whose integers fit 64 bits (orjson
    reads those exactly; it would read a larger one as a float, which ingest never lets onto the bus).
    Whatever orjson refuses (a lone surrogate escape, NaN, a number out of range) takes the standard
    library's path, so such input gets the standard library's answer or error."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _first_per_field(errors: list[FieldError]) -> list[FieldError]:
    """One error per field (the value walker and the per-field checks may both flag one value)."""
    seen: dict[str, FieldError] = {}
    for error in errors:
        seen.setdefault(error.field, error)
    return list(seen.values())


def _ref_str(v: Any) -> str | None:
    return None if v is None else str(v)


def parse_event(obj: Any, *, now: float | datetime | None = None) -> Event:
    """Validate one producer event; raise EventError listing every bad field."""
    if not isinstance(obj, Mapping):
        raise EventError([FieldError("$", f"an event must be a JSON object, got {json_type(obj)}")])
    errors: list[FieldError] = []
    event_type = obj.get("type")
    if event_type is None:
        raise EventError([FieldError("type", f"is required; one of {', '.join(EVENT_TYPES)}")])
    if not isinstance(event_type, str) or event_type not in EVENT_SPECS:
        shown = event_type if isinstance(event_type, str) else json_type(event_type)
        raise EventError(
            [FieldError("type", f"unknown event type {shown!r}; one of {', '.join(EVENT_TYPES)}")]
        )
    spec = EVENT_SPECS[event_type]
    allowed = _ALLOWED[event_type]
    errors.extend(value_problems(obj))

    for key in obj:
        if key not in allowed:
            errors.append(
                FieldError(
                    str(key), f"unknown field for a {event_type} event; allowed: {', '.join(sorted(allowed))}"
                )
            )
    for name, kind in spec.required.items():
        if name not in obj or obj[name] is None:
            errors.append(FieldError(name, f"is required for {_a(event_type)} event"))
            continue
        problem = kind.check(obj[name])
        if problem:
            errors.append(FieldError(name, problem))
        else:
            _check_nested(name, obj[name], errors)
    for name, kind in spec.optional.items():
        if name in obj and obj[name] is not None:
            problem = kind.check(obj[name])
            if problem:
                errors.append(FieldError(name, problem))
            else:
                _check_nested(name, obj[name], errors)

    event_id = obj.get("id")
    if event_id is None:
        event_id = uuid.uuid4().hex
    else:
        problem = ENVELOPE_KINDS["id"].check(event_id)
        if problem:
            errors.append(FieldError("id", problem))

    unix_time, timestamp = _resolve_time(obj.get("time"), obj.get("timestamp"), now, errors)

    has = {k for k in ("database", "collection", "profile", "subprofile") if obj.get(k) is not None}
    if "collection" in has and "database" not in has:
        errors.append(FieldError("collection", "requires database (a collection belongs to a database)"))
    if spec.profile_event and ("subprofile" in has) != ("collection" in has):
        missing = "collection" if "subprofile" in has else "subprofile"
        errors.append(
            FieldError(missing, "is required for a subprofile event (subprofile and collection go together)")
        )

    if errors:
        raise EventError(_first_per_field(errors))

    payload: dict[str, Any] = {"id": event_id, "type": event_type, "timestamp": timestamp, "time": unix_time}
    for key, value in obj.items():
        if key not in ENVELOPE and value is not None:
            payload[key] = value
    for key, make in spec.defaults.items():
        if key not in payload:
            payload[key] = make()
    for key in spec.from_timestamp:
        payload.setdefault(key, timestamp)
    return Event(
        event_id, event_type, _ref_str(obj.get("database")), _ref_str(obj.get("collection")), payload
    )


def _resolve_time(
    raw_time: Any, raw_timestamp: Any, now: float | datetime | None, errors: list[FieldError]
) -> tuple[int, str]:
    """Fill whichever of time/timestamp is missing from the other, or from now."""
    unix_time: int | None = None
    parsed: datetime | None = None
    if raw_time is not None:
        if isinstance(raw_time, int) and not isinstance(raw_time, bool):
            unix_time = raw_time
            if unix_time < 0:
                errors.append(FieldError("time", "must not be negative (Unix seconds)"))
                unix_time = None
            elif unix_time > MAX_UNIX_TIME:
                errors.append(FieldError("time", f"must be Unix seconds up to {MAX_UNIX_TIME} (year 9999)"))
                unix_time = None
        else:
            errors.append(FieldError("time", f"must be an integer (Unix seconds), got {json_type(raw_time)}"))
    if raw_timestamp is not None:
        problem = TIMESTAMP.check(raw_timestamp)
        if problem:
            errors.append(FieldError("timestamp", problem))
        else:
            parsed = parse_timestamp(raw_timestamp)
    if unix_time is not None and parsed is not None:
        if int(parsed.timestamp()) != unix_time:
            errors.append(
                FieldError(
                    "timestamp",
                    f"{raw_timestamp!r} does not match time {unix_time} ({format_timestamp(unix_time)} UTC); "
                    "send one of them or make them agree",
                )
            )
        return unix_time, raw_timestamp
    if unix_time is not None:
        return unix_time, format_timestamp(unix_time)
    if parsed is not None:
        return int(parsed.timestamp()), raw_timestamp
    if raw_time is not None or raw_timestamp is not None:
        return 0, ""  # an error was recorded above
    if now is None:
        current = int(datetime.now(UTC).timestamp())
    elif isinstance(now, datetime):
        current = int(now.timestamp())
    else:
        current = int(now)
    return current, format_timestamp(current)
