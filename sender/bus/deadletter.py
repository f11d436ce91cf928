"""Dead letters: events a Webhook could not deliver, kept with the reason so someone can act on them.

A record is JSON in the stream `HOOKLINE_DEAD_LETTERS` on `hookline.dead.<namespace>.<name>` (file
storage, 14 days). It is published with a `Nats-Msg-Id` derived from the Webhook, the event id and
the event's sequence in `HOOKLINE_EVENTS`, so a publish retried after a lost ack is stored once,
while the same event failing again after a redrive (a new sequence) is a new record.

A record always fits into one NATS message: when the whole event would not (or cannot be encoded,
e.g. a stream written by an older ingest), the record keeps the reason, the times and the event's
envelope (id, type, time, scope) and says so in `eventTruncated` (original size, why). `hookline
redrive` leaves such records in place: their payload is gone, the record says which event it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from hookline.sender.bus.layout import DEAD_LETTER_STREAM, dead_letter_subject, ensure_dead_letter_stream
from hookline.sender.bus.publish import MSG_ID_HEADER
from hookline.sender.model.outcomes import AttemptOutcome, DeadLetterReason
from hookline.timestamps import parse_rfc3339, rfc3339

__all__ = [
    "DEAD_LETTER_STREAM",
    "DeadLetter",
    "DeadLetterError",
    "StoredDeadLetter",
    "count_dead_letters",
    "dead_letter_subject",
    "delete_dead_letter",
    "ensure_dead_letter_stream",
    "iter_dead_letters",
    "publish_dead_letter",
]

log = logging.getLogger(__name__)

SEQUENCE_NOT_FOUND = 10043
MAX_LAST_ERROR_CHARS = 1000
# Room in the NATS message for the Nats-Msg-Id header of a record.
HEADER_ROOM_BYTES = 1024
_ENVELOPE_KEYS = (
    "id",
    "type",
    "timestamp",
    "time",
    "database",
    "collection",
    "profile",
    "subprofile",
)  # JetStream error code when deleting a message that is not there
FETCH_BATCH = 256
FETCH_TIMEOUT_SECONDS = 5.0


class DeadLetterError(ValueError):
    """A stored record that is not a dead letter; the message names the field."""


def _parse_time(value: Any, field_name: str) -> float:
    if not isinstance(value, str):
        raise DeadLetterError(f"dead letter field {field_name} must be an RFC 3339 time string")
    try:
        return parse_rfc3339(value).timestamp()
    except ValueError as exc:
        raise DeadLetterError(f"dead letter field {field_name}: {exc}") from None


@dataclass(frozen=True)
class DeadLetter:
    """One undeliverable event of one Webhook. Times are Unix seconds; `event` is the payload as ingested."""

    namespace: str
    name: str
    event: dict[str, Any]
    reason: DeadLetterReason
    attempts: int
    first_attempt_at: float
    last_attempt_at: float
    last_status: int | None = None
    last_error: str | None = None
    subject: str | None = None  # the event's subject in HOOKLINE_EVENTS
    source_sequence: int | None = None  # the event's sequence in HOOKLINE_EVENTS
    truncated: dict[str, Any] | None = None  # set on records read back whose event was cut short

    @classmethod
    def from_attempts(
        cls,
        *,
        namespace: str,
        name: str,
        event: Mapping[str, Any],
        reason: DeadLetterReason,
        last_outcome: AttemptOutcome,
        attempts: int,
        first_attempt_at: float,
        last_attempt_at: float,
        subject: str | None = None,
        source_sequence: int | None = None,
    ) -> DeadLetter:
        """The record for an event the retry policy gave up on, from its last classified attempt."""
        return cls(
            namespace=namespace,
            name=name,
            event=dict(event),
            reason=reason,
            attempts=attempts,
            first_attempt_at=first_attempt_at,
            last_attempt_at=last_attempt_at,
            last_status=last_outcome.status,
            last_error=last_outcome.detail or None,
            subject=subject,
            source_sequence=source_sequence,
        )

    @property
    def event_id(self) -> str:
        return str(self.event.get("id", ""))

    @property
    def subject_in_dead_letters(self) -> str:
        return dead_letter_subject(self.namespace, self.name)

    @property
    def msg_id(self) -> str:
        """Same record, same id (retried publish); a later failure of a redriven copy gets a new one."""
        occurrence = (
            self.source_sequence if self.source_sequence is not None else f"{self.first_attempt_at:.3f}"
        )
        return f"dl:{self.namespace}/{self.name}:{self.event_id}:{occurrence}"

    def to_json(self) -> dict[str, Any]:
        return {
            "webhook": {"namespace": self.namespace, "name": self.name},
            "eventId": self.event_id,
            "reason": str(self.reason),
            "lastStatusCode": self.last_status,
            "lastError": _cap(self.last_error),
            "attempts": self.attempts,
            "firstAttemptAt": rfc3339(self.first_attempt_at, milliseconds=True),
            "lastAttemptAt": rfc3339(self.last_attempt_at, milliseconds=True),
            "subject": self.subject,
            "sourceSequence": self.source_sequence,
            "event": self.event,
        }

    def to_bytes(self, max_bytes: int | None = None) -> bytes:
        """The record as JSON; at most `max_bytes` long (the event summarised when it does not fit)."""
        doc = self.to_json()
        why = ""
        original: int | None = None
        try:
            data = _encode(doc)
        except (ValueError, RecursionError) as exc:  # also UnicodeEncodeError (lone surrogates)
            why = f"the event cannot be encoded as JSON ({type(exc).__name__})"
        else:
            if max_bytes is None or len(data) <= max_bytes:
                return data
            original = len(data)
            why = f"the record would be {original} bytes, over the {max_bytes}-byte message limit"
        doc["event"] = {k: _safe(self.event[k]) for k in _ENVELOPE_KEYS if k in self.event}
        doc["eventTruncated"] = {"originalBytes": original, "why": why}
        return _encode(doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> DeadLetter:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DeadLetterError(f"dead letter is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DeadLetterError("dead letter must be a JSON object")
        webhook = doc.get("webhook")
        if not isinstance(webhook, dict) or not all(
            isinstance(webhook.get(k), str) for k in ("namespace", "name")
        ):
            raise DeadLetterError("dead letter field webhook must hold namespace and name strings")
        event = doc.get("event")
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise DeadLetterError("dead letter field event must be an event object with a string id")
        try:
            reason = DeadLetterReason(doc.get("reason"))
        except ValueError:
            allowed = ", ".join(r.value for r in DeadLetterReason)
            raise DeadLetterError(f"dead letter field reason must be one of {allowed}") from None
        attempts = doc.get("attempts")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise DeadLetterError("dead letter field attempts must be a non-negative integer")
        status = doc.get("lastStatusCode")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
            raise DeadLetterError("dead letter field lastStatusCode must be an integer or null")
        sequence = doc.get("sourceSequence")
        if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)):
            raise DeadLetterError("dead letter field sourceSequence must be an integer or null")
        last_error = doc.get("lastError")
        subject = doc.get("subject")
        truncated = doc.get("eventTruncated")
        return cls(
            namespace=webhook["namespace"],
            name=webhook["name"],
            event=event,
            reason=reason,
            attempts=attempts,
            first_attempt_at=_parse_time(doc.get("firstAttemptAt"), "firstAttemptAt"),
            last_attempt_at=_parse_time(doc.get("lastAttemptAt"), "lastAttemptAt"),
            last_status=status,
            last_error=last_error if isinstance(last_error, str) else None,
            subject=subject if isinstance(subject, str) else None,
            source_sequence=sequence,
            truncated=truncated if isinstance(truncated, dict) else None,
        )


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _cap(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_LAST_ERROR_CHARS:
        return text
    return text[:MAX_LAST_ERROR_CHARS] + "..."


def _safe(value: Any) -> Any:
    """An envelope value that encodes whatever it held (ids and names are short strings or numbers)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    text = value if isinstance(value, str) else repr(value)
    return text[:256].encode("utf-8", "replace").decode()


