"""Each event's failed attempts as receivers answered them, for one engine: the attempt number that
`settlement.settle`, the retry schedule and the dead letters use. Never JetStream's delivery count:
that also counts an event handed out again after a sender crash, or after a stop, which no receiver
ever answered.

The count lives in NATS (bus/failedattempts.py), so it survives a crash and is shared by a Webhook's
replicas; the engine remembers what it wrote. Per event:

- delivered for the first time (num_delivered 1): no failure yet, nothing is read;
- back right after this engine held it (num_delivered one more than when it last held it: nobody
  else had it in between): the count it remembers, nothing is read;
- otherwise (after a crash, from another replica, a remembered count given up to bound memory):
  the count is read once; when NATS cannot say, the event is handed back unsent (`BusUnavailable`);
- a failed attempt: the new count is written (confirmed) before the event is retried or
  dead-lettered, so a crash right after it still counts it;
- delivered or dead-lettered: the record is purged (only when there is one).

Cost: one stored write per failed attempt per event, one purge per event that had failed once it is
settled; reads only after a crash or a handover. A write NATS refuses is logged and remembered here:
only a crash before the next write can then forget that one failure (one more attempt is made).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from nats.aio.msg import Msg

from hookline.sender.bus.bundles import BundleMember, event_key
from hookline.sender.bus.failedattempts import FailedAttempts, FailedAttemptStore
from hookline.sender.model.outcomes import AttemptOutcome

log = logging.getLogger(__name__)

__all__ = ["ASK_STORE", "AttemptLedger", "Held", "recall"]


class _Ask(enum.Enum):
    STORE = "ask the store"


ASK_STORE: Final = _Ask.STORE  # only the stored record can say


@dataclass(frozen=True, slots=True)
class Held:
    """What the engine knows of an event that failed before: its record and the delivery count it
    had when the engine last held it."""

    record: FailedAttempts
    delivered: int


def recall(held: Held | None, num_delivered: int) -> FailedAttempts | Literal[_Ask.STORE] | None:
    """What an event delivered for the `num_delivered`-th time failed so far, from memory (pure):
    None when nothing failed yet, the record when this engine held it last, ASK_STORE when only the
    store can say (after a crash, another replica, or a memory given up)."""
    if num_delivered <= 1:
        return None
    if held is not None and held.delivered == num_delivered - 1:
        return held.record
    return ASK_STORE


class AttemptLedger:
    """One engine's failed-attempt counts, by event (bus.event_key); `store` None: in memory only."""

    def __init__(self, store: FailedAttemptStore | None, *, label: str, limit: int) -> None:
        self.store = store
        self.label = label
        self.limit = limit  # events remembered at most (the oldest are read again when they return)
        self.held: dict[int | str, Held] = {}

    async def arrived(self, msg: Msg | BundleMember) -> FailedAttempts | None:
        """The failed attempts of an event the bus just handed out (None: none). Raises BusUnavailable
        when they cannot be known now: the caller hands the event back unsent."""
        if self.nothing_failed(msg):
            return None
        delivered = msg.metadata.num_delivered
        sequence = event_key(msg)
        recalled = recall(self.held.get(sequence), delivered)
        if recalled is ASK_STORE:
            known = None if self.store is None else await self.store.read(sequence)
        else:
            known = recalled
        if known is None:
            self.held.pop(sequence, None)
        else:
            self._remember(sequence, Held(known, delivered))
        return known

    def nothing_failed(self, msg: Msg | BundleMember) -> bool:
        """True when `arrived` answers None without asking: the event is handed out for the first time
        and no failure is held (the common case; callers on the hot path skip the coroutine)."""
        return msg.metadata.num_delivered <= 1 and not self.held

    def failed_before(self, msg: Msg | BundleMember) -> int:
        """How many attempts of this event (as the engine holds it now) failed before this one."""
        if not self.held:
            return 0
        held = self.held.get(event_key(msg))
        return 0 if held is None else held.record.count

    async def failed(self, msgs: Sequence[Msg | BundleMember], outcome: AttemptOutcome, at: float) -> None:
        """One more failed attempt for each message, written before the caller retries or dead-letters
        them (all at once: one round trip for a batch)."""
        writes = []
        for msg in msgs:
            sequence = event_key(msg)
            held = self.held.get(sequence)
            record = FailedAttempts.first(outcome, at) if held is None else held.record.after(outcome, at)
            self._remember(sequence, Held(record, msg.metadata.num_delivered))
            if self.store is not None:
                writes.append(self.store.write(sequence, record))
        if not writes:
            return
        results = await asyncio.gather(*writes, return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        if refused:
            log.warning(
                "%s: %d of %d failed-attempt counts not stored (%s); kept in memory",
                self.label,
                len(refused),
                len(results),
                refused[0],
            )

    async def settled(self, msgs: Sequence[Msg | BundleMember]) -> None:
        """The events were delivered or dead-lettered: purge the records of those that had one."""
        if not self.held:
            return
        purges = []
        for msg in msgs:
            sequence = event_key(msg)
            if self.held.pop(sequence, None) is not None and self.store is not None:
                purges.append(self.store.forget(sequence))
        if purges:
            results = await asyncio.gather(*purges, return_exceptions=True)
            for result in results:  # a record left behind expires with the events' retention
                if isinstance(result, BaseException):
                    log.debug("%s: failed-attempt record not purged: %s", self.label, result)

    def _remember(self, sequence: int | str, held: Held) -> None:
        self.held.pop(sequence, None)  # to the end: the oldest come first
        self.held[sequence] = held
        while len(self.held) > self.limit:
            del self.held[next(iter(self.held))]
