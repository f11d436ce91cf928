"""The benchmarks' stack: the fault tests' harness (real nats-server, ingest and sender processes,
an aiohttp receiver on 127.0.0.1), reused so that benchmarks measure exactly what the tests exercise."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from harness import Attempt, Harness, Process, Receiver, Webhook, click, wait_until  # noqa: E402

from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402

__all__ = [
    "Attempt",
    "Harness",
    "Process",
    "Receiver",
    "Webhook",
    "click",
    "percentile",
    "stack",
    "wait_until",
]


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[Harness]:
    """NATS + ingest in a temporary directory; add receivers and Webhooks on the yielded harness."""
    with tempfile.TemporaryDirectory(prefix="hookline-bench-") as tmp:
        path = Path(tmp)
        with EmbeddedNats(path / "nats-store", log_file=path / "nats.log") as nats_server:
            async with Harness(path, nats_server) as harness:
                yield harness


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]
