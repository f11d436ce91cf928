"""Failed attempts per event: how many attempts receivers actually answered with a failure, kept in
NATS, so that an event JetStream hands out again after a sender crash is not taken for a failed one
(JetStream's delivery count counts both).

Stream ``HOOKLINE_FAILED_ATTEMPTS`` on ``hookline.failed.<consumer>.<stream sequence>``: one small
message per event that failed at least once and is not settled yet (one per subject), its JSON the
count and the last answer (`FailedAttempts`). A sender writes it (a stored publish) before it acts on
a failed attempt, reads it only when an event comes back in a way it did not see coming (after a
crash, from another replica), and purges it once the event is delivered or dead-lettered. No event
outlives the events stream's retention, so neither does its record (`max_age`, the same). What is
stored at once is bounded by the events waiting for a retry (at most `MAX_ACK_PENDING` per Webhook).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import nats
from nats.js import JetStreamContext, api
from nats.js.errors import NoStreamResponseError, NotFoundError

from hookline.sender.bus.connection import BusUnavailable
from hookline.sender.bus.layout import DEFAULT_RETENTION_SECONDS, STREAM
from hookline.sender.bus.replicas import DEFAULT_REPLICAS, check_replicas, ensure_direct, ensure_replicas
from hookline.sender.model.outcomes import AttemptKind, AttemptOutcome

__all__ = [
    "FAILED_ATTEMPTS_STREAM",
    "FailedAttemptStore",
    "FailedAttempts",
    "ensure_failed_attempts_stream",
    "failed_attempts_subject",
]

log = logging.getLogger(__name__)

FAILED_ATTEMPTS_STREAM = "HOOKLINE_FAILED_ATTEMPTS"
FAILED_ATTEMPTS_PREFIX = "hookline.failed"
MAX_DETAIL_CHARS = 300


def failed_attempts_subject(consumer: str, key: int | str) -> str:
    """The record's subject: the Webhook's consumer (a durable name: no dot) and the event's key (its
    stream sequence, or `<sequence>-<index>` for an event of a bundle, bus/bundles.py)."""
    token = str(int(key)) if isinstance(key, int) else key
    if not token or not all(c.isdigit() or c.isalpha() or c == "-" for c in token):
        raise ValueError(f"not an event key: {key!r}")
    return f"{FAILED_ATTEMPTS_PREFIX}.{consumer}.{token}"


@dataclass(frozen=True, slots=True)
class FailedAttempts:
    """An event's failed attempts so far (`count` >= 1) and the last one's answer (pure)."""

    count: int
    kind: AttemptKind
    status: int | None
    detail: str
    at: float  # Unix seconds of the last failed attempt

    @classmethod
    def first(cls, outcome: AttemptOutcome, at: float) -> FailedAttempts:
        return cls(1, outcome.kind, outcome.status, outcome.detail[:MAX_DETAIL_CHARS], at)

    def after(self, outcome: AttemptOutcome, at: float) -> FailedAttempts:
        """The record once one more attempt failed with `outcome`."""
        detail = outcome.detail[:MAX_DETAIL_CHARS]
        return FailedAttempts(self.count + 1, outcome.kind, outcome.status, detail, at)

    @property
    def last_outcome(self) -> AttemptOutcome:
        return AttemptOutcome(self.kind, self.status, self.detail)

    def to_bytes(self) -> bytes:
        doc = {
            "count": self.count,
            "kind": str(self.kind),
            "status": self.status,
            "detail": self.detail,
            "at": round(self.at, 3),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> FailedAttempts:
        """The record; ValueError when it is not one (the caller treats that as no record)."""
        try:
            doc: Any = json.loads(data)
            count = int(doc["count"])
            status = doc.get("status")
            record = cls(
                count=count,
                kind=AttemptKind(doc["kind"]),
                status=None if status is None else int(status),
                detail=str(doc.get("detail") or ""),
                at=float(doc["at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a failed-attempts record: {exc}") from None
        if count < 1:
            raise ValueError("a failed-attempts record counts at least one attempt")
        return record


def failed_attempts_stream_config(
    max_age_seconds: float, replicas: int = DEFAULT_REPLICAS
) -> api.StreamConfig:
    return api.StreamConfig(
        name=FAILED_ATTEMPTS_STREAM,
        subjects=[f"{FAILED_ATTEMPTS_PREFIX}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_msgs_per_subject=1,  # the newest count of an event replaces the one before
        max_age=float(max_age_seconds),
        # Direct gets name the record's subject: a sender's NATS user may read its own records only.
        allow_direct=True,
        num_replicas=check_replicas(replicas),
    )


async def ensure_failed_attempts_stream(
    js: JetStreamContext,
    max_age_seconds: float | None = None,
    *,
    replicas: int = DEFAULT_REPLICAS,
    update_existing: bool = False,
) -> api.StreamInfo:
    """The stream, created when absent with the events stream's retention (or `max_age_seconds`).
    Ingest passes `update_existing=True`: its retention and `replicas` are brought to an existing one."""
    if max_age_seconds is None:
        try:
            max_age_seconds = float((await js.stream_info(STREAM)).config.max_age or 0) or None
        except NotFoundError:
            max_age_seconds = None
    max_age = float(max_age_seconds or DEFAULT_RETENTION_SECONDS)
    try:
        info = await js.stream_info(FAILED_ATTEMPTS_STREAM)
    except NotFoundError:
        return await js.add_stream(failed_attempts_stream_config(max_age, replicas))
    if not update_existing:
        return info
    if info.config.max_age != max_age:
        info = await js.update_stream(info.config.evolve(max_age=max_age))
    if await ensure_replicas(js, FAILED_ATTEMPTS_STREAM, replicas):
        info = await js.stream_info(FAILED_ATTEMPTS_STREAM)
    if await ensure_direct(js, FAILED_ATTEMPTS_STREAM):
        info = await js.stream_info(FAILED_ATTEMPTS_STREAM)
    return info


class FailedAttemptStore:
    """The failed-attempt records of one Webhook's consumer, by the events' keys (bundles.event_key)."""

    def __init__(self, js: JetStreamContext, consumer: str) -> None:
        self.js = js
        self.consumer = consumer
        self._direct: bool | None = None  # the stream answers direct gets (asked once)

    async def _use_direct(self) -> bool:
        if self._direct is None:
            try:
                info = await self.js.stream_info(FAILED_ATTEMPTS_STREAM)
            except NotFoundError:
                return False
            self._direct = bool(info.config.allow_direct)
        return self._direct

    async def read(self, key: int | str) -> FailedAttempts | None:
        """The event's record; None when it has none. BusUnavailable when NATS cannot say now: the
        caller must not guess (a guess too high dead-letters early, too low sends more than maxAttempts)."""
        raw = await self.read_raw(key)
        if raw is None:
            return None
        try:
            return FailedAttempts.from_bytes(raw)
        except ValueError as exc:
            log.warning("%s: %s; counted as none", failed_attempts_subject(self.consumer, key), exc)
            return None

    async def read_raw(self, key: int | str) -> bytes | None:
        """The bytes stored under `key` (a record, or a bundle's progress); None when there are none."""
        subject = failed_attempts_subject(self.consumer, key)
        try:
            raw = await self.js.get_last_msg(FAILED_ATTEMPTS_STREAM, subject, direct=await self._use_direct())
        except NotFoundError:  # no record, or no stream yet: nothing failed
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise BusUnavailable(f"failed attempts of {subject} not readable: {why}") from exc
        return raw.data or b""

    async def write(self, key: int | str, record: FailedAttempts) -> None:
        """Store the record (confirmed by the server); the stream is made when it is missing."""
        await self.write_raw(key, record.to_bytes())

    async def write_raw(self, key: int | str, data: bytes) -> None:
        subject = failed_attempts_subject(self.consumer, key)
        try:
            await self.js.publish(subject, data, stream=FAILED_ATTEMPTS_STREAM)
        except NoStreamResponseError:
            await ensure_failed_attempts_stream(self.js)
            await self.js.publish(subject, data, stream=FAILED_ATTEMPTS_STREAM)

    async def forget(self, key: int | str) -> None:
        """Purge the event's record (no delete marker is left behind)."""
        try:
            await self.js.purge_stream(
                FAILED_ATTEMPTS_STREAM, subject=failed_attempts_subject(self.consumer, key)
            )
        except NotFoundError:
            return
