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
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from hookline.api import EVENT_TYPES, FieldError

SUBJECT_PREFIX = "hookline.events"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
ID_MAX_LENGTH = 128
MAX_UNIX_TIME = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last second a timestamp can show
NO_TOKEN = "_"
# Bounds on every value of an event, checked where it enters (ingest): receivers in PHP and
# JavaScript read these, and the sender and dead letters re-encode them.
MAX_DEPTH = 32  # nesting levels below the event object (parameters.a.b... or lists in lists)
MAX_INT = 2**63 - 1  # integers must fit a signed 64-bit integer (PHP's int)
MIN_INT = -(2**63)

_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
# ASCII digits only: \d would also match fullwidth or Arabic-Indic digits, which int() accepts.
_TIMESTAMP_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")


class EventError(ValueError):
    """An event failed validation; ``errors`` lists every bad field, not just the first."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors) or "invalid event")


# ---------------------------------------------------------------------------------------------------------
# Field kinds: a check returns None when the value is fine, else a message.

Check = Callable[[Any], str | None]


def _is_str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, got {_json_type(v)}"


def _is_nonempty_str(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string, got {_json_type(v)}"
    return None if v.strip() else "must not be empty"


def _is_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool)
    return None if ok else f"must be an integer, got {_json_type(v)}"


def _is_ref(v: Any) -> str | None:
    """Copernica ids and names (profile, database, ...) arrive as numbers or strings."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        return f"must be a string or an integer, got {_json_type(v)}"
    if isinstance(v, str) and not v.strip():
        return "must not be empty"
    return None


def _is_str_or_int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        return f"must be a string or an integer, got {_json_type(v)}"
    return None


def _is_str_list(v: Any) -> str | None:
    if not isinstance(v, list):
        return f"must be a list of strings, got {_json_type(v)}"
    return None


