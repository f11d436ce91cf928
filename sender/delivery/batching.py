"""The batch assembler of one engine (`spec.delivery.batch`): one task groups the feed's messages into
batches for the workers, and remembers the events of a failed batch so they are sent again together.

A batch is handed over when it holds maxEvents events, when the next event would take it past
maxBytes, or maxWaitMilliseconds after its first event arrived (once the events already received are
in). The events of a failed batch that are retried are remembered as a group; when JetStream hands
them back (together, after the same delay) they are held until all are back (at most
max(maxWait, `EngineSettings.regroup_wait_seconds`)), then sent as that batch again, with the same
batch id. After a restart the group is forgotten and the events are batched afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg

from hookline.api import Batch
from hookline.sender import bus
from hookline.sender.delivery.ratelimit import BackoffGate
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.events import Event
from hookline.sender.model.request import Delivery
from hookline.sender.model.wire import batch_size

log = logging.getLogger(__name__)

__all__ = ["Admit", "AdmitAtOnce", "BatchAssembler", "Group", "Item"]


@dataclass(slots=True)
class Item:
    """One event a request carries: its message, the event, and (in a batch) its rendered part."""

    msg: Msg
    event: Event
    part: bytes = b""


@dataclass(eq=False)
class Group:
    """The retried events of a failed batch (stream sequences, in the batch's order)."""

    members: tuple[int | str, ...]
    expires: float  # loop time after which members that never came back are forgotten


# The event of a message for a batch, or None when the engine dealt with it (undecodable, or only its
# dead letter left to store) and released it.
Admit = Callable[[Msg, bus.MessageFeed], Awaitable[Event | None]]
# The event of a message when it can be had without waiting for anything (None: ask `Admit`).
AdmitAtOnce = Callable[[Msg], Event | None]


class BatchAssembler:
    """Fills `ready` with batches (lists of `Item`) from the feed; a None per worker on stop."""

    def __init__(
        self,
        batch: Batch,
        delivery: Delivery,
        gate: BackoffGate,
        settings: EngineSettings,
        *,
        workers: int,
        ack_wait: float,
        admit: Admit,
        admit_at_once: AdmitAtOnce,
        label: str,
    ) -> None:
        self.batch = batch
        self.delivery = delivery
        self.gate = gate
        self.settings = settings
        self.workers = workers
        self.ack_wait = ack_wait
        self.admit = admit
        self.admit_at_once = admit_at_once
        self.label = label
        self.ready: asyncio.Queue[list[Item] | None] = asyncio.Queue()  # assembled batches
        self.assembling: list[Item] = []  # the batch being filled
        self.regroup: dict[int | str, Group] = {}  # event key -> the failed batch it belongs to

    async def run(self, feed: bus.MessageFeed) -> None:
        """Assemble until the feed's queue yields None; then everything held goes back to the stream."""
        loop = asyncio.get_running_loop()
        queue = feed.queue
        fmt = self.delivery.format
        max_events = self.batch.max_events
        limit = self.batch.byte_limit
        wait = self.batch.max_wait_milliseconds / 1000
        regroup_wait = max(wait, self.settings.regroup_wait_seconds)
        items: list[Item] = []
        self.assembling = items
        size = 0  # bytes of the parts in `items`
        deadline = math.inf
        held: dict[Group, tuple[dict[int | str, tuple[Msg, Event]], float]] = {}

        def hand_over() -> None:
            nonlocal items, size, deadline
            if items:
                self.ready.put_nowait(items)
            items, size, deadline = [], 0, math.inf
            self.assembling = items

        def hand_over_group(group: Group) -> None:
            members, _ = held.pop(group)
            for sequence in group.members:
                if self.regroup.get(sequence) is group:
                    del self.regroup[sequence]
            order = [members[s] for s in group.members if s in members]
            self.ready.put_nowait(
                [Item(m, e, self.delivery.part(e, index)) for index, (m, e) in enumerate(order)]
            )

        while True:
            if not queue.empty():  # the common case under load: no timer needed
                msg = queue.get_nowait()
            else:
                wake = min(deadline, min((d for _, d in held.values()), default=math.inf))
                try:
                    if wake == math.inf:
                        msg = await queue.get()
                    else:
                        async with asyncio.timeout_at(wake):
                            msg = await queue.get()
                except TimeoutError:
                    msg = False  # a deadline passed
            if msg is None:  # stopping: everything held goes back to the stream
                back = [i.msg for i in items] + [m for ms, _ in held.values() for m, _ in ms.values()]
                for m in back:
                    with contextlib.suppress(Exception):
                        await m.nak()
                feed.release(len(back))
                for _ in range(self.workers):
                    self.ready.put_nowait(None)
                return
            if msg is not False:
                try:
                    event = self.admit_at_once(msg)
                    if event is None:
                        event = await self.admit(msg, feed)
                except Exception:  # never let one message stop the assembler
                    log.exception("%s: unexpected error taking an event; it will be retried", self.label)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=self.settings.redeliver_after_failure_seconds)
                    feed.release()
                    event = None
                if event is not None:
                    group = None
                    if self.regroup:  # the event's key only when a failed batch waits to be regrouped
                        sequence = bus.event_key(msg)
                        group = self.regroup.get(sequence)
                    if group is not None:
                        members, until = held.get(group) or ({}, loop.time() + regroup_wait)
                        members[sequence] = (msg, event)
                        held[group] = (members, until)
                        if len(members) == len(group.members):
                            hand_over_group(group)
                    else:
                        part = self.delivery.part(event, len(items))
                        if items and batch_size(size + len(part), len(items) + 1, fmt) > limit:
                            hand_over()
                            part = self.delivery.part(event, 0)
                        if not items:
                            deadline = loop.time() + wait
                        items.append(Item(msg, event, part))
                        size += len(part)
                        if len(items) >= max_events:
                            hand_over()
            now = loop.time()
            # At the deadline, first take in what has already arrived (maxWait 0 batches those).
            if items and now >= deadline and (queue.empty() or now >= deadline + wait + 0.05):
                hand_over()
            if held:
                for group, (_, until) in list(held.items()):
                    if now >= until:  # some never came back (another replica took them): send the rest
                        hand_over_group(group)

    def remember_group(self, sequences: list[int | str], delay: float) -> None:
        """The retried events of a failed batch come back as one batch (see `run`)."""
        loop_time = asyncio.get_running_loop().time()
        expires = loop_time + delay + self.ack_wait + self.settings.regroup_wait_seconds
        group = Group(tuple(sequences), expires)
        for sequence in sequences:
            self.regroup[sequence] = group

    async def tidy(self) -> None:
        """What the consumer watch does for batches each time it looks."""
        self.forget_groups()
        await self.keep_waiting_batches()

    def forget_groups(self) -> None:
        """Drop groups whose events did not come back (taken by another replica, or acked elsewhere)."""
        if not self.regroup:
            return
        now = asyncio.get_running_loop().time()
        for sequence in [s for s, g in self.regroup.items() if g.expires < now]:
            del self.regroup[sequence]

    async def keep_waiting_batches(self) -> None:
        """Through a Retry-After pause, tell JetStream that events waiting in batches no worker holds
        yet are in progress (the workers do so for theirs), so it does not hand them out again."""
        if not self.gate.paused:
            return
        waiting = [b for b in list(self.ready._queue) if b is not None]  # type: ignore[attr-defined]
        for item in [i for batch in waiting for i in batch] + list(self.assembling):
            with contextlib.suppress(Exception):
                await item.msg.in_progress()
