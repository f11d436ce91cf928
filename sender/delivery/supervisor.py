"""The one in-process runtime of sender engines, for every host: `hookline sender` (one Webhook), a
pool replica (`hookline pool`, many, reloaded from NATS) and `hookline dev` (many, after verification).

A host tells the supervisor what it wants (`apply(cfg, key)`, `remove(consumer)`); each Webhook has
a slot with its own task that brings its engine in line: started, replaced in-process on a config
change (the old engine drains first: what it holds goes back to the stream, at-least-once), stopped
on removal. Slots never wait on each other, so a receiver that hangs, a Webhook whose consumer NATS
refuses or a slow drain holds up only its own Webhook. Each engine keeps its own consumer, HTTP
client (its `maxInFlight`), rate bucket, retries, dead letters, 410 stop and metrics series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hookline.sender import bus
from hookline.sender.bus.attemptlog import AttemptLog, ensure_attempt_log
from hookline.sender.bus.failedattempts import ensure_failed_attempts_stream
from hookline.sender.delivery.engine import Engine
from hookline.sender.delivery.settings import DEFAULT_ENGINE_SETTINGS, EngineSettings
from hookline.sender.model.config import SenderConfig
from hookline.sender.model.credentials import Credentials, as_credentials
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.sharing import EgressSharing
from hookline.sender.transport.tlsmaterial import client_tls_context

log = logging.getLogger("hookline.sender.delivery.supervisor")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after an engine failed to start or stopped by itself


def restart_delay(failures: int) -> float:
    """How long a slot waits before starting its engine again after `failures` failures in a row."""
    return RESTART_DELAYS[min(max(failures, 1), len(RESTART_DELAYS)) - 1]


@dataclass(frozen=True)
class Wanted:
    """What one Webhook's engine should run with (equal values: nothing to do)."""

    cfg: SenderConfig
    signing_key: Credentials | bytes | None  # the Webhook's credentials (bytes: one HMAC key, as before)


async def start_engine(
    nc: bus.NATS,
    cfg: SenderConfig,
    policy: EgressPolicy,
    metrics: SenderMetrics,
    signing_key: Credentials | bytes | None,
    *,
    label: str = "",
    settings: EngineSettings = DEFAULT_ENGINE_SETTINGS,
    sharing: EgressSharing | None = None,
) -> tuple[Engine, SafeHTTPClient]:
    """One Webhook's engine and its own HTTP client (sized to its maxInFlight), its consumer made or
    brought up to date first. The shared streams are the host's to make (`prepare_streams`)."""
    js = nc.jetstream()
    if settings.manage_consumer:
        info = await bus.ensure_consumer(js, cfg)
    else:  # the operator makes it; not there yet: the supervisor tries again
        info = await js.consumer_info(cfg.nats.stream, cfg.nats.consumer)
    spec = cfg.spec
    creds = as_credentials(signing_key)
    tls = client_tls_context(creds.tls if creds else None)  # spec.tls: client certificate, extra CAs
    client = SafeHTTPClient(
        policy, limit=spec.delivery.max_in_flight, ssl=tls, sharing=sharing, share_key=cfg.webhook.namespace
    )
    await client.start()
    attempt_log = None
    if cfg.record_attempts:
        attempt_log = AttemptLog(nc, js, cfg.webhook.namespace, cfg.webhook.name)
    engine = Engine(
        nc,
        js,
        cfg.nats.consumer,
        spec,
        client,
        metrics.bind(cfg.webhook.namespace, cfg.webhook.name, spec.database),
        signing_key=creds,
        namespace=cfg.webhook.namespace,
        name=cfg.webhook.name,
        replicas=cfg.replicas,
        max_age_seconds=cfg.max_age_seconds,
        label=label or f"{cfg.webhook.namespace}/{cfg.webhook.name}",
        consumer_spec=bus.consumer_spec(cfg) if settings.manage_consumer else None,
        attempt_log=attempt_log,
        settings=settings,
        origin_gate=sharing.gate if sharing is not None else None,
        consumer_info=info,
    )
    return engine, client


async def prepare_streams(nc: bus.NATS, *, record_attempts: bool = True) -> None:
    """The streams every engine uses, made once per host (not once per Webhook)."""
    js = nc.jetstream()
    await bus.ensure_stream(js, update_existing=False)
    await bus.ensure_dead_letter_stream(js)
    await ensure_failed_attempts_stream(js)
    if record_attempts:
        await ensure_attempt_log(js)


