"""Capacity isolation (issue 18, item 3): one tenant's stuck Webhook cannot make ingest refuse another's.

Real nats-server, `hookline ingest` with a small byte limit on HOOKLINE_EVENTS (1 MiB), two `hookline
sender` processes, aiohttp receivers on loopback, and the operator's backlog loop (BacklogMover, the
code `hookline operator` runs, here without Kopf). Namespace team-a's receiver hangs while events for
team-a and team-b flow past the stream's byte limit. Before this loop, team-a's consumer held every
one of its events and ingest answered 503 to both tenants once 1 MiB was reached; now team-a's stuck
backlog goes to its own dead letters (reason backlog_limit), team-b receives everything, ingest
answers 202 throughout, and after the receiver recovers `hookline redrive` delivers the moved events.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest
from harness import Harness, Mode, Webhook, click, reasons, report, wait_until
from prometheus_client import CollectorRegistry

from hookline.operator.adapters.backlog import BacklogBus
from hookline.operator.adapters.consumers import Consumers
from hookline.operator.loops.backlog import BacklogMover
from hookline.operator.metrics import OperatorMetrics
from hookline.operator.rules.backlog import BacklogSettings

pytestmark = pytest.mark.slow

STREAM_BYTES = 1024 * 1024
ROUNDS = 40  # of 100 events per tenant: 8,000 events; team-a's 4,000 alone are ~1.3 times the byte limit
SETTINGS = BacklogSettings(
    high_water=0.6, stalled_seconds=1.0, moves_per_tick=2_000, tick_seconds=0.2, scan_seconds=0.5
)


async def post(harness: Harness, prefix: str, database: str, start: int) -> tuple[int, list[str]]:
    events = [{**click(f"{prefix}-{i:05d}"), "database": database} for i in range(start, start + 100)]
    status, body = await harness.post(events)
    return status, list(body.get("accepted", [])) if status == 202 else []


async def keep_moving(mover: BacklogMover, peak: list[float], stop: asyncio.Event) -> None:
    """The operator's loop, at a test's pace; records the highest fill it saw. Stops between ticks, so
    that the counts compared below are those of whole moves."""
    while not stop.is_set():
        fill = await mover.bus.fill()
        peak[0] = max(peak[0], fill.fraction or 0.0)
        await mover.tick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SETTINGS.tick_seconds)


async def redrive(harness: Harness, webhook: Webhook) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookline.cli",
        *("redrive", webhook.name, "-n", webhook.namespace, "--nats-url", harness.nats.url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_stuck_tenant_cannot_make_ingest_refuse_another_tenants_events(tmp_path, nats_server):
    async with Harness(
        tmp_path, nats_server, ingest_args=["--stream-max-bytes", str(STREAM_BYTES)]
    ) as harness:
        hanging = await harness.receiver("team-a", mode=Mode.HANG)
        healthy = await harness.receiver("team-b")
        stuck = await harness.webhook(
            "orders",
            hanging,
            namespace="team-a",
            scope={"database": "dba"},
            maxInFlight=8,
            timeoutSeconds=30,
            maxRequestsPerSecond=5000,
        )
        # team-b keeps up with the flow (the default 50 requests/s would build a backlog of its own).
        other = await harness.webhook(
            "orders",
            healthy,
            namespace="team-b",
            scope={"database": "dbb"},
            maxRequestsPerSecond=5000,
            maxInFlight=16,
        )

        metrics = OperatorMetrics(CollectorRegistry())
        consumers = Consumers(nats_server.url)
        mover = BacklogMover(BacklogBus(consumers), SETTINGS, metrics, webhooks=dict)
        peak = [0.0]
        stop_moving = asyncio.Event()
        loop = asyncio.create_task(keep_moving(mover, peak, stop_moving))
        statuses: dict[str, list[int]] = {"team-a": [], "team-b": []}
        accepted: dict[str, list[str]] = {"team-a": [], "team-b": []}
        try:
            for round_ in range(ROUNDS):
                for tenant, database in (("team-a", "dba"), ("team-b", "dbb")):
                    status, ids = await post(harness, tenant, database, round_ * 100)
                    statuses[tenant].append(status)
                    accepted[tenant] += ids
                await asyncio.sleep(0.1)

            # team-b: every request accepted, every event delivered, nothing dead-lettered.
            assert set(statuses["team-b"]) == {202}, statuses["team-b"]
            await wait_until(
                lambda: healthy.delivered_ids >= set(accepted["team-b"]),
                what="team-b received every event",
                diagnostics=harness.diagnostics,
            )
            b_accounting = await harness.account(other, accepted["team-b"])
            report("team-b beside a stuck team-a, stream limit 1 MiB", b_accounting)
            assert b_accounting.delivered == len(accepted["team-b"]) == ROUNDS * 100
            assert b_accounting.dead_lettered == 0
            # team-a's events were accepted too: its backlog never filled the stream.
            assert set(statuses["team-a"]) == {202}, statuses["team-a"]
            assert len(accepted["team-a"]) == ROUNDS * 100
        finally:
            stop_moving.set()
            await asyncio.wait_for(loop, 90)  # a tick moves at most 2,000 events
            await consumers.close()

        moved = metrics.moved_aside.labels("team-a", "orders")._value.get()
        held = await harness.account(stuck, accepted["team-a"], count_waiting=True)
        report("team-a stuck (receiver hanging), before it recovers", held)
        records = await harness.dead_letters(stuck)
        print(
            f"[fault] stream fill peaked at {100 * peak[0]:.0f}% of {STREAM_BYTES} bytes; moved aside "
            f"{moved:.0f} (dead letters by reason {reasons(records)}); still in team-a's consumer "
            f"{held.waiting}"
        )
        assert held.lost == 0 and held.delivered == 0
        assert held.dead_lettered == moved > 0
        assert reasons(records) == {"backlog_limit": held.dead_lettered}
        assert "high-water mark 60%" in (records[0].last_error or "")
        assert metrics.moved_aside.labels("team-b", "orders")._value.get() == 0

        # team-a's receiver recovers: what stayed in its consumer is delivered, the rest is redriven.
        hanging.set(Mode.OK)
        output = await redrive(harness, stuck)
        assert f"redriven {held.dead_lettered}/{held.dead_lettered}" in output
        await wait_until(
            lambda: hanging.delivered_ids >= set(accepted["team-a"]),
            within=180,
            what="team-a received every event after the redrive",
            diagnostics=harness.diagnostics,
        )
        after = await harness.account(stuck, accepted["team-a"])
        report("team-a after it recovered and its moved events were redriven", after)
        assert after.delivered == ROUNDS * 100 and after.dead_lettered == 0 and after.lost == 0
