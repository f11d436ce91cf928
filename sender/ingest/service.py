"""Ingest's HTTP service: `POST /v1/events` validates a request's events (body.py) and publishes them to
JetStream; `GET /v1/schema` (schema.py), `/healthz`, `/readyz` and `/metrics` beside it. The command
that runs it is sender/cmd/ingest.py.

Validation is all or nothing: every event is validated and encoded before any is published, so a 400
publishes nothing. The request succeeds (202) only when the stream confirmed every event. If NATS is
down, slow or full part-way, the answer is 503 (with Retry-After) saying per event what the stream holds
(answer.py: `accepted`, `notAccepted`, `unknown`). Each event is published with its id as `Nats-Msg-Id`,
so a producer that retries with the same ids is stored once within the duplicate window (default 2
minutes); producers that want safe retries therefore send their own `id`s (ingest fills in a random one
otherwise and returns it).

The limits are `IngestSettings` (settings.py): an encoded event must fit the bus with room for its
dead letter (`bus.max_event_bytes` of the server's max_payload, read at connect), gzip/deflate bodies
are inflated only after the request was authorised, a body must arrive within `body_timeout_seconds`,
headers within `header_timeout_seconds`, and at most `max_connections` connections are open (more are
answered 503 and closed). Heavy bodies (compressed or large) are admitted behind a small budget and
prepared in a worker process at idle priority (heavy.py), so hostile ones never slow the small ones.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.publish import publish_reporting
from hookline.sender.ingest.answer import publish_answer
from hookline.sender.ingest.body import (
    Outgoing,
    Rejection,
    check_content_encoding,
    check_content_type,
    costs_the_worker,
    prepare_body,
)
from hookline.sender.ingest.bundled import publish_bundled
from hookline.sender.ingest.heavy import HeavyLane
from hookline.sender.ingest.producers import ProducerAuth
from hookline.sender.ingest.schema import add_schema_route
from hookline.sender.ingest.settings import DEFAULT_INGEST_SETTINGS, IngestSettings
from hookline.sender.observe.health import add_health_routes, start_site
from hookline.sender.observe.metrics import IngestMetrics

log = logging.getLogger(__name__)

__all__ = ["Ingest", "create_app", "read_limited", "start_ingest_site"]

_PRODUCER = web.RequestKey("hookline_producer", str)  # the producer token name, for the metric


def _too_big(limit: int) -> Rejection:
    return Rejection(413, f"body larger than {limit} bytes; send fewer events per request")


async def read_limited(request: web.Request, limit: int, within: float) -> bytes:
    """The body, or 413 as soon as it is known to exceed `limit` bytes (without reading it all);
    408 when it does not arrive within `within` seconds."""
    return b"".join(await read_chunks(request, limit, within))


async def read_chunks(request: web.Request, limit: int, within: float) -> list[bytes]:
    """read_limited's body as the chunks it arrived in (no copy: a heavy body goes to the worker's
    buffer chunk by chunk)."""
    too_big = _too_big(limit)
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
    except TimeoutError:
        raise Rejection(408, f"the body did not arrive within {within:g}s") from None
    return chunks


class Ingest:
    """The request handling of `POST /v1/events`, over a NATS connection that may come and go."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        metrics: IngestMetrics,
        *,
        token: bytes | None = None,
        auth: ProducerAuth | None = None,
        settings: IngestSettings = DEFAULT_INGEST_SETTINGS,
        heavy: HeavyLane | None = None,
    ) -> None:
        """`auth`: the producer tokens (`token`: the one shared token of earlier versions; neither:
        no auth, which only the command's --insecure-no-auth and dev mode ask for)."""
        self.nc = nc
        self.heavy = heavy  # heavy bodies are prepared there (None: on the event loop)
        self.js = js
        self.metrics = metrics
        self.auth = auth or (ProducerAuth.single(token) if token else ProducerAuth.open())
        self.settings = settings
        self.refusing_until = 0.0  # monotonic time until which the store is taken to refuse writes
        self.refusal = ""

    @property
    def max_event_bytes(self) -> int:
        """From the server's max_payload (read at connect, again at each reconnect)."""
        return bus.max_event_bytes(self.nc.max_payload)

    def readiness(self) -> str | None:
        if self.nc.is_closed:
            return "the NATS connection is closed"
        if not self.nc.is_connected:
            return "not connected to NATS"
        if time.monotonic() < self.refusing_until:
            return f"the event stream refuses writes ({self.refusal})"
        self.metrics.store_refusing.set(0)
        return None

    def liveness(self) -> str | None:
        return "the NATS connection is closed for good" if self.nc.is_closed else None

    async def handle_events(self, request: web.Request) -> web.StreamResponse:
        read_body = False
        try:
            response, read_body = await self._accept(request)
        except Rejection as rejection:
            response = web.json_response(rejection.body(), status=rejection.status)
            if rejection.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="hookline"'
            if rejection.retry_after is not None:
                response.headers["Retry-After"] = str(rejection.retry_after)
        except Exception:
            log.exception("ingest: unexpected error; answering 500")
            response = web.json_response({"error": "internal error; nothing was published"}, status=500)
        if not read_body and request.can_read_body:
            # Refused before the body was read: close rather than read (and drain) what is left.
            response.force_close()
        self.metrics.requests.labels(str(response.status)).inc()
        if not self.auth.insecure:
            producer = request.get(_PRODUCER, "unknown")
            self.metrics.producer_requests.labels(producer, str(response.status)).inc()
        return response

    async def _accept(self, request: web.Request) -> tuple[web.Response, bool]:
        producer = self.auth.identify(request.headers.get("Authorization"))
        if producer is not None:
            request[_PRODUCER] = producer.name
        check_content_type(request.content_type)
        encoding = check_content_encoding(request.headers.get("Content-Encoding"))
        try:
            batch = await self._read_and_prepare(request, encoding)
            self.auth.check_databases(producer, batch)  # all or nothing, as a 400
        except Rejection as rejection:
            if rejection.status in (400, 403):
                self.metrics.event_outcomes["rejected"].inc(rejection.rejected_events or 1)
            raise
        return await self._publish(batch), True

    async def _read_and_prepare(self, request: web.Request, encoding: str) -> list[Outgoing]:
        """The body's events. A body heavy by its headers is admitted (a slot, and its bytes reserved
        from the lane's budget) before it is read, one found heavy once read (no Content-Length)
        after; either then waits for its bytes to be covered and is prepared in the heavy lane."""
        settings = self.settings
        limits = (settings.max_body_bytes, self.max_event_bytes, settings.max_events_per_request)
        declared = request.content_length
        if declared is not None and declared > settings.max_body_bytes:
            raise _too_big(settings.max_body_bytes)
        lane = self.heavy
        if lane is not None and costs_the_worker(encoding, declared, settings.heavy_body_bytes):
            async with lane.admission():
                ready_at = lane.reserve(declared or 0)
                chunks = await read_chunks(request, settings.max_body_bytes, settings.body_timeout_seconds)
                if declared is None:
                    ready_at = max(ready_at, lane.reserve(sum(len(chunk) for chunk in chunks)))
                await lane.wait_until(ready_at)
                return await lane.prepare(chunks, encoding, *limits)
        raw = await read_limited(request, settings.max_body_bytes, settings.body_timeout_seconds)
        if lane is not None and costs_the_worker(encoding, len(raw), settings.heavy_body_bytes):
            async with lane.admission():
                await lane.wait_until(lane.reserve(len(raw)))
                return await lane.prepare([raw], encoding, *limits)
        return prepare_body(raw, encoding, *limits)

    async def _publish(self, batch: list[Outgoing]) -> web.Response:
        settings = self.settings
        started = time.perf_counter()
        try:
            if settings.bundle_events > 1:
                report = await publish_bundled(
                    self.nc,
                    self.js,
                    batch,
                    max_events=settings.bundle_events,
                    ack_timeout=settings.publish_timeout_seconds,
                )
            else:
                report = await publish_reporting(
                    self.nc,
                    [(o.subject, o.id, o.data) for o in batch],
                    ack_timeout=settings.publish_timeout_seconds,
                )
        except Exception:
            log.exception("ingest: unexpected error while publishing; answering 500")
            raise Rejection(
                500,
                "internal error while publishing; some events may be stored: retry the same request with "
                "the same ids (events with the same id are stored once)",
            ) from None
        problem = report.problem
        if isinstance(problem, bus.StoreRefused):
            self.refusing_until = time.monotonic() + settings.store_refusal_hold_seconds
            self.refusal = str(problem)
            self.metrics.store_refusing.set(1)
        elif problem is None and self.refusing_until:
            self.refusing_until = 0.0
            self.metrics.store_refusing.set(0)
        answer = publish_answer(
            [o.id for o in batch],
            report.fates,
            None if problem is None else str(problem),
            retry_after=settings.retry_after_seconds,
        )
        if answer.status == 202:
            self.metrics.publish_duration.observe(time.perf_counter() - started)
        else:
            log.warning("ingest: answering %d, %s", answer.status, answer.body["error"])
        self.metrics.event_outcomes["accepted"].inc(answer.stored)
        if answer.duplicates:
            self.metrics.event_outcomes["duplicate"].inc(answer.duplicates)
        response = web.json_response(answer.body, status=answer.status)
        if answer.retry_after is not None:
            response.headers["Retry-After"] = str(answer.retry_after)
        return response


def create_app(ingest: Ingest, registry: CollectorRegistry) -> web.Application:
    # The body limit is enforced by read_limited with a clear message; aiohttp's own cap stays above it.
    app = web.Application(client_max_size=ingest.settings.max_body_bytes + 1024)
    app.router.add_post("/v1/events", ingest.handle_events)
    add_schema_route(app, ingest.settings.max_events_per_request)
    add_health_routes(app, registry, ingest.readiness, liveness=ingest.liveness)
    return app


async def start_ingest_site(
    ingest: Ingest,
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Serve ingest with its connection limits (its settings), over TLS when given a context; bodies
    stay compressed until `inflate`."""
    settings = ingest.settings
    return await start_site(
        create_app(ingest, registry),
        host,
        port,
        max_connections=settings.max_connections,
        idle_timeout=settings.header_timeout_seconds,
        ssl_context=ssl_context,
    )
