"""`hookline operator`: the Kopf operator for Webhooks and WebhookTests.

`register()` puts every handler into a Kopf registry and starts and stops the background loops with
the operator; `serve()` runs it in the current event loop (tests and the benchmark call it with a
login handler for the API emulator), behind leader election when the config asks for it (several
replicas: only the Lease holder runs Kopf, loops/leader.py); `run()` is the command line entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CollectorRegistry, start_http_server

from hookline.api import GROUP, VERSION, WEBHOOK_PLURAL, WEBHOOKTEST_PLURAL
from hookline.api.policy import GRANT_ANNOTATION, POLICY_PLURAL
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters import login as operator_login
from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.leases import LeaseAPI
from hookline.operator.adapters.natsauth import minter_of
from hookline.operator.handlers import credentials, grants, ownership, webhooks, webhooktests
from hookline.operator.handlers.jwks import keys_app, keys_tls_context
from hookline.operator.loops import backlog, expiry, health, natsauth, poolsync, recheck, resumes
from hookline.operator.loops import grants as grants_loop
from hookline.operator.loops.leader import LeaderElector
from hookline.operator.metrics import OperatorMetrics, leader_gauge
from hookline.operator.rules.desired import MANAGED_BY
from hookline.operator.rules.domains import PROOF_CHANGED_ANNOTATION
from hookline.operator.runtime import Runtime, runtime_of
from hookline.operator.settings import (
    OperatorConfig,
    config_from_env,
    dns_nameservers_from,
    kopf_settings,
    parse_replicas,
    quiet_verification_retries,
)
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.poolproto import PoolKey
from hookline.sender.observe.health import start_site
from hookline.sender.observe.logs import add_log_format_argument, configure_logging
from hookline.sender.transport.client import SafeHTTPClient
from hookline.tasks import cancel_until_done

log = logging.getLogger(__name__)

LoginFn = Callable[..., Any]

WEBHOOKS = (GROUP, VERSION, WEBHOOK_PLURAL)
TESTS = (GROUP, VERSION, WEBHOOKTEST_PLURAL)
POLICIES = (GROUP, VERSION, POLICY_PLURAL)
DEPLOYMENTS = ("apps", "v1", "deployments")
SENDER_SELECTOR = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "sender"}


def register(registry: kopf.OperatorRegistry, *, tenancy: bool = False) -> None:
    """Put every handler into ``registry`` (tests run several operators, each with its own)."""
    on = kopf.on
    for cause in (on.create, on.resume):
        cause(*WEBHOOKS, id="reconcile", registry=registry)(webhooks.reconcile_webhook)
    on.update(*WEBHOOKS, id="reconcile", field="spec", registry=registry)(webhooks.reconcile_webhook)
    # A proof that changed outside the reconcile (a WebhookDomain, a lapse found by loops/recheck.py).
    proof_changed = ("metadata", "annotations", PROOF_CHANGED_ANNOTATION)
    on.update(*WEBHOOKS, id="proof", field=proof_changed, registry=registry)(webhooks.reconcile_webhook)
    kopf.index(*ownership.DOMAINS, id=ownership.DOMAIN_INDEX, registry=registry)(ownership.index_domain)
    for cause in (on.create, on.resume):
        cause(*ownership.DOMAINS, id="domain", registry=registry)(ownership.domain_reconcile)
    on.update(*ownership.DOMAINS, id="domain", field="spec", registry=registry)(ownership.domain_reconcile)
    on.event(*ownership.DOMAINS, id="domain-seen", registry=registry)(ownership.domain_seen)
    # A Secret a Webhook reads changed (handlers/credentials.py): the same reconcile, at once.
    changed = ("metadata", "annotations", credentials.SECRETS_CHANGED_ANNOTATION)
    on.update(*WEBHOOKS, id="secrets", field=changed, registry=registry)(webhooks.reconcile_webhook)
    on.event("", "v1", "secrets", id="secrets", registry=registry)(credentials.secret_changed)
    on.event(*WEBHOOKS, id="observe", registry=registry)(webhooks.webhook_seen)
    if tenancy:  # the grants (handlers/grants.py); a changed standing runs the same reconcile
        grants.register(registry, WEBHOOKS, POLICIES)
        standing = ("metadata", "annotations", GRANT_ANNOTATION)
        on.update(*WEBHOOKS, id="grant", field=standing, registry=registry)(webhooks.reconcile_webhook)
    on.delete(*WEBHOOKS, id="consumer", registry=registry)(webhooks.webhook_deleted)
    on.event(*DEPLOYMENTS, id="sender", labels=SENDER_SELECTOR, registry=registry)(webhooks.sender_observed)
    on.event(*poolsync.STATEFULSETS, id="pool", labels=poolsync.POOL_SELECTOR, registry=registry)(
        poolsync.pool_observed
    )
    for cause in (on.create, on.resume):
        cause(*TESTS, id="send", registry=registry)(webhooktests.webhook_test_created)
    on.event(*TESTS, id="track", registry=registry)(webhooktests.webhook_test_seen)
    on.startup(id="background", registry=registry)(start_background)
    on.cleanup(id="background", registry=registry)(stop_background)


async def start_background(memo: Any, **_: Any) -> None:
    """The loops that serve all objects at once (no per-object timers: idle objects cost nothing)."""
    rt = runtime_of(memo)
    # Not awaited here: Kopf logs in only after its startup handlers, and the list needs the API.
    rt.background.append(asyncio.create_task(poolsync.list_pools(rt), name="list sender pools"))
    if natsauth.bootstraps(rt.config.nats_auth):
        rt.background.append(asyncio.create_task(natsauth.load_auth_secret(rt), name="NATS accounts"))
    if rt.config.nats_auth.enabled:
        rt.background.append(asyncio.create_task(natsauth.renew_sender_users(rt), name="renew NATS users"))
        rt.background.append(asyncio.create_task(natsauth.remake_lost_consumers(rt), name="remake consumers"))
    if rt.config.tenancy_enforce:
        rt.background.append(asyncio.create_task(grants_loop.follow_grants(rt), name="apply grants"))
    for job, name in (
        (expiry.expire_webhook_tests, "expire WebhookTests"),
        (health.watch_health_reports, "watch health reports"),
        (health.write_delivery_health, "write status.delivery"),
        (resumes.follow_resumes, "follow resume requests"),
        (poolsync.watch_pool_rosters, "watch pool rosters"),
        (poolsync.mirror_pool_senders, "mirror pool senders"),
        (recheck.recheck_proofs, "re-check ownership proofs"),
        (backlog.move_backlogs, "move stuck backlogs aside"),
    ):
        rt.background.append(asyncio.create_task(job(rt), name=name))


async def stop_background(memo: Any, **_: Any) -> None:
    rt = runtime_of(memo)
    await cancel_until_done(rt.background)
    rt.background.clear()
    # The NATS client's reader, flusher and ping tasks would otherwise outlive Kopf's root tasks, and
    # Kopf waits 5 s for such "hung" tasks before it returns (serve() closes the rest afterwards).
    await rt.consumers.close()


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
        help="no Kopf peering: this is the only operator instance, or leader election picks one (default)",
    )
    group.add_argument(
        "--peering", metavar="NAME", help="coordinate with other instances through this KopfPeering"
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        help="run Kopf only while holding the Lease HOOKLINE_LEADER_ELECTION_LEASE in HOOKLINE_POD_NAMESPACE "
        "(default: on when that variable is set, as the chart does)",
    )
    parser.add_argument("--health-port", type=int, default=8080, help="GET /healthz port (default 8080)")
    parser.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics port; 0: off (default 9090)"
    )
    parser.add_argument(
        "--keys-port",
        type=int,
        default=8082,
        help="JWKS of the Webhooks' public signing keys (/.well-known/jwks.json, /v1/keys/NS/NAME); 0: off",
    )
    parser.add_argument(
        "--keys-tls-cert",
        metavar="PEM",
        help="serve the JWKS over HTTPS with this certificate; env HOOKLINE_KEYS_TLS_CERT",
    )
    parser.add_argument(
        "--keys-tls-key", metavar="PEM", help="the key of --keys-tls-cert; env HOOKLINE_KEYS_TLS_KEY"
    )
    parser.add_argument(
        "--nats-replicas",
        type=int,
        help="replicas of each Webhook's JetStream consumer: 1 on a single server, 3 on a cluster "
        "(env HOOKLINE_NATS_REPLICAS; default: as many as the stream)",
    )
    parser.add_argument(
        "--dns-nameserver",
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="DNS server for TXT ownership proofs (repeatable; env HOOKLINE_DNS_NAMESERVERS; default: the "
        "system resolver)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    add_log_format_argument(parser)


def build(
    config: OperatorConfig, *, login: LoginFn | None = None, metrics_registry: CollectorRegistry | None = None
) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings, Runtime]:
    """Registry, settings and shared runtime of one operator instance."""
    registry = kopf.OperatorRegistry()
    settings = kopf_settings(config)
    quiet_verification_retries()
    register(registry, tenancy=config.tenancy_enforce)
    # In-cluster service account, else the kubeconfig (adapters/login.py; no kubernetes client library).
    # Kopf's client through a session with at most config.api_requests requests at once (watches aside).
    bounded = operator_login.bounded(login or operator_login.login, config.api_requests)
    kopf.on.login(registry=registry)(bounded)
    nats_auth = config.nats_auth
    runtime = Runtime(
        config=config,
        api=kubeapi.KubeAPI(settings),
        http=SafeHTTPClient(config.egress, max_response_bytes=64 * 1024, limit=config.outbound_connections),
        consumers=Consumers(
            config.nats_url,
            timeout=config.nats_connect_timeout,
            auth=BusAuth(creds_file=nats_auth.creds_file, tls_ca_file=nats_auth.ca_file),
            auth_pending=natsauth.bootstraps(nats_auth),
        ),
        nats_minter=minter_of(
            Path(nats_auth.keys_dir) if nats_auth.keys_dir else None,
            config.nats_url,
            nats_auth.ca_file,
            nats_auth.user_lifetime,
        ),
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
    runtime_hook: Callable[[Runtime], None] | None = None,
    on_lost_leadership: Callable[[str], None] | None = None,
) -> None:
    """Run until ``stop`` is set. Cluster-wide unless ``config.namespaces`` names some.

    With leader election, wait for the Lease first (a standby answers /healthz meanwhile) and stop
    Kopf when it is lost; ``on_lost_leadership`` is then called first (the command exits there)."""
    metrics_registry = metrics_registry or CollectorRegistry()
    if config.leader_election is None:
        await operate(
            config,
            stop=stop,
            ready=ready,
            login=login,
            metrics_registry=metrics_registry,
            runtime_hook=runtime_hook,
            liveness=True,
        )
        return
    leases = LeaseAPI(login or operator_login.login, kopf_settings(config))
    elector = LeaderElector(leases, config.leader_election)
    leading = leader_gauge(metrics_registry)
    health = await _serve_health(config.health_port) if config.health_port else None
    tasks: list[asyncio.Task[Any]] = []
    try:
        if not await elector.acquire(stop):
            return
        leading.set(1)
        working = asyncio.Event()  # Kopf's stop flag
        keeper = asyncio.create_task(elector.keep(), name="keep the Lease")
        stopped = asyncio.create_task(stop.wait(), name="wait for stop")
        kopf_task = asyncio.create_task(
            operate(
                config,
                stop=working,
                ready=ready,
                login=login,
                metrics_registry=metrics_registry,
                runtime_hook=runtime_hook,
                liveness=False,
            ),
            name="kopf",
        )
        tasks = [keeper, stopped, kopf_task]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if keeper.done():
            leading.set(0)
            reason = keeper.result()
            log.warning("leader election: leadership lost (%s); stopping the operator", reason)
            if on_lost_leadership is not None:
                on_lost_leadership(reason)
        working.set()
        await kopf_task
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await elector.release()
        leading.set(0)
        await leases.close()
        if health is not None:
            await health.cleanup()


async def _serve_health(port: int) -> web.AppRunner:
    """/healthz of a replica under leader election, standby or leading (Kopf's own endpoint would
    exist only while it leads, and a standby must not be restarted for waiting)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return await start_site(app, "0.0.0.0", port)


