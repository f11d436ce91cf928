"""The failed-attempt records on a real nats-server: one per event, replaced by the next, purged
without a trace, made on the first write when nobody made the stream, kept as long as events are."""

from __future__ import annotations

from hookline.sender import bus
from hookline.sender.bus.failedattempts import (
    FAILED_ATTEMPTS_STREAM,
    FailedAttempts,
    FailedAttemptStore,
    ensure_failed_attempts_stream,
)
from hookline.sender.model.outcomes import AttemptKind, AttemptOutcome

HTTP_500 = AttemptOutcome(AttemptKind.HTTP_ERROR, 500, "HTTP 500")
HTTP_503 = AttemptOutcome(AttemptKind.HTTP_ERROR, 503, "HTTP 503", throttled=True)


async def test_a_record_is_written_read_replaced_and_purged(nats):
    _, js = nats
    store = FailedAttemptStore(js, "hookline_shop_orders")
    assert await store.read(41) is None  # no stream yet: nothing failed

    first = FailedAttempts.first(HTTP_500, 100.0)
    await store.write(41, first)  # makes the stream
    assert await store.read(41) == first
    second = first.after(HTTP_503, 200.0)
    await store.write(41, second)
    await store.write(42, FailedAttempts.first(HTTP_500, 150.0))
    assert await store.read(41) == second
    assert await FailedAttemptStore(js, "hookline_shop_other").read(41) is None  # per consumer

    info = await js.stream_info(FAILED_ATTEMPTS_STREAM)
    assert info.state.messages == 2  # one per event: the second count replaced the first
    assert info.config.max_age == bus.DEFAULT_RETENTION_SECONDS  # the events stream's retention

    await store.forget(41)
    await store.forget(41)  # again: nothing there, no error
    assert await store.read(41) is None
    info = await js.stream_info(FAILED_ATTEMPTS_STREAM)
    assert info.state.messages == 1  # purged, no delete marker left


async def test_ingest_brings_its_retention_to_the_stream(nats):
    _, js = nats
    await ensure_failed_attempts_stream(js)
    info = await ensure_failed_attempts_stream(js, 3600.0, update_existing=True)
    assert info.config.max_age == 3600.0
    untouched = await ensure_failed_attempts_stream(js, 60.0)  # a sender leaves it as it is
    assert untouched.config.max_age == 3600.0
