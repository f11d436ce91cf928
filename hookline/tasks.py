"""Ending background tasks for sure: one helper for the operator, the sender and the pool replica."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


async def cancel_until_done(
    tasks: Sequence[asyncio.Task[None]], *, every: float = 0.5, rounds: int = 20
) -> None:
    """Cancel ``tasks`` and wait; cancel again those still running. On Python 3.11 asyncio.wait_for
    (nats-py's requests and KV watchers use it) loses a cancellation that arrives as its inner wait
    completes, and such a task would run on, holding the shutdown (and the process) forever."""
    for _ in range(rounds):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=every)
    stuck = [task.get_name() for task in tasks if not task.done()]
    if stuck:
        log.warning("background tasks still running after %g s: %s", every * rounds, ", ".join(stuck))
    await asyncio.gather(*(task for task in tasks if task.done()), return_exceptions=True)
