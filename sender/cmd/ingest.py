"""`hookline ingest`: producers POST events to `/v1/events`; each is validated and published to JetStream.

The command: its flags (limits and timeouts become an `IngestSettings`; durations in the one grammar,
`hookline/durations.py`), the bearer token, the streams' settings (ingest owns them:
`ensure_bus_layout`), the heavy lane's worker process for large bodies (ingest/heavy.py), and the
service until SIGTERM. The request handling is sender/ingest/service.py, the rules of a request
sender/ingest/body.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError
from prometheus_client import CollectorRegistry

from hookline.durations import duration_arg, format_duration
from hookline.sender import bus
from hookline.sender.bus.attemptlog import ensure_attempt_store
from hookline.sender.bus.connection import DEFAULT_NATS_URL, NATS_URL_ENV
from hookline.sender.bus.failedattempts import ensure_failed_attempts_stream
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.bus.poolproto import pool_bucket
from hookline.sender.bus.reservations import ensure_ids_stream
from hookline.sender.cmd.argtypes import positive_int
from hookline.sender.cmd.ingestauth import (
    add_producer_arguments,
    follow_token_files,
    producer_auth_of,
    tls_context_of,
)
from hookline.sender.cmd.natsurl import add_nats_auth_arguments, nats_auth_of
from hookline.sender.ingest.heavy import HeavyLane
from hookline.sender.ingest.producers import ProducerAuth
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.ingest.settings import DEFAULT_INGEST_SETTINGS, IngestSettings
from hookline.sender.model.bundles import MAX_BUNDLE_EVENTS
from hookline.sender.observe.health import parse_listen, run_service, wait_first
from hookline.sender.observe.logs import add_log_format_argument
from hookline.sender.observe.metrics import IngestMetrics

log = logging.getLogger(__name__)

STREAM_RETENTION_ENV = "HOOKLINE_STREAM_RETENTION"
MAX_CONSUMERS_ENV = "HOOKLINE_STREAM_MAX_CONSUMERS"
REPLICAS_ENV = "HOOKLINE_NATS_REPLICAS"


def replicas_count(text: str) -> int:
    value = positive_int(text)
    if value > bus.MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{text!r}: NATS keeps at most {bus.MAX_REPLICAS} replicas")
    return value


def bundle_events_arg(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BUNDLE_EVENTS:
        raise argparse.ArgumentTypeError(f"{text!r}: a bundle holds at most {MAX_BUNDLE_EVENTS} events")
    return value


async def ensure_bus_layout(
    js: JetStreamContext,
    *,
    retention: float,
    duplicate_window: float,
    max_bytes: int,
    max_consumers: int,
    replicas: int,
    stream_retention: str = bus.DEFAULT_STREAM_RETENTION,
    recovery_window: float = bus.DEFAULT_RECOVERY_WINDOW_SECONDS,
    recovery_max_bytes: int = bus.DEFAULT_RECOVERY_MAX_BYTES,
) -> None:
    """Ingest owns the streams' settings: the events stream (limits, consumer limit, replicas), and the
    replicas of the dead letters, the failed-attempt counts, the attempt log and the key-value buckets
    (the failed-attempt counts also take the retention). A refusal (R3 on a single
    server: err_code 10074) is a ValueError naming the setting."""
    try:
        await bus.ensure_stream(
            js,
            retention,
            duplicate_window,
            max_bytes=max_bytes,
            max_consumers=max_consumers,
            replicas=replicas,
            retention=stream_retention,
            recovery_window_seconds=recovery_window,
            recovery_max_bytes=recovery_max_bytes,
        )
        await bus.ensure_dead_letter_stream(js, replicas=replicas, update_existing=True)
        await bus.ensure_floors_bucket(js, replicas)
        await ensure_failed_attempts_stream(js, retention, replicas=replicas, update_existing=True)
        await ensure_ids_stream(js, duplicate_window, replicas)
        await ensure_attempt_store(js, replicas)
        await pool_bucket(js, replicas)  # pool replicas on their least-privileged user may not make it
    except APIError as exc:
        if isinstance(exc, ServiceUnavailableError):
            raise
        raise ValueError(
            f"NATS refused hookline's stream settings (replicas {replicas}, max consumers {max_consumers}): "
            f"{exc.description} (err_code {exc.err_code}); a single server takes only --nats-replicas 1"
        ) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DEFAULT_INGEST_SETTINGS
    add_log_format_argument(parser)
    add_nats_auth_arguments(parser)
    parser.add_argument(
        "--layout-only",
        action="store_true",
        help="make or update the streams and buckets, then exit (the chart's init step, with the layout "
        "credentials; with --nats-creds the service itself may only publish events and skips this)",
    )
    parser.add_argument(
        "--listen", default="0.0.0.0:8080", help="HOST:PORT to serve on (default %(default)s)"
    )
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS server URL (env {NATS_URL_ENV}; default %(default)s)",
    )
    add_producer_arguments(parser)
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        help="largest request body accepted (default %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=duration_arg,
        default=defaults.body_timeout_seconds,
        help="a request body must arrive within this long, else 408 "
        f"(default {format_duration(defaults.body_timeout_seconds)})",
    )
    parser.add_argument(
        "--header-timeout",
        type=duration_arg,
        default=defaults.header_timeout_seconds,
        help="a connection must send a request's headers within this long, and idles at most this long "
        f"between requests (default {format_duration(defaults.header_timeout_seconds)})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open connections at most; more are answered 503 and closed (default %(default)s)",
    )
    parser.add_argument(
        "--stream-max-bytes",
        type=int,
        default=-1,
        help="byte limit of the events stream; when full, new events get 503 (default -1: no limit "
        "but the server's)",
    )
    parser.add_argument(
        "--stream-max-consumers",
        type=positive_int,
        default=os.environ.get(MAX_CONSUMERS_ENV) or str(bus.DEFAULT_MAX_CONSUMERS),  # argparse converts it
        help="consumer limit of the events stream: one consumer per verified Webhook; a lower limit on an "
        f"existing stream is raised, a higher one kept (env {MAX_CONSUMERS_ENV}; default %(default)s; "
        "NATS >= 2.15 allows 1,000 without it)",
    )
    parser.add_argument(
        "--nats-replicas",
        type=replicas_count,
        default=os.environ.get(REPLICAS_ENV) or str(bus.DEFAULT_REPLICAS),
        help="replicas of hookline's streams and buckets: 1 on a single server, 3 on a NATS cluster; "
        f"existing ones are moved to it (env {REPLICAS_ENV}; default %(default)s)",
    )
    parser.add_argument(
        "--stream-retention",
        choices=tuple(bus.STREAM_RETENTIONS),
        default=os.environ.get(STREAM_RETENTION_ENV, bus.DEFAULT_STREAM_RETENTION),
        help="interest: the stream keeps an event until every Webhook that wants it acked it; limits: "
        f"until --retention passes, delivered or not (env {STREAM_RETENTION_ENV}; default %(default)s)",
    )
    parser.add_argument(
        "--recovery-window",
        type=duration_arg,
        default=float(bus.DEFAULT_RECOVERY_WINDOW_SECONDS),
        help="interest retention: how long the recovery stream keeps a copy of every event, so that a "
        "Webhook whose consumer was deleted gets the events it had not acknowledged "
        f"(default {format_duration(bus.DEFAULT_RECOVERY_WINDOW_SECONDS)})",
    )
    parser.add_argument(
        "--recovery-max-bytes",
        type=int,
        default=bus.DEFAULT_RECOVERY_MAX_BYTES,
        help="byte limit of the recovery stream; when full its oldest events go first, shortening the "
        "window (default %(default)s; -1: no limit but the server's)",
    )
    parser.add_argument(
        "--retention",
        type=duration_arg,
        default=float(bus.DEFAULT_RETENTION_SECONDS),
        help="how long the stream keeps events, e.g. 72h (default 72h)",
    )
    parser.add_argument(
        "--duplicate-window",
        type=duration_arg,
        default=float(bus.DEFAULT_DUPLICATE_WINDOW_SECONDS),
        help="repeats of an event id within this window are stored once "
        f"(default {format_duration(bus.DEFAULT_DUPLICATE_WINDOW_SECONDS)})",
    )
    parser.add_argument(
        "--bundle-events",
        type=bundle_events_arg,
        default=defaults.bundle_events,
        help="store the events of one request and subject together, up to this many per NATS message: "
        "every Webhook's sender then pulls and acks one message per bundle; each event keeps its id "
        f"for de-duplication and its own dead letter (1 to {MAX_BUNDLE_EVENTS}; default %(default)s: "
        "each event its own message)",
    )
    parser.add_argument(
        "--publish-timeout",
        type=duration_arg,
        default=defaults.publish_timeout_seconds,
        help="how long to wait for NATS to confirm a batch before answering 503 "
        f"(default {format_duration(defaults.publish_timeout_seconds)})",
    )


def settings_from(args: argparse.Namespace) -> IngestSettings:
    """The handler's limits and timeouts from the flags (the rest keep their defaults)."""
    return IngestSettings(
        max_body_bytes=args.max_body_bytes,
        publish_timeout_seconds=args.publish_timeout,
        body_timeout_seconds=args.body_timeout,
        header_timeout_seconds=args.header_timeout,
        max_connections=args.max_connections,
        bundle_events=args.bundle_events,
    )


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    host, port = parse_listen(args.listen, 8080)
    closed = asyncio.Event()
    layout_only = bool(getattr(args, "layout_only", False))
    # Before NATS: a start without producer tokens (and without --insecure-no-auth) fails right away.
    producers = None if layout_only else producer_auth_of(args, log)
    tls = None if layout_only else tls_context_of(args)
    auth = nats_auth_of(args).with_inbox(inbox_prefix("layout" if layout_only else "ingest"))
    nc = await bus.connect(args.nats_url, name="hookline-ingest", on_closed=closed.set, auth=auth)
    settings = settings_from(args)
    heavy = HeavyLane(
        slots=settings.max_heavy_waiting,
        timeout=settings.heavy_timeout_seconds,
        body_bytes=settings.max_body_bytes,
        bytes_per_second=settings.heavy_bytes_per_second,
        burst_bytes=settings.heavy_burst_bytes,
    )
    try:
        js = nc.jetstream()
        # With credentials (the chart's auth) the layout is the init step's (--layout-only): the
        # service's own user may publish events and nothing else (natsperms.ingest_permissions).
        if layout_only or not auth.creds_file:
            await ensure_bus_layout(
                js,
                retention=args.retention,
                duplicate_window=args.duplicate_window,
                max_bytes=args.stream_max_bytes,
                max_consumers=args.stream_max_consumers,
                replicas=args.nats_replicas,
                stream_retention=args.stream_retention,
                recovery_window=args.recovery_window,
                recovery_max_bytes=args.recovery_max_bytes,
            )
        if layout_only:
            log.info("ingest --layout-only: the streams and buckets are in place")
            return 0
        registry = CollectorRegistry()
        await heavy.start()
        ingest = Ingest(nc, js, IngestMetrics(registry), auth=producers, settings=settings, heavy=heavy)
        runner = await start_ingest_site(ingest, registry, host, port, ssl_context=tls)
        log.info(
            "ingest listening on %s:%d (%s; producers: %s; events up to %d bytes)",
            host,
            port,
            "https" if tls else "http",
            ", ".join(p.name for p in ingest.auth.producers) or "anyone (auth off)",
            ingest.max_event_bytes,
        )

        def swap(fresh: ProducerAuth) -> None:
            ingest.auth = fresh

        reload = asyncio.create_task(follow_token_files(args, lambda: ingest.auth, swap, log))
        try:
            await wait_first(stop, closed)
        finally:
            reload.cancel()
            await runner.cleanup()
    finally:
        await heavy.close()
        await bus.close_quietly(nc)
    if closed.is_set() and not stop.is_set():
        log.error("ingest: the NATS connection was closed for good; exiting so that the pod is restarted")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    exit_codes = {bus.BusUnavailable: 1, ValueError: 2}
    return run_service(lambda stop: serve(args, stop), exit_codes, log, args.log_format)
