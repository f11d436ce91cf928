"""Publishing a request's events as bundles (`hookline ingest --bundle-events N`, issue 22): several
events of one subject in one stored message, so that every Webhook pulls, parses and acknowledges one
message for up to N events; each event keeps its id for de-duplication and its own dead letter.

The sequence, per request (bundling.plan_bundles says which events go together):

1. each event's id is reserved for its group (bus/reservations.py): `plain` for an event alone on its
   subject, else a fresh bundle id;
2. an id somebody reserved before is settled by what its holder published: the holder's message is
   published again under the holder's message id (JetStream answers "duplicate" when it was stored,
   or stores it now when its publish had ended unknown), and the event gets that fate; a reservation
   whose bundle left no record was never published: it is taken over;
3. each bundle's message is kept (bus/reservations.py) before it is published, so step 2 can redo
   it; a bundle refused for certain has its record dropped, so a retry is not settled by it;
4. the groups are published (a plain event under its own id, as without bundles) and every event
   gets its group's fate; the answer is the same per-event answer as without bundles (answer.py).

Cost per event at ingest: one reservation write, plus per bundle one kept record and one publish
(without bundles: one publish per event); every Webhook's sender then handles 1/N of the messages.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from hookline.sender.bus.connection import BusUnavailable
from hookline.sender.bus.publish import Fate, PublishReport, publish_reporting
from hookline.sender.bus.reservations import PLAIN, IdReservations, KeptBundle, Reservation
from hookline.sender.ingest.body import Outgoing
from hookline.sender.ingest.bundling import Group, answer_fates, plan_bundles
from hookline.sender.model.bundles import BUNDLE_HEADER, pack

__all__ = ["publish_bundled"]

_BUNDLE_HEADROOM_BYTES = 1024  # a bundle's headers within the server's max_payload


async def publish_bundled(
    nc: NATS, js: JetStreamContext, batch: Sequence[Outgoing], *, max_events: int, ack_timeout: float
) -> PublishReport:
    """Publish `batch` in bundles; each event's fate, as `publish_reporting` reports them."""
    run = _Publication(nc, js, batch, ack_timeout)
    plan = plan_bundles(batch, max_events, max(1024, nc.max_payload - _BUNDLE_HEADROOM_BYTES))
    await run.reserve(plan.groups)
    await run.publish(plan.groups)
    fates = answer_fates(len(batch), run.fates, plan.repeats)
    problem = run.problem
    if problem is None and not all(fate.stored for fate in fates):
        problem = BusUnavailable("NATS did not confirm every event")
    return PublishReport(tuple(fates), problem)


