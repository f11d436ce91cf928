"""NATS subjects of events: ``hookline.events.<type>.<database>.<collection>``, tokens that can carry any
database or collection name, and the filters a Webhook's consumer uses. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Protocol

from hookline.api import EVENT_TYPES

SUBJECT_PREFIX = "hookline.events"
NO_TOKEN = "_"


class Scoped(Protocol):
    """What a subject is made of (an Event has it)."""

    @property
    def type(self) -> str: ...
    @property
    def database(self) -> str | None: ...
    @property
    def collection(self) -> str | None: ...


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


def subject_for(event: Scoped) -> str:
    """The subject ingest publishes ``event`` on."""
    return f"{SUBJECT_PREFIX}.{event.type}.{encode_token(event.database)}.{encode_token(event.collection)}"


def filter_subjects(events: Iterable[str], database: str | None, collection: str | None) -> list[str]:
    """JetStream consumer filters for a Webhook: one per event type, ``*`` where it is not scoped."""
    if collection is not None and database is None:
        raise ValueError("collection requires database")
    db = encode_token(database) if database is not None else "*"
    coll = encode_token(collection) if collection is not None else "*"
    subjects: list[str] = []
    for event_type in events:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}")
        subject = f"{SUBJECT_PREFIX}.{event_type}.{db}.{coll}"
        if subject not in subjects:
            subjects.append(subject)
    return subjects
