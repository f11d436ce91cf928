"""Moving a Webhook's backlog aside: its oldest undelivered events become its dead letters.

The operator's backlog loop (operator/loops/backlog.py, decisions in operator/rules/backlog.py) calls
these so that one stuck Webhook cannot fill HOOKLINE_EVENTS for everyone. Each event is fetched
through the Webhook's own consumer, stored as a dead letter with reason ``backlog_limit`` (same
record, same ``Nats-Msg-Id`` as any dead letter of that event and sequence, so a repeat is stored
once), and only then acknowledged: under interest retention the stream drops it once no other
consumer wants it. A dead letter NATS does not store (the dead-letter stream or JetStream full)
stops the move and the event is handed back (NAK), never dropped. `hookline redrive` puts the
records back on the Webhook's redrive subject like any other dead letter.

A consumer paused by a 410 Gone or the circuit breaker hands nothing out; it is resumed for the
move and paused again after (its stop record, in the consumer's metadata, stays: its senders keep
honouring it in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from hookline.sender.bus.deadletter import DeadLetter, publish_dead_letter
from hookline.sender.bus.layout import DEAD_LETTER_STREAM, STREAM, ensure_dead_letter_stream
from hookline.sender.bus.publish import MSG_ID_HEADER
from hookline.sender.bus.stoprecord import PAUSED_FOREVER
from hookline.sender.model.bundles import BundleError, bundle_size, unpack
from hookline.sender.model.outcomes import DeadLetterReason

# The server answers a consumer list in pages of this many.
CONSUMER_PAGE = 256
FETCH_BATCH = 256
FETCH_WAIT_SECONDS = 0.5
# Moving stops before the dead-letter stream passes this share of its own byte limit (when it has one).
DEAD_LETTER_ROOM = 0.95


@dataclass(frozen=True)
class MoveResult:
    """How many events were moved; `refused` says why moving stopped early (nothing was dropped)."""

    moved: int
    refused: str | None = None


async def list_consumers(js: JetStreamContext, stream: str = STREAM) -> list[api.ConsumerInfo]:
    """Every consumer of the stream with its state: one request per page of 256."""
    consumers: list[api.ConsumerInfo] = []
    while True:
        page = await js.consumers_info(stream, offset=len(consumers) or None)
        consumers.extend(page)
        if len(page) < CONSUMER_PAGE:
            return consumers


async def dead_letter_room(js: JetStreamContext) -> str | None:
    """Why no dead letter should be written now (its stream near its own byte or message limit),
    or None when there is room. Makes the stream when it is missing."""
    try:
        info = await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        info = await ensure_dead_letter_stream(js)
    limits = (
        (info.config.max_bytes, info.state.bytes, "bytes"),
        (info.config.max_msgs, info.state.messages, "messages"),
    )
    for limit, used, unit in limits:
        if limit is not None and limit > 0 and used >= DEAD_LETTER_ROOM * limit:
            return (
                f"the dead-letter stream {DEAD_LETTER_STREAM} holds {used} of its {limit} {unit}: "
                "redrive or purge dead letters, or raise its limit"
            )
    return None


def backlog_records(msg: Msg, namespace: str, name: str, why: str, now: float) -> list[DeadLetter]:
    """The dead letters of the events of a message moved aside (one, or each event of a bundle)."""
    try:
        size = bundle_size(msg.headers)
        if size is not None:
            return [backlog_record(msg, namespace, name, why, now, data) for data in unpack(msg.data, size)]
    except BundleError:
        pass  # kept whole, as a message this hookline cannot read back
    return [backlog_record(msg, namespace, name, why, now, msg.data)]


def backlog_record(
    msg: Msg, namespace: str, name: str, why: str, now: float, data: bytes | None = None
) -> DeadLetter:
    """The dead letter of an event moved aside (`data`: its bytes, by default the message's): no
    attempt was made for it; `why` says which limit."""
    meta = msg.metadata
    data = msg.data if data is None else data
    try:
        event: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        # Not an event this hookline can read back: keep what identifies it (redrive skips nothing
        # readable, and this record says which message it was).
        msg_id = (msg.headers or {}).get(MSG_ID_HEADER) or f"seq-{meta.sequence.stream}"
        event = {"id": str(msg_id), "unreadable": data[:256].decode("utf-8", "replace")}
    return DeadLetter(
        namespace=namespace,
        name=name,
        event=event,
        reason=DeadLetterReason.BACKLOG_LIMIT,
        attempts=0,
        first_attempt_at=meta.timestamp.timestamp(),
        last_attempt_at=now,
        last_error=f"moved aside: {why}",
        subject=msg.subject,
        source_sequence=meta.sequence.stream,
    )


async def move_aside(
    js: JetStreamContext,
    consumer: str,
    namespace: str,
    name: str,
    *,
    limit: int,
    why: str,
    resume: bool = False,
    max_payload: int | None = None,
    fetch_wait: float = FETCH_WAIT_SECONDS,
    on_moved: Callable[[int], None] | None = None,
) -> MoveResult:
    """Move up to `limit` of the consumer's oldest undelivered events to the Webhook's dead letters.

    Bounded: at most `limit` events, fetched in batches of 256 and stored concurrently per batch.
    Events in flight at a sender (delivered, not acknowledged) stay with it. `on_moved` hears each
    batch as soon as it is acknowledged, so a move cut short (a timeout, a cancel) is still counted.
    """
    refused = await dead_letter_room(js)
    if refused is not None:
        return MoveResult(0, refused)
    sub = await js.pull_subscribe_bind(durable=consumer, stream=STREAM)
    if resume:
        await js.resume_consumer(STREAM, consumer)
    moved = 0
    try:
        while moved < limit and refused is None:
            try:
                msgs = await sub.fetch(min(FETCH_BATCH, limit - moved), timeout=fetch_wait)
            except nats.errors.TimeoutError:
                break
            now, batch_moved = time.time(), 0
            records = [backlog_records(msg, namespace, name, why, now) for msg in msgs]
            stored = iter(
                await asyncio.gather(
                    *(publish_dead_letter(js, r, max_payload=max_payload) for rs in records for r in rs),
                    return_exceptions=True,
                )
            )
            for msg, of_msg in zip(msgs, records, strict=True):
                answers = [next(stored) for _ in of_msg]
                error = next((a for a in answers if isinstance(a, BaseException)), None)
                if error is not None:  # stored again on the next move: a dead letter's id de-duplicates
                    refused = refused or f"NATS did not store a dead letter: {error or type(error).__name__}"
                    await msg.nak()
                else:
                    await msg.ack()
                    moved += len(of_msg)
                    batch_moved += len(of_msg)
            if on_moved is not None and batch_moved:
                on_moved(batch_moved)
            if not msgs:
                break
    finally:
        if resume:
            with contextlib.suppress(Exception):  # senders honour the stop record in the meantime
                await js.pause_consumer(STREAM, consumer, PAUSED_FOREVER)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js._nc.flush()  # the acks are out before the caller reads the consumer again
    if moved == 0 and refused is None:
        refused = await _nothing_handed_out(js, consumer)
    return MoveResult(moved, refused)


async def _nothing_handed_out(js: JetStreamContext, consumer: str) -> str | None:
    """Why a consumer with events waiting handed none out (said, not silent), or None if none wait."""
    info = await js.consumer_info(STREAM, consumer)
    waiting = int(info.num_pending or 0)
    if waiting == 0:
        return None
    return (
        f"the consumer {consumer} handed out none of its {waiting} waiting events (a sender took them "
        f"first, or this NATS user may not pull: with nats.auth the operator's user needs "
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.* to move backlogs)"
    )
