"""What each event type holds: per type, the required and optional fields, their kinds and defaults.

One source for three readers: `events.parse_event` runs each kind's `check`, `schema.events_schema`
builds the JSON Schema of `GET /v1/schema` from each kind's `schema`, and hack/events_doc.py writes
docs/events.md from the same tables (kind `text`, `FIELD_NOTES`, `TYPE_NOTES`). Pure tables: add a field
here and the check, the schema and the documentation follow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hookline.sender.model.values import MAX_INT, MIN_INT, json_type

ID_MAX_LENGTH = 128
ID_PATTERN = r"[A-Za-z0-9_.:\-]{1,128}"
MAX_UNIX_TIME = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last second a timestamp can show
# ASCII digits only: \d would also match fullwidth or Arabic-Indic digits, which int() accepts.
TIMESTAMP_PATTERN = r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)
_ID_RE = re.compile(ID_PATTERN)

# A check returns None when the value is fine, else a message.
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class FieldKind:
    """What a field holds: the check ingest runs, its JSON Schema (draft 2020-12) and its name in docs."""

    check: Check
    schema: dict[str, Any]
    text: str


def _is_str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, got {json_type(v)}"


def _is_nonempty_str(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string, got {json_type(v)}"
    return None if v.strip() else "must not be empty"


def _is_ref(v: Any) -> str | None:
    """Copernica ids and names (profile, database, ...) arrive as numbers or strings."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        return f"must be a string or an integer, got {json_type(v)}"
    if isinstance(v, str) and not v.strip():
        return "must not be empty"
    return None


