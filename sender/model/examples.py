"""One valid producer event per type: for documentation, `hookline test`, benchmarks and tests."""

from __future__ import annotations

import json
from typing import Any

from hookline.api import EVENT_TYPES

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
