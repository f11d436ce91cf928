"""An event's attempt number is what receivers failed, not how often JetStream handed it out: the
engine's ledger (memory first, the NATS record only after a crash or a handover), the record itself,
and the dead letter left over from a run that died after the last failed attempt. No NATS, no HTTP.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hookline.sender.bus.failedattempts import FailedAttempts, failed_attempts_subject
from hookline.sender.delivery.deadletters import DeadLetterPublisher
from hookline.sender.delivery.ledger import ASK_STORE, AttemptLedger, Held, recall
from hookline.sender.delivery.retry import SCHEDULE_SECONDS, DecisionKind, RetryPolicy
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.delivery.settlement import Carried, settle
from hookline.sender.model.deliveryhealth import DeliveryTally
from hookline.sender.model.events import Event
from hookline.sender.model.outcomes import AttemptKind, AttemptOutcome, DeadLetterReason
from hookline.sender.observe.metrics import SenderMetrics

HTTP_500 = AttemptOutcome(AttemptKind.HTTP_ERROR, 500, "HTTP 500")
TIMEOUT = AttemptOutcome(AttemptKind.TIMEOUT, None, "timeout: no response within the timeout")
STORED = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


@dataclass
class FakeMsg:
    sequence: int
    num_delivered: int = 1
    subject: str = "hookline.events.open._._"

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(
            sequence=SimpleNamespace(stream=self.sequence), num_delivered=self.num_delivered, timestamp=STORED
        )


@dataclass
class FakeStore:
    """The NATS records, in a dict; it counts what the ledger asks of it."""

    records: dict[int, FailedAttempts] = field(default_factory=dict)
    reads: list[int] = field(default_factory=list)
    writes: list[tuple[int, int]] = field(default_factory=list)
    purges: list[int] = field(default_factory=list)

    async def read(self, sequence: int) -> FailedAttempts | None:
        self.reads.append(sequence)
        return self.records.get(sequence)

    async def write(self, sequence: int, record: FailedAttempts) -> None:
        self.writes.append((sequence, record.count))
        self.records[sequence] = record

    async def forget(self, sequence: int) -> None:
        self.purges.append(sequence)
        self.records.pop(sequence, None)


def ledger(store: FakeStore | None = None, limit: int = 100) -> AttemptLedger:
    return AttemptLedger(store, label="default/shop", limit=limit)  # type: ignore[arg-type]  # a fake store


# --- recall (pure) -------------------------------------------------------------------------------------


def test_a_first_delivery_has_no_failed_attempt_and_needs_no_read():
    assert recall(None, 1) is None
    stale = Held(FailedAttempts.first(HTTP_500, 1.0), delivered=4)
    assert recall(stale, 1) is None  # a delivery count of 1 is the event's first: nothing failed


def test_an_event_back_right_after_this_engine_held_it_is_known_from_memory():
    held = Held(FailedAttempts.first(HTTP_500, 1.0), delivered=1)
    assert recall(held, 2) == held.record


def test_a_redelivery_nobody_here_saw_coming_asks_the_store():
    held = Held(FailedAttempts.first(HTTP_500, 1.0), delivered=1)
    assert recall(None, 2) is ASK_STORE  # after a crash: this engine never held it
    assert recall(held, 3) is ASK_STORE  # another replica (or an ack wait) had it in between


# --- the record (pure) ---------------------------------------------------------------------------------


def test_the_record_counts_failures_and_keeps_the_last_answer():
    record = FailedAttempts.first(HTTP_500, 10.0).after(TIMEOUT, 20.0)
    assert record.count == 2 and record.at == 20.0
    assert record.last_outcome == TIMEOUT
    assert FailedAttempts.from_bytes(record.to_bytes()) == record
    assert json.loads(record.to_bytes())["count"] == 2


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"count": 0, "kind": "http_error", "at": 1}', b'{"count": 1, "kind": "odd", "at": 1}'],
)
def test_anything_else_is_not_a_record(data):
    with pytest.raises(ValueError):
        FailedAttempts.from_bytes(data)


def test_the_subject_names_the_consumer_and_the_event_sequence():
    assert (
        failed_attempts_subject("hookline_shop_orders", 3001) == "hookline.failed.hookline_shop_orders.3001"
    )


# --- the ledger ----------------------------------------------------------------------------------------


async def test_the_common_path_costs_nothing_in_nats():
    store = FakeStore()
    book = ledger(store)
    msg = FakeMsg(1)
    assert await book.arrived(msg) is None  # type: ignore[arg-type]
    assert book.failed_before(msg) == 0  # type: ignore[arg-type]
    await book.settled([msg])  # type: ignore[list-item]
    assert store.reads == store.writes == store.purges == []


async def test_the_hot_path_skips_the_ledger_only_where_it_would_answer_none_unasked():
    """`nothing_failed` lets the engine skip `arrived` (a coroutine per event): only for a first
    delivery while no failure is held; a redelivery, or any event while one is held, goes through it."""
    store = FakeStore({9: FailedAttempts.first(HTTP_500, 10.0)})
    book = ledger(store)
    first = FakeMsg(1)
    assert book.nothing_failed(first)  # type: ignore[arg-type]
    assert await book.arrived(first) is None and store.reads == []  # type: ignore[arg-type]
    back = FakeMsg(9, num_delivered=2)  # handed out before, by another process: only the store knows
    assert not book.nothing_failed(back)  # type: ignore[arg-type]
    assert (await book.arrived(back)).count == 1 and store.reads == [9]  # type: ignore[arg-type,union-attr]
    assert not book.nothing_failed(FakeMsg(2))  # type: ignore[arg-type]  # a failure is held: look first


async def test_a_failure_is_written_and_its_retry_needs_no_read():
    store = FakeStore()
    book = ledger(store)
    msg = FakeMsg(7)
    await book.arrived(msg)  # type: ignore[arg-type]
    await book.failed([msg], HTTP_500, 10.0)  # type: ignore[list-item]
    assert store.writes == [(7, 1)]
    back = FakeMsg(7, num_delivered=2)  # the NAK came back here
    assert (await book.arrived(back)).count == 1  # type: ignore[arg-type,union-attr]
    assert book.failed_before(back) == 1  # type: ignore[arg-type]  # this is attempt 2
    await book.failed([back], HTTP_500, 20.0)  # type: ignore[list-item]
    assert store.writes == [(7, 1), (7, 2)] and store.reads == []
    await book.settled([back])  # type: ignore[list-item]
    assert store.purges == [7] and book.held == {}


async def test_after_a_crash_the_count_is_read_once_not_taken_from_the_delivery_count():
    store = FakeStore({5: FailedAttempts.first(HTTP_500, 10.0)})
    book = ledger(store)  # a new process: nothing in memory
    held_by_the_dead = FakeMsg(5, num_delivered=3)  # failed once, then held by a sender that was killed
    assert (await book.arrived(held_by_the_dead)).count == 1  # type: ignore[arg-type,union-attr]
    assert book.failed_before(held_by_the_dead) == 1  # type: ignore[arg-type]  # attempt 2, not 3
    never_answered = FakeMsg(6, num_delivered=2)  # sent or held when the sender died: no answer
    assert await book.arrived(never_answered) is None  # type: ignore[arg-type]
    assert book.failed_before(never_answered) == 0  # type: ignore[arg-type]
    assert store.reads == [5, 6]


async def test_the_retry_schedule_and_max_attempts_follow_the_true_count():
    store = FakeStore({5: FailedAttempts.first(HTTP_500, 10.0)})
    book = ledger(store)
    msg = FakeMsg(5, num_delivered=4)  # handed out four times (two crashes), failed once
    await book.arrived(msg)  # type: ignore[arg-type]
    carried = [Carried(book.failed_before(msg) + 1, 0.0)]  # type: ignore[arg-type]  # as the engine does
    settlement = settle(HTTP_500, carried, 1.0, RetryPolicy(max_attempts=3, jitter=0))
    assert settlement.retry_delay == SCHEDULE_SECONDS[2]  # after the second failed attempt, not the fourth
    settlement = settle(HTTP_500, carried, 1.0, RetryPolicy(max_attempts=2, jitter=0))
    assert settlement.decisions[0].kind is DecisionKind.DEAD_LETTER  # this was attempt 2 of 2


async def test_a_batch_is_counted_per_event():
    store = FakeStore({2: FailedAttempts.first(HTTP_500, 1.0)})
    book = ledger(store)
    fresh, retried = FakeMsg(1), FakeMsg(2, num_delivered=2)
    for msg in (fresh, retried):
        await book.arrived(msg)  # type: ignore[arg-type]
    await book.failed([fresh, retried], TIMEOUT, 5.0)  # type: ignore[list-item]
    assert sorted(store.writes) == [(1, 1), (2, 2)]
    assert store.records[2].last_outcome == TIMEOUT


async def test_a_refused_write_is_kept_in_memory():
    class Refusing(FakeStore):
        async def write(self, sequence: int, record: FailedAttempts) -> None:
            raise TimeoutError

    book = ledger(Refusing())
    msg = FakeMsg(3)
    await book.failed([msg], HTTP_500, 1.0)  # type: ignore[list-item]  # logged, not raised
    assert book.failed_before(FakeMsg(3, num_delivered=1)) == 1  # type: ignore[arg-type]


async def test_memory_is_bounded_and_a_forgotten_count_is_read_again():
    store = FakeStore()
    book = ledger(store, limit=2)
    for sequence in (1, 2, 3):
        await book.failed([FakeMsg(sequence)], HTTP_500, 1.0)  # type: ignore[list-item]
    assert list(book.held) == [2, 3]
    assert (await book.arrived(FakeMsg(1, num_delivered=2))).count == 1  # type: ignore[arg-type,union-attr]
    assert store.reads == [1]


# --- the dead letter left over from a run that died ---------------------------------------------------


def publisher(max_attempts: int = 2) -> DeadLetterPublisher:
    metrics = SenderMetrics(CollectorRegistry()).bind("default", "shop")
    return DeadLetterPublisher(
        None,  # type: ignore[arg-type]  # nothing is published here
        None,  # type: ignore[arg-type]
        metrics,
        DeliveryTally("default", "shop"),
        EngineSettings(),
        namespace="default",
        name="shop",
        max_attempts=max_attempts,
        label="default/shop",
    )


EVENT = Event.from_bytes(b'{"id":"e1","type":"open","time":1700000000,"recipient":"a@b.example"}')


def test_a_redelivered_event_is_not_dead_lettered_for_its_delivery_count():
    assert publisher().left(FakeMsg(1, num_delivered=9), EVENT, None) is None  # type: ignore[arg-type]
    one = FailedAttempts.first(HTTP_500, 10.0)
    assert publisher().left(FakeMsg(1, num_delivered=9), EVENT, one) is None  # type: ignore[arg-type]


def test_an_event_whose_recorded_failures_reached_max_attempts_is_dead_lettered_with_its_last_answer():
    two = FailedAttempts.first(TIMEOUT, 10.0).after(HTTP_500, 20.0)
    pending = publisher().left(FakeMsg(4, num_delivered=3), EVENT, two)  # type: ignore[arg-type]
    assert pending is not None
    record, tries = pending
    assert tries == 0
    assert record.reason is DeadLetterReason.MAX_ATTEMPTS
    assert (record.attempts, record.last_status, record.last_error) == (2, 500, "HTTP 500")
    assert record.last_attempt_at == 20.0 and record.source_sequence == 4
