"""The events of a bundle (model/bundles.py) handed to an engine one by one, and the bundle's message
settled once all of them are.

A `BundleMember` stands in for a message of its own: the engine, its ledger, its dead letters and its
batches treat it as one event (`event_key` names it: stream sequence and index). Its ack, term and NAK
settle the member in its `Bundle`; when every member is settled the `BundleBook` executes
`bundles.verdict`: the message is acked, or its progress (events done, when the others are due) is
stored in `HOOKLINE_FAILED_ATTEMPTS` and remembered, then it is NAKed until the earliest is due. A
redelivery skips what is done and sends back unsent what is not due yet. JetStream's unit stays the
message: a crash before the verdict redelivers all of its events that were not done when the progress
was last stored (at-least-once, as for a batch).

Cost per bundle: its ack (one per bundle instead of one per event); one stored write and one purge
per bundle that had to be retried with events done or events on different schedules; one read when
such a bundle comes back to a replica that did not send it back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hookline.sender.bus.failedattempts import FailedAttemptStore
from hookline.sender.bus.outbox import outbox_of
from hookline.sender.bus.replymeta import message_stored_at
from hookline.sender.model.bundles import BundleProgress, unpack, verdict

log = logging.getLogger(__name__)

__all__ = ["Bundle", "BundleBook", "BundleMember", "event_key", "progress_key"]

TOUCH_EVERY_SECONDS = 1.0  # progress reports of one bundle's members go out at most this often


class BundleMember:
    """One event of a bundle, as the engine sees a message: its own `data`, the bundle's subject and
    reply metadata, and ack/NAK/term/in-progress that settle it within the bundle."""

    __slots__ = ("bundle", "data", "index")

    def __init__(self, bundle: Bundle, index: int, data: bytes) -> None:
        self.bundle = bundle
        self.index = index
        self.data = data

    @property
    def key(self) -> str:
        """`<sequence>-<index>`; made when asked for: a delivery that nothing failed never asks."""
        return f"{self.bundle.sequence}-{self.index}"

    @property
    def subject(self) -> str:
        return self.bundle.msg.subject

    @property
    def headers(self) -> dict[str, str] | None:
        return self.bundle.msg.headers

    @property
    def metadata(self) -> Any:
        return self.bundle.msg.metadata

    async def ack(self) -> None:
        await self.bundle.settle(self.index, None)

    async def term(self) -> None:  # dropped (undecodable): as done as a delivered one
        await self.bundle.settle(self.index, None)

    async def nak(self, delay: float | None = None) -> None:
        await self.bundle.settle(self.index, delay or 0.0)

    async def in_progress(self) -> None:
        await self.bundle.touch()

    def __repr__(self) -> str:
        return f"<BundleMember {self.key} of {self.bundle.size}>"


def event_key(msg: Msg | BundleMember) -> int | str:
    """What names one event in the engine's books: a message's stream sequence, a member's
    `<sequence>-<index>` (also the subject token of its failed-attempts record)."""
    return msg.key if type(msg) is BundleMember else msg.metadata.sequence.stream


class Bundle:
    """The settlement state of one delivery of a bundle's message."""

    __slots__ = ("book", "done", "due", "finished", "msg", "sequence", "size", "stored_at", "touched")

    def __init__(self, book: BundleBook, msg: Msg, size: int, done: frozenset[int] = frozenset()) -> None:
        self.book = book
        self.msg = msg
        self.size = size
        self.sequence: int = msg.metadata.sequence.stream
        self.stored_at = message_stored_at(msg)  # read once for all members (bus.stored_at)
        self.done = set(done)
        self.due: dict[int, float] = {}
        self.finished = False
        self.touched = 0.0

    async def settle(self, index: int, delay: float | None) -> None:
        """Member `index` is done (`delay` None) or to be tried again in `delay` seconds."""
        if self.finished or index in self.done or index in self.due:
            return
        if delay is None:
            self.done.add(index)
        else:
            self.due[index] = time.time() + delay
        if len(self.done) + len(self.due) == self.size:
            self.finished = True
            await self.book.finish(self)

    async def touch(self) -> None:
        now = time.monotonic()
        if not self.finished and now - self.touched >= TOUCH_EVERY_SECONDS:
            self.touched = now
            await self.msg.in_progress()


