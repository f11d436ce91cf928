"""RFC 3339 times as hookline writes and reads them: UTC, ``Z``, seconds or milliseconds. Pure.

Kubernetes status fields (conditions' lastTransitionTime, status.verification.nextCheck) take whole
seconds; dead letters, attempt records and the stop record on a consumer keep what their readers
need. One writer and one reader, so a time written by the sender parses in the operator and the CLI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def rfc3339(when: float | datetime | None = None, *, milliseconds: bool = False) -> str:
    """``when`` (Unix seconds or an aware datetime; default now) as ``2026-12-03T21:45:16Z``."""
    if when is None:
        moment = datetime.now(UTC)
    elif isinstance(when, datetime):
        moment = when.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace("+00:00", "Z")


def rfc3339_in(seconds: float, now: datetime | None = None) -> str:
    """The time ``seconds`` from now (or from ``now``), in whole seconds."""
    return rfc3339((now or datetime.now(UTC)) + timedelta(seconds=seconds))


def parse_rfc3339(text: str) -> datetime:
    """An aware datetime from ``text``; ValueError says whether the form or the time zone is missing."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-06-01T12:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or an offset, e.g. 2026-06-01T12:00:00Z")
    return parsed
