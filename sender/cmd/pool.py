"""`hookline pool`: one replica of a sender pool, the engines of many Webhooks in the replicas of one
StatefulSet. The protocol shared with the operator is bus/poolproto.py; the replica's runtime is
delivery/poolreplica.py; this is the process around them (flags, NATS, health and metrics site).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket

from aiohttp import web
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.connection import DEFAULT_NATS_URL
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.bus.poolgrants import GrantTable
from hookline.sender.bus.poolproto import (
    PoolError,
    PoolKey,
    assignment_key,
    check_pool_name,
    pool_bucket,
    replica_from_hostname,
)
from hookline.sender.cmd.argtypes import positive_int
from hookline.sender.cmd.natsurl import add_nats_auth_arguments, nats_auth_of
from hookline.sender.delivery.poolreplica import PoolReplica
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams
from hookline.sender.model.config import SenderConfig
from hookline.sender.observe.health import add_health_routes, parse_listen, run_service, start_site
from hookline.sender.observe.logs import add_log_format_argument
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy
from hookline.tasks import cancel_until_done

log = logging.getLogger("hookline.sender.cmd.pool")

# A dedicated sender's default maxInFlight is far below this; 100 Webhooks of a replica to one server
# at 32 each would hold 3,200 connections to it (bench/pool.py: the receiver's cost per request grows).
DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="the pool's name (chart: senderPools[].name)")
    add_log_format_argument(parser)
    parser.add_argument(
        "--replica",
        type=int,
        help="this replica's number (default: the StatefulSet pod ordinal from the host name)",
    )
    parser.add_argument("--nats-url", default=DEFAULT_NATS_URL, help="NATS URL")
    add_nats_auth_arguments(parser)
    parser.add_argument("--pool-key-file", required=True, metavar="FILE", help="the mounted pool key")
    parser.add_argument("--listen", default="0.0.0.0:8081", help="HOST:PORT for /metrics, /healthz, /readyz")
    parser.add_argument(
        "--max-in-flight-per-origin",
        type=positive_int,
        default=DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN,
        metavar="N",
        help="requests in flight to one receiver (scheme, host, port) from all of this replica's Webhooks "
        f"together, on top of each one's maxInFlight (default {DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN})",
    )


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    pool = check_pool_name(args.pool)
    replica = args.replica if args.replica is not None else replica_from_hostname(socket.gethostname())
    key = PoolKey.from_file(args.pool_key_file)
    host, port = parse_listen(args.listen, 8081)
    policy = EgressPolicy.from_cli(list(args.allow_network), args.allow_http)

    grants = GrantTable(key, policy)

    def policy_for(cfg: SenderConfig) -> EgressPolicy:
        """This replica's own flags plus the authenticated grant record of the Webhook's namespace
        (bus/poolgrants.py): an entry's allowNetworks/allowHttp never widen them (an entry is data in
        NATS; the replica drops those fields before they get here)."""
        return grants.policy(cfg.webhook.namespace)

    registry = CollectorRegistry()
    closed = asyncio.Event()
    auth = nats_auth_of(args).with_inbox(inbox_prefix(f"pool.{pool}"))
    nc = await bus.connect(
        args.nats_url, name=f"hookline-pool {pool}-{replica}", on_closed=closed.set, auth=auth
    )
    # With its pool's NATS user (natsperms.pool_permissions) the operator makes streams and consumers.
    least_privilege = auth.creds_file is not None
    supervisor = Supervisor(
        nc,
        policy,
        SenderMetrics(registry),
        policy_for=policy_for,
        settings=EngineSettings(manage_consumer=not least_privilege),
        max_in_flight_per_origin=args.max_in_flight_per_origin,
    )
    member = PoolReplica(nc, pool, replica, key, supervisor)
    tasks: list[asyncio.Task[None]] = []
    try:
        if not least_privilege:
            await prepare_streams(nc)
        kv = await pool_bucket(nc.jetstream())
        app = web.Application()
        add_health_routes(app, registry, member.readiness, liveness=lambda: _closed(nc))
        runner = await start_site(app, host, port)

        async def regrant(namespace: str) -> None:
            """A namespace's egress changed: its engines start again under the new policy."""
            for consumer in sorted(supervisor.consumers()):
                if consumer.startswith(f"hookline_{namespace}_"):
                    entry = await kv.get(assignment_key(pool, replica, consumer))
                    supervisor.remove(consumer)
                    member.apply(entry.key, entry.value)

        tasks = [asyncio.create_task(grants.follow(kv, regrant), name="follow grant records")]
        with contextlib.suppress(TimeoutError):  # an unreadable record must not hold the Webhooks
            await asyncio.wait_for(grants.loaded.wait(), 10)
        tasks += [
            asyncio.create_task(member.follow(kv), name="follow assignments"),
            asyncio.create_task(member.report(kv), name="write roster"),
        ]
        log.info("pool %s replica %d started: health on %s:%d", pool, replica, host, port)
        try:
            done = asyncio.create_task(stop.wait())
            lost = asyncio.create_task(closed.wait())
            await asyncio.wait({done, lost}, return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
            lost.cancel()
        finally:
            await cancel_until_done(tasks)  # KV watchers: a plain cancel can be lost on Python 3.11
            await supervisor.close()
            await member.say_stopped(kv)
            await runner.cleanup()
    finally:
        await bus.close_quietly(nc)
    if closed.is_set() and not stop.is_set():
        log.error("pool %s replica %d: the NATS connection was closed for good; exiting", pool, replica)
        return 1
    log.info("pool %s replica %d stopped cleanly", pool, replica)
    return 0


def _closed(nc: bus.NATS) -> str | None:
    return "the NATS connection is closed for good" if nc.is_closed else None


def run(args: argparse.Namespace) -> int:
    exit_codes = {PoolError: 2, bus.BusUnavailable: 2}
    return run_service(lambda stop: serve(args, stop), exit_codes, log, args.log_format, fast_loop=True)