class BundleBook:
    """One engine's bundles: their members, their verdicts, and the progress of those sent back
    (remembered here, stored in NATS for a crash or another replica; `store` None: memory only)."""

    def __init__(
        self, nc: NATS, store: FailedAttemptStore | None, *, label: str, limit: int = 10_000
    ) -> None:
        self.nc = nc
        self.store = store
        self.label = label
        self.limit = limit
        self.sent_back: dict[int, tuple[BundleProgress, int]] = {}  # sequence -> (progress, delivered)

    def first(self, msg: Msg, size: int) -> list[BundleMember]:
        """The members of a bundle delivered for the first time (nothing to skip). BundleError when
        the payload does not hold `size` events."""
        return self._members(Bundle(self, msg, size), unpack(msg.data, size))

    async def again(self, msg: Msg, size: int) -> list[BundleMember]:
        """The members to send of a bundle delivered again: those done before are skipped, those not
        due yet settled again unsent. Raises BusUnavailable when its progress cannot be read now."""
        events = unpack(msg.data, size)
        progress = await self._progress(msg)
        bundle = Bundle(self, msg, size, progress.done)
        members = self._members(bundle, events)
        now = time.time()
        send = []
        for member in members:
            wait = progress.due.get(member.index, now) - now
            if wait > TOUCH_EVERY_SECONDS:
                await bundle.settle(member.index, wait)
            else:
                send.append(member)
        if not send and not bundle.finished:  # every event was done: only the ack was missing
            bundle.finished = True
            await self.finish(bundle)
        return send

    @staticmethod
    def _members(bundle: Bundle, events: list[bytes]) -> list[BundleMember]:
        done = bundle.done
        return [BundleMember(bundle, i, data) for i, data in enumerate(events) if i not in done]

    async def _progress(self, msg: Msg) -> BundleProgress:
        meta = msg.metadata
        sequence = meta.sequence.stream
        held = self.sent_back.get(sequence)
        if held is not None and held[1] == meta.num_delivered - 1:
            return held[0]
        if self.store is None:
            return BundleProgress()
        raw = await self.store.read_raw(progress_key(sequence))
        if raw is None:
            return BundleProgress()
        try:
            return BundleProgress.from_bytes(raw)
        except ValueError as exc:
            log.warning("%s: bundle at %d: %s; all of it is sent", self.label, sequence, exc)
            return BundleProgress()

    async def finish(self, bundle: Bundle) -> None:
        """Every member is settled: ack the message, or store its progress and NAK it."""
        msg, sequence = bundle.msg, bundle.sequence
        settled = verdict(bundle.size, frozenset(bundle.done), bundle.due, time.time())
        if settled.ack:
            await outbox_of(self.nc).ack([msg])
            if self.sent_back.pop(sequence, None) is not None and self.store is not None:
                with contextlib.suppress(Exception):  # a record left behind expires with the events
                    await self.store.forget(progress_key(sequence))
            return
        if settled.progress is not None:
            self._remember(sequence, settled.progress, msg.metadata.num_delivered)
            if self.store is not None:
                try:
                    await self.store.write_raw(progress_key(sequence), settled.progress.to_bytes())
                except Exception as exc:  # kept in memory: only a crash or a handover can forget it
                    log.warning("%s: progress of bundle %d not stored (%s)", self.label, sequence, exc)
        await msg.nak(delay=settled.delay or None)

    def _remember(self, sequence: int, progress: BundleProgress, delivered: int) -> None:
        self.sent_back.pop(sequence, None)
        self.sent_back[sequence] = (progress, delivered)
        while len(self.sent_back) > self.limit:
            del self.sent_back[next(iter(self.sent_back))]


def progress_key(sequence: int) -> str:
    """The subject token of a bundle's progress record in HOOKLINE_FAILED_ATTEMPTS."""
    return f"{sequence}-bundle"