@dataclass
class Slot:
    """One Webhook in the supervisor: what is wanted, what runs, and why it does not."""

    consumer: str
    webhook: tuple[str, str]  # namespace, name: its metrics series
    wanted: Wanted | None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    engine: Engine | None = None
    running: Wanted | None = None
    problem: str | None = None  # why the engine is not running (start failed, stopped by itself)
    failures: int = 0
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Engines by consumer name; `apply`/`remove` return at once, each slot catches up on its own."""

    def __init__(
        self,
        nc: bus.NATS,
        policy: EgressPolicy,
        metrics: SenderMetrics,
        *,
        on_change: Callable[[], None] | None = None,
        policy_for: Callable[[SenderConfig], EgressPolicy] | None = None,
        settings: EngineSettings = DEFAULT_ENGINE_SETTINGS,
        max_in_flight_per_origin: int | None = None,
    ) -> None:
        self.nc = nc
        # POSTs in flight to one origin from all engines together, over keep-alive connections shared
        # within a namespace (None: each engine's maxInFlight and connections only).
        self.sharing = EgressSharing(max_in_flight_per_origin) if max_in_flight_per_origin else None
        self.policy = policy
        # The egress policy of one Webhook's engine (a pool replica adds what the operator allows).
        self.policy_for = policy_for or (lambda _cfg: policy)
        self.metrics = metrics
        self.settings = settings  # every engine's
        self.slots: dict[str, Slot] = {}
        self.on_change = on_change or (lambda: None)
        self.closing = False

    # --- what the host wants ---------------------------------------------------------------------

    def apply(self, cfg: SenderConfig, signing_key: Credentials | bytes | None) -> str:
        """Run this Webhook's engine with `cfg`: 'added', 'updated' or 'unchanged'."""
        wanted = Wanted(cfg, signing_key)
        consumer = cfg.nats.consumer
        slot = self.slots.get(consumer)
        if slot is not None and slot.wanted == wanted:
            return "unchanged"
        if slot is None or slot.task is None or slot.task.done():
            webhook = (cfg.webhook.namespace, cfg.webhook.name)
            slot = self.slots[consumer] = Slot(consumer, webhook, wanted)
            slot.task = asyncio.create_task(self._keep(slot), name=f"engine {consumer}")
            return "added"
        slot.wanted = wanted
        slot.changed.set()
        return "updated"

    def remove(self, consumer: str) -> bool:
        """Stop this Webhook's engine (it drains first); False when it was not here."""
        slot = self.slots.get(consumer)
        if slot is None or slot.wanted is None:
            return False
        slot.wanted = None
        slot.changed.set()
        return True

    def consumers(self) -> set[str]:
        return {c for c, slot in self.slots.items() if slot.wanted is not None}

    # --- what runs -------------------------------------------------------------------------------

    def engine_readiness(self, consumer: str) -> str | None:
        """None when this Webhook's engine consumes; else why not, in words for /readyz and status."""
        slot = self.slots.get(consumer)
        if slot is None or slot.wanted is None:
            return "no engine for this Webhook here"
        if slot.engine is None or slot.running != slot.wanted:
            return slot.problem or "the engine is starting"
        return slot.engine.readiness()

    def running(self) -> list[str]:
        return sorted(c for c in self.consumers() if self.engine_readiness(c) is None)

    def problems(self) -> dict[str, str]:
        """Engines that are wanted but do not consume, and why."""
        out = {}
        for consumer in sorted(self.consumers()):
            why = self.engine_readiness(consumer)
            if why is not None:
                out[consumer] = why
        return out

    def readiness(self) -> str | None:
        """None when every wanted engine consumes (what `hookline sender`'s /readyz answers)."""
        problems = self.problems()
        if not problems:
            return None
        consumer, why = next(iter(problems.items()))
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{consumer}: {why}{more}"

    async def close(self) -> None:
        """Stop every engine: each drains (finishes its requests, gives back what it holds)."""
        self.closing = True
        for slot in self.slots.values():
            slot.wanted = None
            slot.changed.set()
        tasks = [slot.task for slot in self.slots.values() if slot.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one slot --------------------------------------------------------------------------------

    async def _keep(self, slot: Slot) -> None:
        try:
            while slot.wanted is not None:
                wanted = slot.wanted
                slot.changed.clear()
                await self._run_once(slot, wanted)
                if slot.wanted is not None and slot.wanted == wanted and not slot.changed.is_set():
                    # Stopped by itself or never started: try again later, unless told otherwise.
                    slot.failures += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(slot.changed.wait(), restart_delay(slot.failures))
        finally:
            if self.slots.get(slot.consumer) is slot:
                del self.slots[slot.consumer]
            self.metrics.unbind(*slot.webhook)
            self.on_change()

    async def _run_once(self, slot: Slot, wanted: Wanted) -> None:
        cfg = wanted.cfg
        label = f"{cfg.webhook.namespace}/{cfg.webhook.name}"
        try:
            policy = self.policy_for(cfg)
            engine, client = await start_engine(
                self.nc,
                cfg,
                policy,
                self.metrics,
                wanted.signing_key,
                settings=self.settings,
                sharing=self.sharing,
            )
        except Exception as exc:
            slot.problem = f"the engine did not start: {exc or type(exc).__name__}"
            log.warning("%s: %s; trying again in %g s", label, slot.problem, restart_delay(slot.failures + 1))
            self.on_change()
            return
        stop = asyncio.Event()
        run = asyncio.create_task(engine.run(stop), name=f"deliver {cfg.nats.consumer}")
        slot.engine, slot.running, slot.problem = engine, wanted, None
        started = time.monotonic()
        try:
            consuming = asyncio.create_task(engine.consuming.wait())
            await asyncio.wait({run, consuming}, return_when=asyncio.FIRST_COMPLETED)
            consuming.cancel()
            self.on_change()
            changed = asyncio.create_task(slot.changed.wait())
            await asyncio.wait({run, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stop.set()
            await asyncio.gather(run, return_exceptions=True)
            if run.exception() is not None and slot.wanted == wanted:
                slot.problem = f"the engine stopped: {run.exception()}"
                log.error("%s: %s; starting it again", label, slot.problem)
            elif slot.wanted == wanted and not self.closing:
                slot.problem = "the engine stopped by itself"
            if time.monotonic() - started > 60:
                slot.failures = 0
        finally:
            slot.engine = slot.running = None
            await client.close()
            self.on_change()
