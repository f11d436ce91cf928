"""Paying a recreated consumer's debt: the events between its last floor and its recreation are put back
from the recovery stream (recovery.py) onto the Webhook's own redrive subject, which only its consumer
reads; the ones the recovery window no longer holds are counted as lost.

Each event is republished with a `Nats-Msg-Id` of its own (`~recover.<consumer>.<last>.<sequence>`):
the event's id would be swallowed by the duplicate window when it was published less than the window
ago (every event of a fast deletion is), while this one is stable for one debt, so a replay repeated
after a crash within the window is stored once. The debt's start moves up as its events are stored
and it is removed once paid (floors.RecoveryDebt); a crash repeats at most one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from hookline.sender.bus.floors import RecoveryDebt, forget_debt, read_debt, write_debt
from hookline.sender.bus.layout import REDRIVE_STREAM_SUBJECT, STREAM, ConsumerSpec
from hookline.sender.bus.publish import MSG_ID_HEADER
from hookline.sender.bus.recovery import RECOVERY_STREAM, covers_from
from hookline.sender.model.bundles import BUNDLE_HEADER
from hookline.sender.model.outcomes import LossReason

log = logging.getLogger(__name__)

# Events read and republished per round; the debt's start is written after each.
REPLAY_CHUNK = 256
FETCH_TIMEOUT_SECONDS = 2.0
PUBLISH_TIMEOUT_SECONDS = 10.0
# Sequences past the recovery stream's last one that are looked up in the events stream to tell a
# mirror still catching up (the events stream holds them for it) from sequences never stored.
TAIL_LOOKUPS = 64


@dataclass(frozen=True)
class Replay:
    """What one payment did: events put back, events lost (an upper bound: stream sequences that
    matched no filter of the Webhook count too) and why, and whether the debt is paid."""

    replayed: int = 0
    lost: int = 0
    reason: LossReason = LossReason.WINDOW_PASSED
    paid: bool = False


def redrive_filter(spec: ConsumerSpec) -> str:
    """The Webhook's own redrive subject among its consumer's filters (layout.consumer_spec adds it)."""
    prefix = REDRIVE_STREAM_SUBJECT.removesuffix(">")
    for subject in spec.filter_subjects:
        if subject.startswith(prefix):
            return subject
    raise ValueError(f"consumer {spec.name} has no redrive subject to put recovered events on")


async def pay_debt(js: JetStreamContext, spec: ConsumerSpec) -> Replay | None:
    """Put back what the consumer is owed; None when it owes nothing. Raises on NATS errors (the
    caller tries again later: the debt stays)."""
    debt = await read_debt(js, spec.name)
    if debt is None:
        return None
    last = debt.last
    if last is None:  # made again by a process that stopped before it could write where it started
        last = int((await js.stream_info(STREAM)).state.last_seq or 0)
        await write_debt(js, spec.name, RecoveryDebt(debt.first, last))
    if last < debt.first:
        await forget_debt(js, spec.name)
        return Replay(paid=True)
    try:
        info = await js.stream_info(RECOVERY_STREAM)
    except NotFoundError:
        log.error(
            "consumer %s: there is no %s; its events %d..%d are put back only as far as %s holds them",
            spec.name,
            RECOVERY_STREAM,
            debt.first,
            last,
            STREAM,
        )
        return await _replay(
            js,
            spec,
            debt.first,
            last,
            covered_from=last + 1,
            mirrored=0,
            reason=LossReason.NO_RECOVERY_STREAM,
        )
    state = info.state
    covered_from = max(int(state.first_seq or 0), covers_from(info.config))
    if not state.messages:  # everything it held has expired (or it never held anything)
        covered_from = max(covered_from, int(state.last_seq or 0) + 1)
    mirrored = int(state.last_seq or 0)
    return await _replay(
        js,
        spec,
        debt.first,
        last,
        covered_from=covered_from,
        mirrored=mirrored,
        reason=LossReason.WINDOW_PASSED,
    )


async def _replay(
    js: JetStreamContext,
    spec: ConsumerSpec,
    first: int,
    last: int,
    *,
    covered_from: int,
    mirrored: int,
    reason: LossReason,
) -> Replay:
    """Sequences below `covered_from` are not (any more) in the recovery stream: what the events stream
    still holds of them (for other Webhooks) is put back, the rest counted lost. The others come from
    the recovery stream, as far as it has `mirrored`; beyond, they are waited for while the events
    stream still holds them for the mirror, else counted lost (never stored while nothing read them)."""
    subject = redrive_filter(spec)
    replayed = lost = 0
    if first < covered_from:
        end = min(last, covered_from - 1)
        replayed, _, _ = await _put_back(js, spec, subject, first, end, last, STREAM)
        lost += end - first + 1 - replayed
        first = end + 1
        await write_debt(js, spec.name, RecoveryDebt(first, last))
    end = min(last, mirrored)
    if first <= end:
        count, first, expired = await _put_back(js, spec, subject, first, end, last, RECOVERY_STREAM)
        replayed, lost = replayed + count, lost + expired
    if first <= last:
        if await _on_its_way(js, first, last):
            # The mirror is behind the events stream, which keeps them for it: the rest next time.
            await write_debt(js, spec.name, RecoveryDebt(first, last))
            return Replay(replayed, lost, reason, paid=False)
        lost += last - first + 1
    await forget_debt(js, spec.name)
    return Replay(replayed, lost, reason, paid=True)


async def _on_its_way(js: JetStreamContext, first: int, last: int) -> bool:
    """Whether sequences `first`..`last`, not in the mirror yet, are still in the events stream (which
    keeps every event until its mirror has it). Too many to look up one by one: assume they are."""
    stream_first = int((await js.stream_info(STREAM)).state.first_seq or 0)
    if stream_first > last:
        return False
    start = max(first, stream_first)
    for seq in range(start, min(last, start + TAIL_LOOKUPS - 1) + 1):
        try:
            await js.get_msg(STREAM, seq)
        except NotFoundError:
            continue
        return True
    return last - start + 1 > TAIL_LOOKUPS


async def _window_start(js: JetStreamContext, source: str) -> int:
    return int((await js.stream_info(source)).state.first_seq or 0)


async def _put_back(
    js: JetStreamContext, spec: ConsumerSpec, subject: str, first: int, end: int, last: int, source: str
) -> tuple[int, int, int]:
    """Republish the Webhook's events of sequences `first`..`end` from `source` (the mirror), a chunk
    at a time.
    Returns how many, the first sequence not settled yet, and how many sequences the window lost
    before they could be read (an upper bound: sequences of other Webhooks' events count too)."""
    config = api.ConsumerConfig(
        description=f"hookline: recovering {spec.name}",
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=first,
        ack_policy=api.AckPolicy.NONE,
        filter_subject=spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else None,
        filter_subjects=list(spec.filter_subjects) if len(spec.filter_subjects) > 1 else None,
        inactive_threshold=60.0,
        mem_storage=True,
        num_replicas=1,
    )
    sub = await js.pull_subscribe("", durable=None, stream=source, config=config)
    replayed = expired = 0
    position = first  # every sequence below it is settled (put back, or not the Webhook's)
    through = False
    reader: str | None = None
    try:
        info = await sub.consumer_info()
        reader, remaining = info.name, int(info.num_pending or 0)
        while not through:
            window_start = await _window_start(js, source)
            if window_start > position:  # gone from the window before they were read
                expired += min(end + 1, window_start) - position
                position = window_start
            if remaining <= 0 or position > end:
                through = True
                break
            try:
                msgs = await sub.fetch(min(REPLAY_CHUNK, remaining), timeout=FETCH_TIMEOUT_SECONDS)
            except TimeoutError:
                break
            wanted: list[tuple[int, bytes, dict[str, str]]] = []
            for msg in msgs:
                seq = int(msg.metadata.sequence.stream)
                remaining = int(msg.metadata.num_pending or 0)
                if seq > end:
                    remaining = 0
                    break
                bundled = (msg.headers or {}).get(BUNDLE_HEADER)  # a bundle stays one (model/bundles.py)
                wanted.append((seq, msg.data, {BUNDLE_HEADER: bundled} if bundled else {}))
            await asyncio.gather(
                *(
                    js.publish(
                        subject,
                        data,
                        stream=STREAM,
                        timeout=PUBLISH_TIMEOUT_SECONDS,
                        headers={MSG_ID_HEADER: f"~recover.{spec.name}.{last}.{seq}", **more},
                    )
                    for seq, data, more in wanted
                )
            )
            if wanted:
                replayed += len(wanted)
                position = max(position, wanted[-1][0] + 1)
                await write_debt(js, spec.name, RecoveryDebt(position, last))
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            await sub.unsubscribe()
        if reader is not None:  # the server drops it after inactive_threshold anyway
            with contextlib.suppress(NatsError, TimeoutError):
                await js.delete_consumer(source, reader)
    return replayed, end + 1 if through else position, expired