def _is_str_or_int(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        return f"must be a string or an integer, got {json_type(v)}"
    return None


def _is_str_list(v: Any) -> str | None:
    if not isinstance(v, list):
        return f"must be a list of strings, got {json_type(v)}"
    return None


def _is_object(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"must be an object, got {json_type(v)}"


def _is_timestamp(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string 'YYYY-MM-DD HH:MM:SS', got {json_type(v)}"
    parsed = parse_timestamp(v)
    if parsed is None:
        return f"must be 'YYYY-MM-DD HH:MM:SS' (UTC, ASCII digits), got {shown(v)}"
    if parsed.timestamp() < 0:
        return f"must be at or after 1970-01-01 00:00:00 (time is Unix seconds), got {shown(v)}"
    return None


def _is_id(v: Any) -> str | None:
    if not isinstance(v, str) or not _ID_RE.fullmatch(v):
        return f"must be 1..{ID_MAX_LENGTH} characters of letters, digits, '_', '.', ':' or '-'"
    return None


def _is_unix_time(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"must be an integer (Unix seconds), got {json_type(v)}"
    return None if 0 <= v <= MAX_UNIX_TIME else f"must be Unix seconds from 0 to {MAX_UNIX_TIME}"


def shown(v: str, limit: int = 64) -> str:
    """A value quoted for an error message, cut short (error bodies stay small)."""
    return repr(v if len(v) <= limit else v[:limit] + "...")


def parse_timestamp(v: str) -> datetime | None:
    match = _TIMESTAMP_RE.fullmatch(v)
    if match is None:
        return None
    try:
        return datetime(*map(int, match.groups()), tzinfo=UTC)  # type: ignore[misc]
    except ValueError:  # no such date or time, e.g. 2024-02-30
        return None


# ---------------------------------------------------------------------------------------------------------
# Field kinds. `\S`: at least one character that is not white space (the check strips the value).

_INTEGER = {"type": "integer", "minimum": MIN_INT, "maximum": MAX_INT}
STRING = FieldKind(_is_str, {"type": "string"}, "string")
NONEMPTY_STRING = FieldKind(_is_nonempty_str, {"type": "string", "pattern": r"\S"}, "non-empty string")
REF = FieldKind(
    _is_ref,
    {"anyOf": [_INTEGER, {"type": "string", "pattern": r"\S"}]},
    "id or name: integer or non-empty string",
)
STRING_OR_INTEGER = FieldKind(_is_str_or_int, {"anyOf": [_INTEGER, {"type": "string"}]}, "string or integer")
STRING_LIST = FieldKind(_is_str_list, {"type": "array", "items": {"type": "string"}}, "list of strings")
OBJECT = FieldKind(_is_object, {"type": "object"}, "object")
# `fields` of a profile: values are scalars (events._check_nested names a nested one).
SCALAR_MAP = FieldKind(
    _is_object,
    {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
    "object of name to string, number, boolean or null",
)
TIMESTAMP = FieldKind(
    _is_timestamp,
    {"type": "string", "pattern": f"^{TIMESTAMP_PATTERN}$"},
    "`YYYY-MM-DD HH:MM:SS` (UTC)",
)

# Every event's envelope. parse_event checks these itself (with `time` and `timestamp` agreeing); the
# kinds are for the schema and the docs.
ENVELOPE_KINDS: dict[str, FieldKind] = {
    "id": FieldKind(
        _is_id, {"type": "string", "pattern": f"^{ID_PATTERN}$"}, f"1..{ID_MAX_LENGTH} of `A-Za-z0-9_.:-`"
    ),
    "type": FieldKind(_is_str, {"type": "string"}, "event type"),
    "timestamp": TIMESTAMP,
    "time": FieldKind(
        _is_unix_time, {"type": "integer", "minimum": 0, "maximum": MAX_UNIX_TIME}, "integer, Unix seconds"
    ),
}
ENVELOPE = frozenset(ENVELOPE_KINDS)


# ---------------------------------------------------------------------------------------------------------
# Per-type field tables. `required` must be present; `optional` may be; `defaults` are filled when absent.

_CONTEXT: dict[str, FieldKind] = {"database": REF, "collection": REF, "profile": REF, "subprofile": REF}
_MAIL_BASE: dict[str, FieldKind] = {"recipient": NONEMPTY_STRING}
_MAIL_OPTIONAL: dict[str, FieldKind] = {**_CONTEXT, "tags": STRING_LIST}


@dataclass(frozen=True)
class TypeSpec:
    required: dict[str, FieldKind]
    optional: dict[str, FieldKind]
    defaults: dict[str, Callable[[], Any]] = field(default_factory=dict)
    profile_event: bool = False  # create/update/delete: subprofile and collection come together
    from_timestamp: tuple[str, ...] = ()  # fields that default to the event's timestamp

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self.required) | frozenset(self.optional) | ENVELOPE


_TAGS_DEFAULT: dict[str, Callable[[], Any]] = {"tags": list}

EVENT_SPECS: dict[str, TypeSpec] = {
    "open": TypeSpec(
        {**_MAIL_BASE, "ip": STRING},
        {**_MAIL_OPTIONAL, "useragent": STRING, "referer": STRING},
        _TAGS_DEFAULT,
    ),
    "click": TypeSpec(
        {**_MAIL_BASE, "ip": STRING, "original": NONEMPTY_STRING},
        {**_MAIL_OPTIONAL, "useragent": STRING, "referer": STRING},
        _TAGS_DEFAULT,
    ),
    "bounce": TypeSpec(
        {**_MAIL_BASE, "envelope": STRING, "mime": STRING},
        dict(_MAIL_OPTIONAL),
        _TAGS_DEFAULT,
    ),
    "failure": TypeSpec(
        {**_MAIL_BASE, "action": STRING, "state": STRING},
        {**_MAIL_OPTIONAL, "code": STRING_OR_INTEGER, "extended": STRING, "description": STRING},
        _TAGS_DEFAULT,
    ),
    "delivery": TypeSpec(dict(_MAIL_BASE), dict(_MAIL_OPTIONAL), _TAGS_DEFAULT),
}
for _name in ("create", "update"):
    EVENT_SPECS[_name] = TypeSpec(
        {"profile": REF, "database": REF},
        {
            "subprofile": REF,
            "collection": REF,
            "created": TIMESTAMP,
            "modified": TIMESTAMP,
            "fields": SCALAR_MAP,
            "interests": STRING_LIST,
            "parameters": OBJECT,
        },
        {"fields": dict, "interests": list, "parameters": dict},
        profile_event=True,
        from_timestamp=("created", "modified"),
    )
EVENT_SPECS["delete"] = TypeSpec(
    {"profile": REF, "database": REF},
    {"subprofile": REF, "collection": REF, "fields": SCALAR_MAP},
    {"fields": dict},
    profile_event=True,
)

# ---------------------------------------------------------------------------------------------------------
# What the types and fields mean (docs/events.md and the schema's descriptions).

TYPE_NOTES: dict[str, str] = {
    "open": "a recipient opened a mailing (its tracking image was loaded)",
    "click": "a recipient clicked a link in a mailing",
    "bounce": "a mailing came back: the bounce message as it was received",
    "failure": "the receiving mail server refused or could not take a mailing",
    "delivery": "the receiving mail server accepted a mailing",
    "create": "a profile was created (a subprofile: with `subprofile` and `collection`)",
    "update": "a profile was changed (a subprofile: with `subprofile` and `collection`)",
    "delete": "a profile was deleted (a subprofile: with `subprofile` and `collection`)",
}

FIELD_NOTES: dict[str, str] = {
    "id": "the event's id, sent as the `webhook-id` header; the same id within the dedup window "
    "(2 minutes) is stored once. Absent: a random one is filled in (and answered)",
    "type": "the event type",
    "timestamp": "when it happened, UTC. Absent: derived from `time` (or now); both given: they must agree",
    "time": "when it happened, Unix seconds. Absent: derived from `timestamp` (or now)",
    "recipient": "the e-mail address the mailing was sent to",
    "ip": "the address the request came from",
    "useragent": "the browser's or mail program's User-Agent",
    "referer": "the Referer of the request",
    "original": "the link's target, as written in the mailing",
    "envelope": "the envelope address the bounce was sent to",
    "mime": "the bounce message, MIME as received",
    "action": "what the mail server did, e.g. `failed`, `delayed`",
    "state": "whether to try again, e.g. `permanent`, `temporary`",
    "code": "the SMTP status code, e.g. `550`",
    "extended": "the enhanced status code, e.g. `5.1.1`",
    "description": "the mail server's explanation",
    "tags": "the mailing's tags",
    "database": "the database (id or name); a Webhook's `spec.database` filters on it",
    "collection": "the collection (id or name) of a subprofile; a Webhook's `spec.collection` filters on it; "
    "needs `database`",
    "profile": "the profile (id)",
    "subprofile": "the subprofile (id); a profile event with it needs `collection`, and the reverse",
    "created": "when the profile was created",
    "modified": "when the profile was last changed",
    "fields": "the profile's fields: name to value (string, number, boolean or null; nothing nested)",
    "interests": "the profile's interests",
    "parameters": "anything else the change came with, e.g. the form that made it",
}
