"""`hookline sender --config FILE`: one Webhook's sender process (what the operator's Deployment runs).

Startup: read the config and the signing secret (errors name the file and field, never the secret),
connect to NATS, make sure the stream and this Webhook's consumer exist, then deliver until SIGTERM,
serving `/metrics`, `/healthz` and `/readyz` on `listen`. SIGTERM drains (see engine.py) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.cmd.natsurl import add_nats_auth_arguments, nats_auth_of
from hookline.sender.delivery.credfiles import CredentialFileError, read_credentials
from hookline.sender.delivery.engine import Engine
from hookline.sender.delivery.settings import DEFAULT_ENGINE_SETTINGS, EngineSettings
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams, start_engine
from hookline.sender.model.config import ConfigError, SenderConfig, load_sender_config
from hookline.sender.observe.health import (
    add_health_routes,
    parse_listen,
    run_service,
    start_site,
    wait_first,
)
from hookline.sender.observe.logs import add_log_format_argument
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy

log = logging.getLogger("hookline.sender")


class StartupError(Exception):
    """Something the user has to fix before the sender can run; the message says what."""


@dataclass
class SenderRuntime:
    """One Webhook's engine over a NATS connection it does not own, outside a supervisor (tests that
    drive one engine directly)."""

    cfg: SenderConfig
    engine: Engine
    client: SafeHTTPClient

    @classmethod
    async def create(
        cls,
        nc: bus.NATS,
        cfg: SenderConfig,
        policy: EgressPolicy,
        metrics: SenderMetrics,
        signing_key: bytes | None,
        *,
        label: str = "",
        settings: EngineSettings = DEFAULT_ENGINE_SETTINGS,
    ) -> SenderRuntime:
        await prepare_streams(nc, record_attempts=cfg.record_attempts)
        engine, client = await start_engine(
            nc, cfg, policy, metrics, signing_key, label=label, settings=settings
        )
        return cls(cfg, engine, client)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.engine.run(stop)
        finally:
            await self.client.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="sender config (YAML or JSON)")
    parser.add_argument("--listen", help="HOST:PORT for /metrics, /healthz, /readyz (default: config)")
    parser.add_argument("--nats-url", help="NATS URL (default: the config's nats.url)")
    add_nats_auth_arguments(parser)
    add_log_format_argument(parser)


async def serve(cfg: SenderConfig, args: argparse.Namespace, stop: asyncio.Event) -> int:
    host, port = parse_listen(args.listen or cfg.listen, 8081)
    policy = EgressPolicy.from_cli(
        [*cfg.allow_networks, *args.allow_network], True if cfg.allow_http else args.allow_http
    )
    try:  # signing keys, secret header values, spec.tls: from the mounted Secret files
        key = read_credentials(cfg)
    except CredentialFileError as exc:
        raise StartupError(str(exc)) from None
    registry = CollectorRegistry()
    metrics = SenderMetrics(registry)
    name = f"{cfg.webhook.namespace}/{cfg.webhook.name}"
    closed = asyncio.Event()
    auth = nats_auth_of(args, creds_file=cfg.nats.creds_file, tls_ca_file=cfg.nats.tls_ca_file).with_inbox(
        inbox_prefix(cfg.nats.consumer)
    )
    nc = await bus.connect(
        args.nats_url or cfg.nats.url, name=f"hookline-sender {name}", on_closed=closed.set, auth=auth
    )
    # The engine stops on SIGTERM, or when the connection is closed for good (the pod is restarted).
    done = asyncio.Event()
    watcher = asyncio.create_task(_set_when_any(done, stop, closed))
    # Least-privilege credentials: the operator makes the streams and the consumer (natsperms.py).
    least_privilege = auth.creds_file is not None
    settings = EngineSettings(manage_consumer=not least_privilege)
    supervisor = Supervisor(nc, policy, metrics, settings=settings)
    try:
        if not least_privilege:
            await prepare_streams(nc, record_attempts=cfg.record_attempts)
        # The same runtime as a pool replica's and dev mode's, with one Webhook in it.
        supervisor.apply(cfg, key)
        app = web.Application()
        add_health_routes(app, registry, supervisor.readiness, liveness=lambda: _closed_reason(nc))
        runner = await start_site(app, host, port)
        log.info("sender for %s started: consumer %s, health on %s:%d", name, cfg.nats.consumer, host, port)
        try:
            await done.wait()
        finally:
            await supervisor.close()
            await runner.cleanup()
    finally:
        watcher.cancel()
        await bus.close_quietly(nc)
    if closed.is_set() and not stop.is_set():
        log.error("sender for %s: the NATS connection was closed for good; exiting so the pod restarts", name)
        return 1
    log.info("sender for %s stopped cleanly", name)
    return 0


async def _set_when_any(target: asyncio.Event, *events: asyncio.Event) -> None:
    await wait_first(*events)
    target.set()


def _closed_reason(nc: bus.NATS) -> str | None:
    return "the NATS connection is closed for good" if nc.is_closed else None


def run(args: argparse.Namespace) -> int:
    exit_codes = {ConfigError: 2, StartupError: 2, bus.BusUnavailable: 2, ValueError: 2}
    return run_service(
        lambda stop: serve(load_sender_config(args.config), args, stop),
        exit_codes,
        log,
        args.log_format,
        fast_loop=True,
    )
