"""The backlog loop's NATS side: the events stream's fill, every consumer's state, moving a backlog.

Thin: reads become operator/rules/backlog.py's values, a Move becomes sender/bus/backlog.move_aside
over the operator's one NATS connection (Consumers), bounded in time like every call there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nats.js import JetStreamContext, api

from hookline.operator.adapters.consumers import Consumers
from hookline.operator.rules.backlog import ConsumerState, Move, StreamFill, WebhookKey, webhook_of_consumer
from hookline.sender.bus.backlog import MoveResult, list_consumers, move_aside
from hookline.sender.bus.layout import STREAM
from hookline.sender.bus.stoprecord import gone_of

# One move may fetch and store many batches; it gets longer than the adapter's usual bound.
MOVE_TIMEOUT_SECONDS = 60.0


def consumer_state(
    info: api.ConsumerInfo, webhook: WebhookKey, stopped: Mapping[WebhookKey, str]
) -> ConsumerState:
    """One consumer as the rule sees it (pure): a stop recorded on the consumer (410 Gone, circuit
    breaker) or known to the operator (spec.paused, a scope no longer granted) counts as stopped."""
    gone = gone_of(info)
    why = gone.cause if gone.gone else stopped.get(webhook)
    return ConsumerState(
        consumer=info.name,
        webhook=webhook,
        pending=int(info.num_pending or 0),
        ack_pending=int(info.num_ack_pending or 0),
        ack_floor=int(info.ack_floor.stream_seq or 0) if info.ack_floor is not None else 0,
        stopped=why,
        delivered=int(info.delivered.stream_seq or 0) if info.delivered is not None else 0,
    )


class BacklogBus:
    """What the backlog loop asks of NATS; failures come out as ConsumerError (see consumers.py)."""

    def __init__(self, consumers: Consumers) -> None:
        self.consumers = consumers

    async def fill(self) -> StreamFill:
        async def read(js: JetStreamContext) -> StreamFill:
            info = await js.stream_info(STREAM)
            return StreamFill(int(info.state.bytes or 0), int(info.config.max_bytes or -1))

        return await self.consumers.call(f"reading the stream {STREAM}", read)

    async def states(
        self, known: Mapping[str, WebhookKey], stopped: Mapping[WebhookKey, str]
    ) -> list[ConsumerState]:
        """Every Webhook consumer's state (consumers that serve no Webhook, e.g. the recovery
        stream's reader, are left out)."""
        infos = await self.consumers.call(f"listing the consumers of {STREAM}", list_consumers)
        states = []
        for info in infos:
            webhook = webhook_of_consumer(info.name, known)
            if webhook is not None:
                states.append(consumer_state(info, webhook, stopped))
        return states

    async def move(
        self, move: Move, on_moved: Callable[[int], None], *, within: float = MOVE_TIMEOUT_SECONDS
    ) -> MoveResult:
        """`on_moved` counts each batch as it is acknowledged (a move cut short is counted too)."""
        namespace, name = move.webhook

        async def run(js: JetStreamContext) -> MoveResult:
            return await move_aside(
                js,
                move.consumer,
                namespace,
                name,
                limit=move.count,
                why=move.why,
                resume=move.resume,
                on_moved=on_moved,
            )

        return await self.consumers.call(f"moving the backlog of {namespace}/{name}", run, within=within)