async def operate(
    config: OperatorConfig,
    *,
    stop: asyncio.Event,
    ready: asyncio.Event | None,
    login: LoginFn | None,
    metrics_registry: CollectorRegistry,
    runtime_hook: Callable[[Runtime], None] | None,
    liveness: bool,
) -> None:
    """Kopf with hookline's handlers until ``stop`` is set."""
    registry, settings, runtime = build(config, login=login, metrics_registry=metrics_registry)
    if runtime_hook is not None:
        runtime_hook(runtime)
    endpoint = f"http://0.0.0.0:{config.health_port}/healthz" if liveness and config.health_port else None
    keys = None
    if config.keys_port:
        tls = keys_tls_context(config.keys_tls_cert, config.keys_tls_key)
        keys = await start_site(keys_app(runtime), "0.0.0.0", config.keys_port, ssl_context=tls)
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            standalone=config.peering is None,
            peering_name=config.peering,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=endpoint,
            memo=kopf.Memo(runtime=runtime),
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        if keys is not None:
            await keys.cleanup()
        await runtime.close()


def run(args: argparse.Namespace) -> int:
    try:
        log_format = configure_logging(args.log_format, level=logging.DEBUG if args.verbose else logging.INFO)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        config = config_from_env(
            allow_networks=args.allow_network,
            allow_http=args.allow_http,
            namespaces=args.namespace,
            peering=args.peering,
            health_port=args.health_port or None,
            metrics_port=args.metrics_port or None,
            keys_port=args.keys_port or None,
            keys_tls=(args.keys_tls_cert, args.keys_tls_key) if args.keys_tls_cert else None,
            nats_replicas=None if args.nats_replicas is None else parse_replicas(str(args.nats_replicas)),
            leader_election=args.leader_election,
            log_format=log_format,
        )
        if args.dns_nameserver:
            config = dataclasses.replace(config, dns_nameservers=dns_nameservers_from(args.dns_nameserver))
        if config.pool_key_file:
            PoolKey.from_file(config.pool_key_file)  # unreadable: say so now, not at the first Webhook
        keys_tls_context(config.keys_tls_cert, config.keys_tls_key)  # the same: a bad certificate now
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
    election = config.leader_election
    log.info(
        "hookline operator: NATS %s, sender image %s, %s, %s",
        config.nats_url,
        config.sender_image,
        f"namespaces {', '.join(config.namespaces)}" if config.namespaces else "all namespaces",
        f"leader election as {election.identity} (Lease {election.namespace}/{election.name})"
        if election
        else "standalone",
    )
    await serve(config, stop=stop, metrics_registry=metrics_registry, on_lost_leadership=_exit_now)
    return 0


def _exit_now(reason: str) -> None:
    """A replica that lost the Lease stops at once, before a standby may start: a handler still
    running must not write beside the new leader. Kubernetes restarts it as a standby."""
    log.critical("exiting at once: %s", reason)
    logging.shutdown()
    os._exit(1)
