"""Which events of a request go into which bundle (pure; the sequence that publishes them is
ingest/bundled.py, the format model/bundles.py).

Events that share a subject go together in request order, up to `max_events` per bundle and as many
bytes as a NATS message holds; an event alone on its subject is published as a message of its own,
as without bundles. An id repeated within the request is published once: the repeat is answered with
the first one's fate (a duplicate once stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hookline.sender.bus.publish import Fate
from hookline.sender.ingest.body import Outgoing
from hookline.sender.model.bundles import MAX_BUNDLE_EVENTS

__all__ = ["BundlePlan", "Group", "answer_fates", "plan_bundles"]


@dataclass(frozen=True, slots=True)
class Group:
    """Events (their positions in the request) published together on `subject`; one alone is plain."""

    subject: str
    members: tuple[int, ...]

    @property
    def plain(self) -> bool:
        return len(self.members) == 1


@dataclass(frozen=True)
class BundlePlan:
    groups: tuple[Group, ...]
    repeats: dict[int, int]  # position of a repeated id -> position of its first occurrence


def plan_bundles(batch: Sequence[Outgoing], max_events: int, max_bytes: int) -> BundlePlan:
    """The groups of a request's events: by subject, in order, at most `max_events` (capped at
    MAX_BUNDLE_EVENTS) and `max_bytes` of payload (events plus their newlines) each."""
    limit = max(1, min(max_events, MAX_BUNDLE_EVENTS))
    seen: dict[str, int] = {}
    repeats: dict[int, int] = {}
    open_groups: dict[str, tuple[list[int], int]] = {}  # subject -> (members, bytes)
    groups: list[Group] = []
    for index, event in enumerate(batch):
        first = seen.setdefault(event.id, index)
        if first != index:
            repeats[index] = first
            continue
        members, size = open_groups.get(event.subject, ([], 0))
        added = len(event.data) + (1 if members else 0)
        if members and (len(members) >= limit or size + added > max_bytes):
            groups.append(Group(event.subject, tuple(members)))
            members, size, added = [], 0, len(event.data)
        members.append(index)
        open_groups[event.subject] = (members, size + added)
    groups.extend(Group(subject, tuple(members)) for subject, (members, _) in open_groups.items() if members)
    return BundlePlan(tuple(sorted(groups, key=lambda g: g.members[0])), repeats)


def answer_fates(count: int, fates: dict[int, Fate], repeats: dict[int, int]) -> list[Fate]:
    """Every position's fate, in request order: its own, or for a repeat its first occurrence's (a
    duplicate once that one is stored)."""
    out = []
    for index in range(count):
        if index in repeats:
            first = fates[repeats[index]]
            out.append(Fate.DUPLICATE if first.stored else first)
        else:
            out.append(fates[index])
    return out
