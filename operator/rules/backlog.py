"""Which Webhooks' backlogs to move aside, so one tenant's stuck Webhook cannot fill the shared stream.

HOOKLINE_EVENTS keeps an event while some consumer still wants it (interest retention) and refuses
new events at its byte limit (discard new): one paused, gone, disabled or stuck Webhook would hold
every event it subscribes to until ingest answers 503 to every producer. This rule picks the
backlogs to move to their Webhooks' own dead letters (reason ``backlog_limit``, redrivable):

- above the high-water mark (a fraction of the stream's byte limit), the whole backlog of each
  Webhook that is stopped (its consumer paused by a 410 Gone or the circuit breaker, or a stop the
  operator knows of: spec.paused, ScopeNotAllowed) or made no acknowledgement progress for
  ``stalled_seconds``, the one holding the oldest event first;
- at any fill, what a Webhook has pending beyond ``max_pending`` (the per-Webhook cap; 0: none),
  its oldest events first.

Pure: the loop (loops/backlog.py) passes the stream's and consumers' state and the time, and moves
at most ``moves_per_tick`` events per tick, so its work is bounded whatever the backlog.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from hookline.sender.model.config import MAX_CONSUMER_NAME, consumer_name

WebhookKey = tuple[str, str]

CONSUMER_PREFIX = "hookline_"
_HASHED = re.compile(rf"^.{{{MAX_CONSUMER_NAME - 17}}}-[0-9a-f]{{16}}$")  # consumer_name's cut form


@dataclass(frozen=True)
class BacklogSettings:
    """The operator's backlog policy (chart values operator.backlog.*)."""

    enabled: bool = True
    high_water: float = 0.6  # fraction of the stream's byte limit
    max_pending: int = 0  # per-Webhook cap on events not yet delivered; 0: no cap
    stalled_seconds: float = 300.0  # no ack progress this long (with events pending) counts as stuck
    moves_per_tick: int = 2_000  # events moved aside per tick, all Webhooks together
    tick_seconds: float = 10.0  # how often the stream's fill is read (one request)
    scan_seconds: float = 60.0  # how often every consumer is listed while the stream is below the mark

    def __post_init__(self) -> None:
        if not 0 < self.high_water <= 1:
            raise ValueError("backlog high-water mark must be above 0 and at most 100 % of the byte limit")
        if self.max_pending < 0:
            raise ValueError("backlog maxPendingPerWebhook must be 0 (no cap) or a positive number of events")
        if self.moves_per_tick < 1 or self.stalled_seconds <= 0 or self.tick_seconds <= 0:
            raise ValueError("backlog movesPerTick, stalledSeconds and tick must be positive")


@dataclass(frozen=True)
class StreamFill:
    """The events stream's bytes and byte limit (-1 or 0: none, then only the cap applies)."""

    bytes: int
    max_bytes: int

    @property
    def fraction(self) -> float | None:
        return self.bytes / self.max_bytes if self.max_bytes > 0 else None

    def above(self, high_water: float) -> bool:
        fraction = self.fraction
        return fraction is not None and fraction >= high_water


@dataclass(frozen=True)
class ConsumerState:
    """One Webhook's consumer as the server reports it."""

    consumer: str
    webhook: WebhookKey
    pending: int  # not yet delivered to anyone (what can be moved)
    ack_pending: int  # delivered, not acknowledged (in flight, or waiting for a retry)
    ack_floor: int  # stream sequence up to which all is acknowledged
    stopped: str | None = None  # why no sender takes its events ("gone", "disabled", "paused", ...)
    delivered: int = 0  # the highest stream sequence handed out (a sender still taking new events)

    @property
    def progress_mark(self) -> tuple[int, int]:
        """What moves while a Webhook makes progress: its ack floor, or new events handed out (one
        event retrying for hours holds the floor of a Webhook that delivers everything else)."""
        return self.ack_floor, self.delivered

    @property
    def backlog(self) -> int:
        return self.pending + self.ack_pending


@dataclass(frozen=True)
class Move:
    """Move up to ``count`` of a Webhook's oldest undelivered events to its dead letters."""

    consumer: str
    webhook: WebhookKey
    count: int
    why: str  # the dead letter's lastError and the Event's message: which limit, by how much
    resume: bool = False  # its consumer is paused by a stop: resumed while moving, paused again after


@dataclass(frozen=True)
class Progress:
    """A consumer's progress mark when last seen, and since when it has not moved with events waiting."""

    mark: tuple[int, int]
    since: float