class _Publication:
    """The state of one request's bundled publication: holders, fates, the first problem met."""

    def __init__(self, nc: NATS, js: JetStreamContext, batch: Sequence[Outgoing], timeout: float) -> None:
        self.nc = nc
        self.batch = batch
        self.timeout = timeout
        self.ids = IdReservations(js, timeout)
        self.holders: dict[Group, str] = {}
        self.ours: set[int] = set()  # positions whose id this request holds
        self.fates: dict[int, Fate] = {}
        self.problem: BusUnavailable | None = None
        self._redone: dict[str, asyncio.Task[Fate]] = {}  # holder -> its message published again

    def _fail(self, index: int, fate: Fate, problem: BaseException) -> None:
        self.fates[index] = fate
        if self.problem is None:
            self.problem = problem if isinstance(problem, BusUnavailable) else BusUnavailable(str(problem))

    async def reserve(self, groups: Sequence[Group]) -> None:
        for group in groups:
            self.holders[group] = PLAIN if group.plain else secrets.token_hex(12)
        pairs = [(group, index) for group in groups for index in group.members]
        answers = await self.ids.reserve_all(
            self.nc, [(self.batch[index].id, self.holders[group]) for group, index in pairs]
        )
        await asyncio.gather(
            *(
                self._settle(group, index, answer)
                for (group, index), answer in zip(pairs, answers, strict=True)
            )
        )

    async def _settle(self, group: Group, index: int, answer: Reservation | BaseException) -> None:
        """What one reservation means: ours, settled by its holder, or not sent."""
        if isinstance(answer, BaseException):
            self._fail(index, Fate.NOT_SENT, answer)  # unreserved, or reserved for a group never kept
            return
        try:
            if not answer.ours and answer.holder:
                if answer.holder == PLAIN:
                    event = self.batch[index]
                    self.fates[index] = await self._again(event.id, event.subject, event.data, None)
                    return
                kept = await self.ids.kept_bundle(answer.holder)
                if kept is not None:
                    self.fates[index] = await self._again(
                        answer.holder, kept.subject, kept.payload, kept.count
                    )
                    return
            if not answer.ours:  # its bundle was never kept (so never published), or it expired: take it
                answer = await self.ids.reserve(
                    self.batch[index].id, self.holders[group], after=answer.sequence
                )
                if not answer.ours:
                    raise BusUnavailable("another request holds this event id right now; retry it")
        except BusUnavailable as exc:
            self._fail(index, Fate.NOT_SENT, exc)
            return
        self.ours.add(index)

    async def _again(self, msg_id: str, subject: str, payload: bytes, count: int | None) -> Fate:
        """The fate of a holder's message published once more under its own id (once per request)."""
        task = self._redone.get(msg_id)
        if task is None:
            headers = None if count is None else [{BUNDLE_HEADER: str(count)}]
            task = self._redone[msg_id] = asyncio.ensure_future(
                publish_reporting(
                    self.nc, [(subject, msg_id, payload)], ack_timeout=self.timeout, headers=headers
                )
            )
        report = await task
        if report.problem is not None and self.problem is None:
            self.problem = report.problem
        return report.fates[0]

    async def publish(self, groups: Sequence[Group]) -> None:
        batch = self.batch
        items: list[tuple[str, str, bytes]] = []
        headers: list[dict[str, str] | None] = []
        carried: list[tuple[Group, list[int]]] = []
        kept: list[tuple[str, KeptBundle]] = []
        for group in groups:
            members = [index for index in group.members if index in self.ours]
            if not members:
                continue
            holder = self.holders[group]
            if holder == PLAIN:
                event = batch[members[0]]
                items.append((event.subject, event.id, event.data))
                headers.append(None)
            else:
                payload, bundle_headers = pack([batch[index].data for index in members])
                kept.append((holder, KeptBundle(group.subject, payload, len(members))))
                items.append((group.subject, holder, payload))
                headers.append(bundle_headers)
            carried.append((group, members))
        stored = await asyncio.gather(*(self.ids.keep_bundle(h, k) for h, k in kept), return_exceptions=True)
        unkept = {
            holder
            for (holder, _), answer in zip(kept, stored, strict=True)
            if isinstance(answer, BaseException)
        }
        for answer in stored:
            if isinstance(answer, BaseException) and self.problem is None:
                self.problem = answer if isinstance(answer, BusUnavailable) else BusUnavailable(str(answer))
        sending = [i for i, (_, msg_id, _) in enumerate(items) if msg_id not in unkept]
        report = await publish_reporting(
            self.nc,
            [items[i] for i in sending],
            ack_timeout=self.timeout,
            headers=[headers[i] for i in sending],
        )
        if report.problem is not None and self.problem is None:
            self.problem = report.problem
        fate_of = dict(zip(sending, report.fates, strict=True))
        refused = []
        for position, (group, members) in enumerate(carried):
            fate = fate_of.get(position, Fate.NOT_SENT)
            for index in members:
                self.fates[index] = fate
            if fate in (Fate.REFUSED, Fate.NOT_SENT) and self.holders[group] != PLAIN:
                refused.append(self.holders[group])
        # Refused for certain: a retry must not be settled by these records (their events are not stored).
        await asyncio.gather(*(self.ids.drop_bundle(holder) for holder in refused), return_exceptions=True)
