"""Attempts are what receivers answered: a sender SIGKILLed mid-batch while its receiver fails ~30 %
of requests (batches of 50, maxAttempts 2).

The receiver answers 500 to request n when the n-th draw of a seeded generator is below 0.3, else 200,
and records every answer it gave per event id. The kill lands while requests wait at the receiver
for their answer and more batches wait in the sender's hands (fresh events and retries): all of them
come back from JetStream with a higher delivery count, although no receiver answered them. Counted
by JetStream (hookline before this test), those came back as failed attempts: events dead-lettered
after one 500, or without another request at all, with an attempt count the receiver never saw.

The kill does not land in the instant between a receiver writing its answer and the sender reading
it: what a sender never read, no sender can know (the receiver then sees the event again with the
same id). The test closes the receiver's door, lets the sender finish what was answered, then kills.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

from aiohttp import web
from harness import Attempt, Harness, Receiver, report, wait_until

from hookline.sender.model.outcomes import DeadLetterReason

FAIL_RATIO = 0.3
SEED = 20260817
MAX_ATTEMPTS = 2
EVENTS = 6000


@dataclass
class PatternReceiver(Receiver):
    """Fails ~30 % of requests by a seeded pattern and records every answer per event id. `hold()`
    keeps new answers back; requests held when their sender died (`sender_died()`) got no answer."""

    seed: int = SEED
    fail_ratio: float = FAIL_RATIO
    answers: dict[str, list[int]] = field(default_factory=dict)  # event id -> statuses, in order
    unanswered: dict[str, int] = field(default_factory=dict)  # event id -> requests it never answered
    held: int = 0
    _draws: random.Random = field(init=False)
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _generation: int = 0

    def __post_init__(self) -> None:
        self._draws = random.Random(self.seed)
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def sender_died(self) -> None:
        """The requests held now will never reach their sender: open the door, record no answer."""
        self._generation += 1
        self._open.set()

    async def _handle(self, request: web.Request) -> web.Response:
        ids = [str(event["id"]) for event in json.loads(await request.read())]
        attempt = Attempt(request.headers.get("webhook-id", ""), time.monotonic())
        self.attempts.append(attempt)
        generation = self._generation
        status = 500 if self._draws.random() < self.fail_ratio else 200
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self._open.is_set():
            self.held += 1
            try:
                await self._open.wait()
            finally:
                self.held -= 1
        if generation != self._generation:
            for event_id in ids:
                self.unanswered[event_id] = self.unanswered.get(event_id, 0) + 1
            return web.Response(status=503, text="nobody is listening")
        attempt.status, attempt.answered = status, time.monotonic()
        for event_id in ids:
            self.answers.setdefault(event_id, []).append(status)
        return web.Response(status=status, text="ok" if status < 300 else "broken")

    def failures(self, event_id: str) -> int:
        return sum(1 for status in self.answers.get(event_id, ()) if status >= 300)

    @property
    def delivered_ids(self) -> set[str]:
        return {i for i, statuses in self.answers.items() if any(200 <= s < 300 for s in statuses)}

    @property
    def successes(self) -> int:
        return sum(1 for statuses in self.answers.values() for s in statuses if 200 <= s < 300)


async def test_a_sender_killed_mid_batch_dead_letters_only_what_receivers_failed(harness: Harness):
    receiver = PatternReceiver(name="pattern", delay=0.2)
    await receiver.start()
    harness.receivers.append(receiver)
    webhook = await harness.webhook(
        "orders",
        receiver,
        maxAttempts=MAX_ATTEMPTS,
        maxInFlight=8,
        maxRequestsPerSecond=10,
        timeoutSeconds=5,
        batch={"maxEvents": 50, "maxWaitMilliseconds": 100},
    )
    accepted = await harness.ingest_events(EVENTS)
    sender, http = webhook.sender, harness.http
    assert http is not None

    # Under way, with retries among the events: some event already had its second attempt.
    await wait_until(
        lambda: any(len(statuses) >= 2 for statuses in receiver.answers.values()),
        what="a retried event",
        diagnostics=harness.diagnostics,
    )
    receiver.hold()

    async def quiet() -> bool:
        """Every request the sender has in flight waits at the receiver: nothing answered is unread."""
        held = receiver.held
        return held > 0 and await sender.metric(http, "hookline_in_flight_requests") == held

    await wait_until(quiet, what="the sender's requests all waiting at the receiver", within=30)
    await asyncio.sleep(2.0)  # what was answered before is settled (acked, or counted and retried)
    await wait_until(quiet, what="still all waiting at the receiver", within=30)
    held_requests = receiver.held
    sender.kill()
    receiver.sender_died()
    assert len(receiver.delivered_ids) < len(accepted), "the stream finished before the kill: no fault"

    await harness.restart_sender(sender)
    accounting = await harness.settled(webhook, accepted, within=180)
    report("sender SIGKILLed mid-batch, 30 % 500s, maxAttempts 2", accounting)
    records = await harness.dead_letters(webhook)
    retried = sum(1 for statuses in receiver.answers.values() if len(statuses) >= 2)
    print(
        f"[fault] held at the kill: {held_requests} requests ({len(receiver.unanswered)} events never "
        f"answered); {len(receiver.attempts)} requests; {retried} events answered twice; "
        f"{len(records)} dead letters"
    )

    assert accounting.lost == 0
    assert accounting.delivered + accounting.dead_lettered == len(accepted)
    assert accounting.dead_lettered > 0, "the pattern made no event fail twice: nothing was checked"
    assert receiver.unanswered, "no request was waiting for its answer at the kill"
    untrue = [r for r in records if r.attempts != receiver.failures(r.event_id)]
    got_2xx = [r for r in records if r.event_id in receiver.delivered_ids]
    assert not untrue and not got_2xx, (
        f"{len(untrue)} of {len(records)} dead letters count attempts the receiver never failed, "
        f"{len(got_2xx)} were answered 2xx: "
        f"{[(r.event_id, r.attempts, receiver.answers.get(r.event_id)) for r in untrue[:5]]}"
    )
    for record in records:
        answers = receiver.answers.get(record.event_id, [])
        seen = (record.event_id, record.attempts, record.last_status, answers)
        assert record.reason is DeadLetterReason.MAX_ATTEMPTS, (record.event_id, record.reason)
        assert record.attempts == receiver.failures(record.event_id), seen
        assert record.attempts >= MAX_ATTEMPTS, seen
        assert not any(200 <= status < 300 for status in answers), seen
        assert record.last_status == answers[-1] == 500, seen
    # No event was tried past maxAttempts either: every one that failed twice is dead-lettered.
    dead = {record.event_id for record in records}
    assert len(dead) == len(records)
    assert max(receiver.failures(event_id) for event_id in accepted) <= MAX_ATTEMPTS
    assert {e for e in accepted if receiver.failures(e) >= MAX_ATTEMPTS} == dead