def track_progress(
    before: Mapping[str, Progress],
    states: Iterable[ConsumerState],
    now: float,
    moved: Collection[str] = (),
) -> dict[str, Progress]:
    """The progress table after a scan: a mark that moved (or nothing waiting) starts a new period,
    unless the loop itself moved it (``moved``: consumers it moved events of since the last scan;
    fetching and acknowledging them moves the mark without the Webhook doing anything)."""
    after: dict[str, Progress] = {}
    for state in states:
        seen = before.get(state.consumer)
        if seen is None or state.backlog == 0:
            after[state.consumer] = Progress(state.progress_mark, now)
        elif seen.mark != state.progress_mark:
            since = seen.since if state.consumer in moved else now
            after[state.consumer] = Progress(state.progress_mark, since)
        else:
            after[state.consumer] = seen
    return after


def stuck_reason(
    state: ConsumerState, progress: Progress | None, now: float, settings: BacklogSettings
) -> str | None:
    """Why a Webhook's backlog is not being worked off, or None while it is."""
    if state.backlog == 0:
        return None
    if state.stopped:
        return f"it is stopped ({state.stopped})"
    if progress is not None and now - progress.since >= settings.stalled_seconds:
        return f"it acknowledged nothing for {now - progress.since:.0f} s"
    return None


def decide(
    fill: StreamFill,
    states: Iterable[ConsumerState],
    progress: Mapping[str, Progress],
    now: float,
    settings: BacklogSettings,
    *,
    stream: str = "HOOKLINE_EVENTS",
) -> list[Move]:
    """The moves of one tick, at most ``settings.moves_per_tick`` events in all, most urgent first."""
    if not settings.enabled:
        return []
    wanted: dict[str, Move] = {}
    states = list(states)
    if fill.above(settings.high_water):
        percent = round(100 * (fill.fraction or 0))
        stuck = [
            (state, why)
            for state in states
            if state.pending > 0
            and (why := stuck_reason(state, progress.get(state.consumer), now, settings)) is not None
        ]
        stuck.sort(key=lambda item: (item[0].ack_floor, -item[0].pending, item[0].consumer))
        for state, why in stuck:
            message = (
                f"the stream {stream} is at {percent}% of its byte limit (high-water mark "
                f"{round(100 * settings.high_water)}%) and {why}"
            )
            wanted[state.consumer] = _move(state, state.pending, message)
    if settings.max_pending:
        over = [s for s in states if s.pending > settings.max_pending and s.consumer not in wanted]
        over.sort(key=lambda s: (-(s.pending - settings.max_pending), s.consumer))
        for state in over:
            message = (
                f"{state.pending} events were waiting, over the backlog cap of {settings.max_pending} "
                "per Webhook (operator.backlog.maxPendingPerWebhook)"
            )
            wanted[state.consumer] = _move(state, state.pending - settings.max_pending, message)
    return _within_budget(wanted.values(), settings.moves_per_tick)


def _move(state: ConsumerState, count: int, why: str) -> Move:
    return Move(state.consumer, state.webhook, count, why, resume=state.stopped in ("gone", "disabled"))


def _within_budget(moves: Iterable[Move], budget: int) -> list[Move]:
    """The moves in order, the last one cut so the tick moves at most ``budget`` events."""
    chosen: list[Move] = []
    for move in moves:
        if budget <= 0:
            break
        count = min(move.count, budget)
        chosen.append(Move(move.consumer, move.webhook, count, move.why, move.resume))
        budget -= count
    return chosen


# Ready reasons of a Webhook whose events no sender takes (its backlog only grows).
STOPPED_READY_REASONS = ("Paused", "ScopeNotAllowed")


def stop_of(ready_reason: str) -> str | None:
    """Why the Webhook is stopped, from its Ready reason as the operator last saw it, or None."""
    return ready_reason if ready_reason in STOPPED_READY_REASONS else None


def webhook_of_consumer(consumer: str, known: Mapping[str, WebhookKey]) -> WebhookKey | None:
    """The Webhook a consumer serves: from the operator's table (consumer_name of each Webhook it
    watches), else read back from ``hookline_<namespace>_<name>`` (a namespace holds no ``_``)."""
    if consumer in known:
        return known[consumer]
    if not consumer.startswith(CONSUMER_PREFIX) or _HASHED.search(consumer):
        return None  # not a Webhook's, or a long name cut and hashed: not readable back
    namespace, _, rest = consumer[len(CONSUMER_PREFIX) :].partition("_")
    name = rest.replace("_", ".")  # consumer_name wrote a name's dots as underscores
    try:
        made = consumer_name(namespace, name)
    except ValueError:
        return None
    return (namespace, name) if made == consumer else None