@dataclass(frozen=True)
class StoredDeadLetter:
    """A record as read back, with where it sits in the stream (for deleting it after a redrive)."""

    sequence: int
    stored_at: datetime
    record: DeadLetter


async def publish_dead_letter(
    js: JetStreamContext, record: DeadLetter, *, ack_timeout: float = 5.0, max_payload: int | None = None
) -> api.PubAck:
    """Store a dead letter durably; raises (nats errors, TimeoutError) if NATS did not confirm it.

    The engine acks the event only after this returns, so a failure here means a retry, not a loss.
    `max_payload` is the server's (the record is cut to fit it; default: the connection's).
    """
    limit = max_payload if max_payload is not None else js._nc.max_payload
    return await js.publish(
        record.subject_in_dead_letters,
        record.to_bytes(max_bytes=limit - HEADER_ROOM_BYTES),
        timeout=ack_timeout,
        stream=DEAD_LETTER_STREAM,
        headers={MSG_ID_HEADER: record.msg_id},
    )


def _reader_config(namespace: str, name: str, since: datetime | None) -> api.ConsumerConfig:
    """An ephemeral, unacknowledged reader of one Webhook's dead letters from `since` on."""
    return api.ConsumerConfig(
        filter_subject=dead_letter_subject(namespace, name),
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.BY_START_TIME if since else api.DeliverPolicy.ALL,
        opt_start_time=since.astimezone(UTC) if since else None,
        inactive_threshold=60.0,
        mem_storage=True,
    )


