"""The stop record: a Webhook stopped by a 410 Gone (or its circuit breaker) is stopped durably.

Its consumer is paused (the server then hands no event to any replica, also after a restart) and the
consumer's metadata says when, which event, at which URL (as a digest) and why. `read_gone` is how
senders and the operator learn of it; `clear_gone` resumes.
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext, api

from hookline.sender.bus.layout import STREAM, own_metadata
from hookline.sender.model.outcomes import GoneState
from hookline.timestamps import parse_rfc3339, rfc3339

# Consumer metadata of a Webhook stopped by a 410 Gone (see read_gone / mark_gone / clear_gone).
GONE_SINCE_KEY = "hookline.io/gone-since"
GONE_EVENT_KEY = "hookline.io/gone-event"
GONE_URL_KEY = "hookline.io/gone-url-sha256"
GONE_CAUSE_KEY = "hookline.io/stop-cause"  # absent: a 410 Gone; "disabled": the circuit breaker
GONE_KEYS = (GONE_SINCE_KEY, GONE_EVENT_KEY, GONE_URL_KEY, GONE_CAUSE_KEY)
PAUSED_FOREVER = "9999-12-31T23:59:59Z"


def gone_of(info: api.ConsumerInfo) -> GoneState:
    """The 410 Gone stop recorded on a consumer (pure; not gone when there is none)."""
    metadata = info.config.metadata or {}
    since = metadata.get(GONE_SINCE_KEY)
    if since is None:
        return GoneState()
    try:
        when: float | None = parse_rfc3339(since).timestamp()
    except ValueError:
        when = None
    return GoneState(
        gone=True,
        since=when,
        event_id=metadata.get(GONE_EVENT_KEY) or None,
        url_sha256=metadata.get(GONE_URL_KEY) or None,
        cause=metadata.get(GONE_CAUSE_KEY) or "gone",
    )


def gone_metadata(state: GoneState) -> dict[str, str]:
    return {
        GONE_SINCE_KEY: rfc3339(state.since if state.since is not None else time.time()),
        GONE_EVENT_KEY: state.event_id or "",
        GONE_URL_KEY: state.url_sha256 or "",
        GONE_CAUSE_KEY: state.cause,
    }


async def read_gone(js: JetStreamContext, consumer: str, *, stream: str = STREAM) -> GoneState:
    """Whether a Webhook is stopped by a 410 Gone (NotFoundError if it has no consumer)."""
    return gone_of(await js.consumer_info(stream, consumer))


async def mark_gone(js: JetStreamContext, consumer: str, state: GoneState, *, stream: str = STREAM) -> None:
    """Record the stop on the consumer, then pause it so no replica gets another event.

    In this order: a crash in between leaves a recorded stop that senders honour on their own.
    """
    info = await js.consumer_info(stream, consumer)
    if not gone_of(info).gone:
        metadata = {**own_metadata(info.config), **gone_metadata(state)}
        await js.add_consumer(stream, info.config.evolve(metadata=metadata))
    await js.pause_consumer(stream, consumer, PAUSED_FOREVER)


async def clear_gone(js: JetStreamContext, consumer: str, *, stream: str = STREAM) -> bool:
    """Resume a Webhook stopped by a 410 Gone; False if it was not stopped (nothing changes then).

    Unpause first, then drop the record: a crash in between still reads as stopped, never as a
    consumer that silently hands out nothing.
    """
    info = await js.consumer_info(stream, consumer)
    if not gone_of(info).gone:
        return False
    await js.resume_consumer(stream, consumer)
    metadata = {k: v for k, v in own_metadata(info.config).items() if k not in GONE_KEYS}
    await js.add_consumer(stream, info.config.evolve(metadata=metadata))
    return True
