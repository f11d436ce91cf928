"""`hookline operator`: the Kopf operator for Webhooks and WebhookTests.

`serve()` runs it in the current event loop (tests and the benchmark call it with a login handler
for the API emulator); `run()` is the command line entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.consumers import Consumers
from hookline.operator.handlers import webhooks as handlers
from hookline.operator.metrics import OperatorMetrics
from hookline.operator.settings import (
    OperatorConfig,
    config_from_env,
    kopf_settings,
    parse_replicas,
    quiet_verification_retries,
)
from hookline.sender.bus.poolproto import PoolKey
from hookline.sender.transport.client import SafeHTTPClient

log = logging.getLogger(__name__)

LoginFn = Callable[..., Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve Webhooks only in this namespace (repeatable; glob patterns allowed); default: all",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--standalone",
        action="store_true",
        default=True,
        help="no peering: this is the only operator instance (default; the chart runs one replica)",
    )
    group.add_argument(
        "--peering", metavar="NAME", help="coordinate with other instances through this KopfPeering"
    )
    parser.add_argument("--health-port", type=int, default=8080, help="GET /healthz port (default 8080)")
    parser.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics port; 0: off (default 9090)"
    )
    parser.add_argument(
        "--nats-replicas",
        type=int,
        help="replicas of each Webhook's JetStream consumer: 1 on a single server, 3 on a cluster "
        "(env HOOKLINE_NATS_REPLICAS; default: as many as the stream)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def build(
    config: OperatorConfig, *, login: LoginFn | None = None, metrics_registry: CollectorRegistry | None = None
) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings, handlers.Runtime]:
    """Registry, settings and shared runtime of one operator instance."""
    registry = kopf.OperatorRegistry()
    settings = kopf_settings(config)
    quiet_verification_retries()
    handlers.register(registry, config)
    # In-cluster service account, else the kubeconfig (through the kubernetes client library).
    kopf.on.login(registry=registry)(login or kopf.login_via_client)
    runtime = handlers.Runtime(
        config=config,
        api=kubeapi.KubeAPI(settings),
        http=SafeHTTPClient(config.egress, max_response_bytes=64 * 1024),
        consumers=Consumers(config.nats_url, timeout=config.nats_connect_timeout),
        metrics=OperatorMetrics(metrics_registry or CollectorRegistry()),
        pool_key=PoolKey.from_file(config.pool_key_file) if config.pool_key_file else None,
    )
    return registry, settings, runtime


async def serve(
    config: OperatorConfig,
    *,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    login: LoginFn | None = None,
    metrics_registry: CollectorRegistry | None = None,
    runtime_hook: Callable[[handlers.Runtime], None] | None = None,
) -> None:
    """Run until ``stop`` is set. Cluster-wide unless ``config.namespaces`` names some."""
    registry, settings, runtime = build(config, login=login, metrics_registry=metrics_registry)
    if runtime_hook is not None:
        runtime_hook(runtime)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=config.peering is None,
            peering_name=config.peering,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=liveness,
            memo=kopf.Memo(runtime=runtime),
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        await handlers.close(runtime)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_env(
            allow_networks=args.allow_network,
            allow_http=args.allow_http,
            namespaces=args.namespace,
            peering=args.peering,
            health_port=args.health_port or None,
            metrics_port=args.metrics_port or None,
            nats_replicas=None if args.nats_replicas is None else parse_replicas(str(args.nats_replicas)),
        )
        if config.pool_key_file:
            PoolKey.from_file(config.pool_key_file)  # unreadable: say so now, not at the first Webhook
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    metrics_registry = CollectorRegistry()
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics_registry)
    return asyncio.run(_main(config, metrics_registry))


async def _main(config: OperatorConfig, metrics_registry: CollectorRegistry) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "hookline operator: NATS %s, sender image %s, %s",
        config.nats_url,
        config.sender_image,
        f"namespaces {', '.join(config.namespaces)}" if config.namespaces else "all namespaces",
    )
    await serve(config, stop=stop, metrics_registry=metrics_registry)
    return 0
