"""What ingest answers once it has published a request's events (pure): 202 when the stream stored every
one, else 503 saying, event by event, what the stream holds.

The 503 after publishing is a per-event answer (like WebDAV's 207 Multi-Status, under the status a
producer retries on): `accepted` lists the ids the stream stored (`duplicates` those of them it held
already), `notAccepted` those it did not store, `unknown` those handed to NATS whose confirmation never
came (they may be stored, or be stored shortly after the answer). A producer retries `notAccepted` and
`unknown` with the same ids (the duplicate window stores an id once), or simply the whole request with
the same ids; it must not give the stored ones new ids. Every id of the request is in exactly one of
`accepted`, `notAccepted` and `unknown`, in request order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hookline.sender.bus.publish import Fate

__all__ = ["PublishAnswer", "publish_answer"]


@dataclass(frozen=True)
class PublishAnswer:
    """The HTTP answer to a request whose events were handed to the bus, and its counts for metrics."""

    status: int
    body: dict[str, Any]
    retry_after: int | None
    stored: int  # events newly stored by this request
    duplicates: int  # events the stream held already (same id within the duplicate window)


def publish_answer(
    ids: Sequence[str], fates: Sequence[Fate], problem: str | None, *, retry_after: int
) -> PublishAnswer:
    """202 with every id when all are stored, else 503 with the ids sorted by what the stream holds."""
    if len(ids) != len(fates):
        raise ValueError(f"{len(ids)} ids but {len(fates)} fates")
    accepted = [i for i, fate in zip(ids, fates, strict=True) if fate.stored]
    duplicates = [i for i, fate in zip(ids, fates, strict=True) if fate is Fate.DUPLICATE]
    not_accepted = [i for i, fate in zip(ids, fates, strict=True) if fate.stored is False]
    unknown = [i for i, fate in zip(ids, fates, strict=True) if fate.stored is None]
    stored = len(accepted) - len(duplicates)
    if len(accepted) == len(ids):
        return PublishAnswer(
            202, {"accepted": list(ids), "duplicates": duplicates}, None, stored, len(duplicates)
        )
    cause = f"the event bus is unavailable ({problem or 'it did not confirm every event'})"
    if not accepted and not unknown:
        what = (
            f"none of the {len(ids)} events was stored (notAccepted); retry the same request later "
            "(events with the same id are stored once)"
        )
    else:
        what = (
            f"{len(accepted)} of {len(ids)} events were stored (accepted), {len(not_accepted)} were not "
            f"(notAccepted) and {len(unknown)} may or may not have been (unknown); retry the notAccepted "
            "and unknown events later with the same ids (an id is stored once), never with new ids"
        )
    body: dict[str, Any] = {
        "error": f"{cause}; {what}",
        "accepted": accepted,
        "duplicates": duplicates,
        "notAccepted": not_accepted,
        "unknown": unknown,
    }
    return PublishAnswer(503, body, retry_after, stored, len(duplicates))
