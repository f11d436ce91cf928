"""The JSON Schema (draft 2020-12) of a `POST /v1/events` body, built from eventtypes.py's tables.

Served by ingest on `GET /v1/schema` so producers can validate before sending, and generate types. It
says what `parse_event` checks field by field (kinds, required, unknown fields refused, subprofile with
collection, collection with database); a few checks need more than a schema can say (a date that does
not exist, `time` and `timestamp` agreeing, the encoded size of an event), so ingest stays the judge.
A null value counts as absent, as in `parse_event`.
"""

from __future__ import annotations

from typing import Any

from hookline.api import EVENT_TYPES
from hookline.sender.model.eventtypes import ENVELOPE_KINDS, EVENT_SPECS, FIELD_NOTES, TYPE_NOTES, TypeSpec

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_NULL = {"type": "null"}


def _present(name: str) -> dict[str, Any]:
    """`name` is there and not null."""
    return {"required": [name], "properties": {name: {"not": _NULL}}}


def _property(name: str, schema: dict[str, Any], *, nullable: bool) -> dict[str, Any]:
    described = {"description": FIELD_NOTES[name], **schema}
    return {"anyOf": [described, _NULL]} if nullable else described


def type_schema(event_type: str, spec: TypeSpec) -> dict[str, Any]:
    """One event type: its envelope, required and optional fields; anything else refused."""
    properties: dict[str, Any] = {
        name: _property(name, kind.schema, nullable=True)
        for name, kind in ENVELOPE_KINDS.items()
        if name != "type"
    }
    properties["type"] = {"const": event_type, "description": FIELD_NOTES["type"]}
    for name, kind in spec.required.items():
        properties[name] = _property(name, kind.schema, nullable=False)
    for name, kind in spec.optional.items():
        properties[name] = _property(name, kind.schema, nullable=True)
    rules: list[dict[str, Any]] = []
    if "collection" in properties:
        rules.append({"if": _present("collection"), "then": _present("database")})
    if spec.profile_event:
        rules.append({"if": _present("subprofile"), "then": _present("collection")})
        rules.append({"if": _present("collection"), "then": _present("subprofile")})
    out: dict[str, Any] = {
        "title": f"{event_type} event",
        "description": TYPE_NOTES[event_type],
        "type": "object",
        "required": ["type", *spec.required],
        "properties": properties,
        "additionalProperties": False,
    }
    if rules:
        out["allOf"] = rules
    return out


def events_schema(max_events: int | None = None) -> dict[str, Any]:
    """The body ingest takes: one event object, or an array of 1..`max_events` of them."""
    array: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/event"}}
    if max_events is not None:
        array["maxItems"] = max_events
    defs: dict[str, Any] = {
        "event": {
            "description": "One event; `type` decides which fields it holds.",
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": list(EVENT_TYPES)}},
            # if/then per type rather than oneOf: a bad event is reported against its own type only.
            "allOf": [
                {"if": {"properties": {"type": {"const": t}}}, "then": {"$ref": f"#/$defs/{t}"}}
                for t in EVENT_TYPES
            ],
        },
    }
    defs.update({t: type_schema(t, EVENT_SPECS[t]) for t in EVENT_TYPES})
    return {
        "$schema": DRAFT,
        "title": "hookline events",
        "description": "The body of POST /v1/events: one event object or a non-empty JSON array of them.",
        "if": {"type": "array"},
        "then": array,
        "else": {"$ref": "#/$defs/event"},
        "$defs": defs,
    }