@contextlib.asynccontextmanager
async def _reader(
    js: JetStreamContext, namespace: str, name: str, since: datetime | None
) -> AsyncIterator[tuple[JetStreamContext.PullSubscription, int] | None]:
    """The reader and how many records it will see; None when there is no dead-letter stream at all."""
    try:
        await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        yield None
        return
    sub = await js.pull_subscribe(
        dead_letter_subject(namespace, name),
        durable=None,
        stream=DEAD_LETTER_STREAM,
        config=_reader_config(namespace, name, since),
    )
    consumer: str | None = None
    try:
        info = await sub.consumer_info()
        consumer = info.name
        yield sub, int(info.num_pending or 0)
    finally:
        await sub.unsubscribe()
        if consumer is not None:
            with contextlib.suppress(NatsError):  # the server drops it after inactive_threshold anyway
                await js.delete_consumer(DEAD_LETTER_STREAM, consumer)


async def count_dead_letters(
    js: JetStreamContext, namespace: str, name: str, since: datetime | None = None
) -> int:
    """How many records a Webhook has (stored at or after `since`), without reading them. Without
    `since` it is one stream-info request with a subject filter (no consumer made and removed)."""
    if since is None:
        subject = dead_letter_subject(namespace, name)
        try:
            info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject)
        except NotFoundError:
            return 0
        return int((info.state.subjects or {}).get(subject, 0))
    async with _reader(js, namespace, name, since) as reader:
        return 0 if reader is None else reader[1]


async def iter_dead_letters(
    js: JetStreamContext, namespace: str, name: str, since: datetime | None = None
) -> AsyncIterator[StoredDeadLetter]:
    """A Webhook's dead letters, oldest first, stored at or after `since`; empty if there is no stream.

    Stops at the last record present when reading started; records that do not parse are logged
    and left in place.
    """
    async with _reader(js, namespace, name, since) as reader:
        if reader is None:
            return
        sub, remaining = reader
        while remaining > 0:
            for msg in await sub.fetch(min(FETCH_BATCH, remaining), timeout=FETCH_TIMEOUT_SECONDS):
                meta = msg.metadata
                remaining = min(remaining - 1, int(meta.num_pending or 0))
                try:
                    record = DeadLetter.from_bytes(msg.data)
                except DeadLetterError as exc:
                    log.warning("skipping dead letter at sequence %d: %s", meta.sequence.stream, exc)
                    continue
                yield StoredDeadLetter(meta.sequence.stream, meta.timestamp, record)


async def delete_dead_letter(js: JetStreamContext, sequence: int) -> bool:
    """Remove one record (after it was redriven); False if it was already gone."""
    try:
        return await js.delete_msg(DEAD_LETTER_STREAM, sequence)
    except NotFoundError:
        return False
    except BadRequestError as exc:
        if exc.err_code == SEQUENCE_NOT_FOUND:
            return False
        raise
