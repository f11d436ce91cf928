"""Bundles: several events stored as one JetStream message (issue 22, docs/design-grouped-storage.md).

Every message in `HOOKLINE_EVENTS` is pulled, parsed and acknowledged on its own, by each sender and
by nats-server; a message that carries G events divides that by G. A bundle is the compact JSON of its
events joined by newlines (compact JSON never holds a raw newline), with the header
`Hookline-Events: <count>`; a message without the header is one event, as ever, so a stream may hold
both and senders read both. Each event keeps its own bytes: dead letters, attempt records and
redrives stay per event.

What happens to the events of one bundle is decided here, without I/O: `verdict` says what the
message gets once each of its events was settled (delivered, dead-lettered, or to be retried), and
`BundleProgress` is what is remembered of a bundle sent back for a retry: which events are done and
when each of the others is due, so that a redelivery skips the first and holds the second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUNDLE_HEADER",
    "MAX_BUNDLE_EVENTS",
    "BundleError",
    "BundleProgress",
    "Verdict",
    "bundle_size",
    "pack",
    "unpack",
    "verdict",
]

BUNDLE_HEADER = "Hookline-Events"
MAX_BUNDLE_EVENTS = 1000  # a bundle's event count, checked on both sides
SEPARATOR = b"\n"


class BundleError(ValueError):
    """A message that claims to be a bundle and is not a well-formed one."""


def pack(events: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The payload and headers of a message carrying `events` (each an event's compact JSON)."""
    if not 1 <= len(events) <= MAX_BUNDLE_EVENTS:
        raise BundleError(f"a bundle holds 1 to {MAX_BUNDLE_EVENTS} events, not {len(events)}")
    for index, event in enumerate(events):
        if SEPARATOR in event or not event:
            raise BundleError(f"event {index} of the bundle is empty or holds a newline (not compact JSON)")
    return SEPARATOR.join(events), {BUNDLE_HEADER: str(len(events))}


def bundle_size(headers: Mapping[str, str] | None) -> int | None:
    """How many events a message with `headers` carries when it is a bundle; None when it is one event.
    Raises BundleError for a count that is not 1 to MAX_BUNDLE_EVENTS."""
    if not headers:
        return None
    raw = headers.get(BUNDLE_HEADER)
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_BUNDLE_EVENTS:
        raise BundleError(f"header {BUNDLE_HEADER} must be 1 to {MAX_BUNDLE_EVENTS}, not {raw[:20]!r}")
    return int(raw)


def unpack(data: bytes, count: int) -> list[bytes]:
    """The events of a bundle whose header says `count`; BundleError when the payload disagrees."""
    events = data.split(SEPARATOR)
    if len(events) != count or not all(events):
        raise BundleError(f"the bundle says {count} events and holds {len(events)} (or an empty one)")
    return events


@dataclass(frozen=True)
class BundleProgress:
    """A bundle sent back for a retry: the events done (delivered, dead-lettered or dropped) and,
    for the others, when each may be sent again (Unix seconds)."""

    done: frozenset[int] = frozenset()
    due: Mapping[int, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {"done": sorted(self.done), "due": {str(k): round(v, 3) for k, v in sorted(self.due.items())}}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> BundleProgress:
        """ValueError when it is not one (the caller treats that as nothing remembered)."""
        try:
            doc: Any = json.loads(data)
            done = frozenset(int(i) for i in doc["done"])
            due = {int(k): float(v) for k, v in doc["due"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a bundle progress record: {exc}") from None
        return cls(done, due)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the bundle's message gets: an ack, or a NAK after `delay` seconds with `progress` stored
    first (`progress` None: nothing is done and every event is due at once, nothing to remember)."""

    ack: bool
    delay: float = 0.0
    progress: BundleProgress | None = None


ACK = Verdict(ack=True)


def verdict(size: int, done: frozenset[int], due: Mapping[int, float], now: float) -> Verdict:
    """The verdict for a bundle of `size` events once each is settled: `done` ones, and the others'
    times they are due again (`due`, every index not in `done`). The message comes back when the
    earliest is due; the events not due yet then wait again (unsent), so each keeps its own schedule."""
    if len(done) == size:
        return ACK
    missing = set(range(size)) - done - due.keys()
    if missing:
        raise ValueError(f"events {sorted(missing)} of the bundle are not settled")
    delay = max(0.0, min(due.values()) - now)
    if not done and all(at <= now for at in due.values()):
        return Verdict(ack=False, delay=delay)
    return Verdict(ack=False, delay=delay, progress=BundleProgress(done, dict(due)))