def _is_object(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"must be an object, got {_json_type(v)}"


def _is_timestamp(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string 'YYYY-MM-DD HH:MM:SS', got {_json_type(v)}"
    parsed = _parse_timestamp(v)
    if parsed is None:
        return f"must be 'YYYY-MM-DD HH:MM:SS' (UTC, ASCII digits), got {_shown(v)}"
    if parsed.timestamp() < 0:
        return f"must be at or after 1970-01-01 00:00:00 (time is Unix seconds), got {_shown(v)}"
    return None


def _shown(v: str, limit: int = 64) -> str:
    """A value quoted for an error message, cut short (error bodies stay small)."""
    return repr(v if len(v) <= limit else v[:limit] + "...")


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _parse_timestamp(v: str) -> datetime | None:
    match = _TIMESTAMP_RE.fullmatch(v)
    if match is None:
        return None
    try:
        return datetime(*map(int, match.groups()), tzinfo=UTC)  # type: ignore[misc]
    except ValueError:  # no such date or time, e.g. 2024-02-30
        return None


def format_timestamp(unix_seconds: int) -> str:
    """Copernica's ``timestamp``: UTC, ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime(TIMESTAMP_FORMAT)


# ---------------------------------------------------------------------------------------------------------
# Per-type field tables. `required` must be present; `optional` may be; `defaults` are filled when absent.

_CONTEXT: dict[str, Check] = {
    "database": _is_ref,
    "collection": _is_ref,
    "profile": _is_ref,
    "subprofile": _is_ref,
}
_MAIL_BASE: dict[str, Check] = {"recipient": _is_nonempty_str}
_MAIL_OPTIONAL: dict[str, Check] = {**_CONTEXT, "tags": _is_str_list}


@dataclass(frozen=True)
class _TypeSpec:
    required: dict[str, Check]
    optional: dict[str, Check]
    defaults: dict[str, Callable[[], Any]] = field(default_factory=dict)
    profile_event: bool = False  # create/update/delete: subprofile and collection come together

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self.required) | frozenset(self.optional) | _ENVELOPE


_ENVELOPE = frozenset({"id", "type", "timestamp", "time"})
_TAGS_DEFAULT: dict[str, Callable[[], Any]] = {"tags": list}

_SPECS: dict[str, _TypeSpec] = {
    "open": _TypeSpec(
        {**_MAIL_BASE, "ip": _is_str},
        {**_MAIL_OPTIONAL, "useragent": _is_str, "referer": _is_str},
        _TAGS_DEFAULT,
    ),
    "click": _TypeSpec(
        {**_MAIL_BASE, "ip": _is_str, "original": _is_nonempty_str},
        {**_MAIL_OPTIONAL, "useragent": _is_str, "referer": _is_str},
        _TAGS_DEFAULT,
    ),
    "bounce": _TypeSpec(
        {**_MAIL_BASE, "envelope": _is_str, "mime": _is_str},
        dict(_MAIL_OPTIONAL),
        _TAGS_DEFAULT,
    ),
    "failure": _TypeSpec(
        {**_MAIL_BASE, "action": _is_str, "state": _is_str},
        {**_MAIL_OPTIONAL, "code": _is_str_or_int, "extended": _is_str, "description": _is_str},
        _TAGS_DEFAULT,
    ),
    "delivery": _TypeSpec(dict(_MAIL_BASE), dict(_MAIL_OPTIONAL), _TAGS_DEFAULT),
}
for _name in ("create", "update"):
    _SPECS[_name] = _TypeSpec(
        {"profile": _is_ref, "database": _is_ref},
        {
            "subprofile": _is_ref,
            "collection": _is_ref,
            "created": _is_timestamp,
            "modified": _is_timestamp,
            "fields": _is_object,
            "interests": _is_str_list,
            "parameters": _is_object,
        },
        {"fields": dict, "interests": list, "parameters": dict},
        profile_event=True,
    )
_SPECS["delete"] = _TypeSpec(
    {"profile": _is_ref, "database": _is_ref},
    {"subprofile": _is_ref, "collection": _is_ref, "fields": _is_object},
    {"fields": dict},
    profile_event=True,
)
_ALLOWED: dict[str, frozenset[str]] = {name: spec.allowed for name, spec in _SPECS.items()}


class HugeInteger(int):
    """An integer literal too long to convert (a JSON decoder hook returns this; see `value_problems`)."""

    digits: int = 0


def value_problems(obj: Mapping[str, Any], *, max_depth: int = MAX_DEPTH) -> list[FieldError]:
    """Values no receiver can take, anywhere in an event: non-finite numbers (NaN, Infinity, 1e400),
    integers beyond 64 bits, strings that are not valid Unicode (lone surrogates such as \\ud800,
    in values or keys), nesting deeper than `max_depth`. Each error names the field's path.

    Iterative, so a deep document cannot exhaust the stack; it never descends past the limit. An
    event whose values are all plain (the common case) is passed by `_plain` without building paths.
    """
    if _plain_object(obj, 0, max_depth):
        return []
    errors: list[FieldError] = []
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in reversed(obj.items())]
    for key in obj:
        if isinstance(key, str) and _bad_unicode(key):
            errors.append(FieldError(_printable(key), "field name is not valid Unicode (a lone surrogate)"))
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            if _bad_unicode(value):
                errors.append(FieldError(path, "is not valid Unicode text (holds a lone surrogate)"))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, HugeInteger):
            errors.append(
                FieldError(path, f"integer of {value.digits} digits; integers must fit 64 bits (+-{MAX_INT})")
            )
        elif isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                errors.append(
                    FieldError(path, f"integer out of range; integers must fit 64 bits (+-{MAX_INT})")
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                errors.append(
                    FieldError(
                        path,
                        "must be a finite number (NaN, Infinity and overflows such as 1e400 are not JSON)",
                    )
                )
        elif isinstance(value, (dict, list)):
            if depth >= max_depth and value:
                errors.append(FieldError(path, f"nested deeper than {max_depth} levels"))
                continue
            if isinstance(value, dict):
                for key, item in reversed(value.items()):
                    name = str(key)
                    if _bad_unicode(name):
                        errors.append(
                            FieldError(
                                f"{path}.{_printable(name)}",
                                "field name is not valid Unicode (a lone surrogate)",
                            )
                        )
                        continue
                    stack.append((f"{path}.{name}", item, depth + 1))
            else:
                stack.extend(
                    (f"{path}[{i}]", item, depth + 1) for i, item in reversed(list(enumerate(value)))
                )
        if len(errors) >= 50:  # enough to act on; the rest of a hostile document is not walked
            break
    return errors


def _plain(value: Any, depth: int, max_depth: int) -> bool:
    """True when `value_problems` would find nothing in it (a fast check; False means: look closer)."""
    kind = type(value)
    if kind is str:
        return value.isascii() or not _bad_unicode(value)
    if kind is int:
        return MIN_INT <= value <= MAX_INT
    if value is None or kind is bool:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return _plain_object(value, depth, max_depth)
    if kind is list:
        if not value:
            return True
        if depth + 1 >= max_depth:
            return False
        return all(_plain(item, depth + 1, max_depth) for item in value)
    return False


def _plain_object(obj: Mapping[str, Any], depth: int, max_depth: int) -> bool:
    if obj and depth + 1 >= max_depth:
        return False
    for key, item in obj.items():
        if type(item) is str:  # the common case, inline
            if not item.isascii() and _bad_unicode(item):
                return False
        elif not _plain(item, depth + 1, max_depth):
            return False
        if not key.isascii() and _bad_unicode(key):
            return False
    return True


def _bad_unicode(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()


def _scalar_problem(v: Any) -> str | None:
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number"
    if v is None or isinstance(v, (str, int, float, bool)):
        return None
    return f"must be a string, number, boolean or null, got {_json_type(v)}"


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
                errors.append(FieldError(f"{name}[{i}]", f"must be a string, got {_json_type(item)}"))


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
            raise EventError([FieldError("$", f"must be an object, got {_json_type(payload)}")])
        event_id, event_type = payload.get("id"), payload.get("type")
        errors = []
        if not isinstance(event_id, str):
            errors.append(FieldError("id", "missing or not a string"))
        if not isinstance(event_type, str) or event_type not in _SPECS:
            errors.append(FieldError("type", f"unknown event type {event_type!r}"))
        if errors:
            raise EventError(errors)
        return cls(
            event_id,
            event_type,
            _ref_str(payload.get("database")),
            _ref_str(payload.get("collection")),
            payload,
            data if isinstance(data, bytes) else None,
        )

    @property
    def subject(self) -> str:
        return subject_for(self)

    @property
    def time(self) -> int:
        return int(self.payload["time"])


# Built once: json.dumps/json.loads with arguments build a new encoder, and go through encoding
# detection, on every call, which the sender pays per delivery.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_JSON_DECODER = json.JSONDecoder()


def compact_json(value: Any) -> bytes:
    """The same bytes as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()``."""
    return _COMPACT_JSON.encode(value).encode()


def _loads(data: bytes | str) -> Any:
    """``json.loads`` with a fast path for what the bus carries (UTF-8, no surrounding whitespace)."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        value, end = _JSON_DECODER.raw_decode(text)
    except ValueError:  # also UnicodeDecodeError: json.loads gives the usual answer or error
        return json.loads(data)
    return value if end == len(text) else json.loads(data)


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
        raise EventError([FieldError("$", f"an event must be a JSON object, got {_json_type(obj)}")])
    errors: list[FieldError] = []
    event_type = obj.get("type")
    if event_type is None:
        raise EventError([FieldError("type", f"is required; one of {', '.join(EVENT_TYPES)}")])
    if not isinstance(event_type, str) or event_type not in _SPECS:
        shown = event_type if isinstance(event_type, str) else _json_type(event_type)
        raise EventError(
            [FieldError("type", f"unknown event type {shown!r}; one of {', '.join(EVENT_TYPES)}")]
        )
    spec = _SPECS[event_type]
    allowed = _ALLOWED[event_type]
    errors.extend(value_problems(obj))

    for key in obj:
        if key not in allowed:
            errors.append(
                FieldError(
                    str(key), f"unknown field for a {event_type} event; allowed: {', '.join(sorted(allowed))}"
                )
            )
    for name, check in spec.required.items():
        if name not in obj or obj[name] is None:
            errors.append(FieldError(name, f"is required for a {event_type} event"))
            continue
        problem = check(obj[name])
        if problem:
            errors.append(FieldError(name, problem))
        else:
            _check_nested(name, obj[name], errors)
    for name, check in spec.optional.items():
        if name in obj and obj[name] is not None:
            problem = check(obj[name])
            if problem:
                errors.append(FieldError(name, problem))
            else:
                _check_nested(name, obj[name], errors)

    event_id = obj.get("id")
    if event_id is None:
        event_id = uuid.uuid4().hex
    elif not isinstance(event_id, str) or not _ID_RE.fullmatch(event_id):
        errors.append(
            FieldError(
                "id", f"must be 1..{ID_MAX_LENGTH} characters of letters, digits, '_', '.', ':' or '-'"
            )
        )

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
        if key not in _ENVELOPE and value is not None:
            payload[key] = value
    for key, make in spec.defaults.items():
        if key not in payload:
            payload[key] = make()
    if event_type in ("create", "update"):
        payload.setdefault("created", timestamp)
        payload.setdefault("modified", timestamp)
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
        if _is_int(raw_time) is None:
            unix_time = raw_time
            if unix_time < 0:
                errors.append(FieldError("time", "must not be negative (Unix seconds)"))
                unix_time = None
            elif unix_time > MAX_UNIX_TIME:
                errors.append(FieldError("time", f"must be Unix seconds up to {MAX_UNIX_TIME} (year 9999)"))
                unix_time = None
        else:
            errors.append(
                FieldError("time", f"must be an integer (Unix seconds), got {_json_type(raw_time)}")
            )
    if raw_timestamp is not None:
        problem = _is_timestamp(raw_timestamp)
        if problem:
            errors.append(FieldError("timestamp", problem))
        else:
            parsed = _parse_timestamp(raw_timestamp)
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


# ---------------------------------------------------------------------------------------------------------
# Subjects: hookline.events.<type>.<database>.<collection>

_SAFE_TOKEN_RE = re.compile(r"[A-Za-z0-9\-]+")
EMPTY_TOKEN = "__"


@lru_cache(maxsize=4096)
def encode_token(value: str | int | None) -> str:
    """A NATS subject token for a database/collection name: injective, never '.', '*', '>' or space.

    Letters, digits and '-' stay; every other byte of the UTF-8 form becomes ``_XX`` (upper-case hex).
    ``None`` is ``_`` and the empty string ``__``, which no other value can produce.
    """
    if value is None:
        return NO_TOKEN
    text = str(value)
    if not text:
        return EMPTY_TOKEN
    if _SAFE_TOKEN_RE.fullmatch(text):
        return text
    out = []
    for ch in text:
        if ch.isascii() and (ch.isalnum() or ch == "-"):
            out.append(ch)
        else:
            out.extend(f"_{b:02X}" for b in ch.encode())
    return "".join(out)


def decode_token(token: str) -> str | None:
    """The inverse of `encode_token` (for tools and tests)."""
    if token == NO_TOKEN:
        return None
    if token == EMPTY_TOKEN:
        return ""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(token[i].encode())
            i += 1
    return out.decode()


def subject_for(event: Event) -> str:
    return f"{SUBJECT_PREFIX}.{event.type}.{encode_token(event.database)}.{encode_token(event.collection)}"


def filter_subjects(events: Iterable[str], database: str | None, collection: str | None) -> list[str]:
    """JetStream consumer filters for a Webhook: one per event type, ``*`` where it is not scoped."""
    if collection is not None and database is None:
        raise ValueError("collection requires database")
    db = encode_token(database) if database is not None else "*"
    coll = encode_token(collection) if collection is not None else "*"
    subjects: list[str] = []
    for event_type in events:
        if event_type not in _SPECS:
            raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")
        subject = f"{SUBJECT_PREFIX}.{event_type}.{db}.{coll}"
        if subject not in subjects:
            subjects.append(subject)
    return subjects


# ---------------------------------------------------------------------------------------------------------
# Examples: one valid producer event per type (documentation, `hookline test`, benchmarks, tests)

_EXAMPLE_MAIL: dict[str, Any] = {
    "recipient": "jane@example.com",
    "tags": ["newsletter", "november"],
    "database": "newsletter",
    "profile": 4711,
}
_EXAMPLES: dict[str, dict[str, Any]] = {
    "open": {**_EXAMPLE_MAIL, "ip": "203.0.113.7", "useragent": "Mozilla/5.0", "referer": ""},
    "click": {
        **_EXAMPLE_MAIL,
        "ip": "203.0.113.7",
        "original": "https://shop.example.com/sale?utm=nl",
        "useragent": "Mozilla/5.0",
    },
    "bounce": {
        **_EXAMPLE_MAIL,
        "envelope": "bounces@mail.example.com",
        "mime": "Subject: Undelivered\r\n\r\n",
    },
    "failure": {
        **_EXAMPLE_MAIL,
        "action": "failed",
        "state": "permanent",
        "code": 550,
        "extended": "5.1.1",
        "description": "mailbox unknown",
    },
    "delivery": dict(_EXAMPLE_MAIL),
    "create": {
        "profile": 4711,
        "database": "newsletter",
        "created": "2024-11-05 09:30:00",
        "modified": "2024-11-05 09:30:00",
        "fields": {"email": "jane@example.com", "firstname": "Jane", "points": 12},
        "interests": ["shoes", "sale"],
        "parameters": {"source": "signup-form"},
    },
    "update": {
        "profile": 4711,
        "database": "newsletter",
        "created": "2024-11-05 09:30:00",
        "modified": "2024-11-06 10:00:00",
        "fields": {"email": "jane@example.com", "firstname": "Janet"},
        "interests": ["shoes"],
        "parameters": {},
    },
    "delete": {"profile": 4711, "database": "newsletter", "fields": {"email": "jane@example.com"}},
}


def example_event(event_type: str, *, subprofile: bool = False) -> dict[str, Any]:
    """A valid producer event of this type (a fresh dict); ``subprofile`` adds subprofile/collection."""
    if event_type not in _EXAMPLES:
        raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")
    event = json.loads(json.dumps(_EXAMPLES[event_type]))
    event["type"] = event_type
    if subprofile:
        event["subprofile"] = 815
        event["collection"] = "orders"
    return event
