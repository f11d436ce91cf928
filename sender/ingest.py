"""`hookline ingest`: producers POST events to `/v1/events`; each is validated and published to JetStream.

A request is all or nothing as far as the producer can tell: every event is validated before any is
published, and the request succeeds (202) only when the stream confirmed every event. If NATS is
down or slow the answer is 503 and some events of the batch may already be stored; the producer
retries the same batch and, because each event is published with its id as `Nats-Msg-Id`, the
stream drops the repeats within its duplicate window (default 2 minutes). Producers that want safe
retries therefore send their own `id`s (ingest fills in a random one otherwise and returns it).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.events import Event, EventError, parse_event
from hookline.sender.health import add_health_routes, parse_listen, run_service, start_site
from hookline.sender.metrics import IngestMetrics

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PUBLISH_TIMEOUT = 5.0
TOKEN_ENV = "HOOKLINE_INGEST_TOKEN"
NATS_URL_ENV = "HOOKLINE_NATS_URL"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
JSON_CONTENT_TYPES = ("application/json",)


@dataclass
class Rejection(Exception):
    """A request ingest refuses: HTTP status, a message saying what to do, and per-event field errors."""

    status: int
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


def parse_events_body(body: bytes, *, now: float | None = None) -> list[Event]:
    """Decode and validate one event object or a JSON array of them; all must be valid.

    Errors name the event by its index in the request (0 for a single object) and the field.
    """
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise Rejection(400, "the body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise Rejection(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    items = document if isinstance(document, list) else [document]
    if not items:
        raise Rejection(400, "the array holds no events; send one event object or a non-empty array")
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(
                {"index": index, "field": "", "message": f"must be a JSON object, not {_json_type(item)}"}
            )
            continue
        try:
            events.append(parse_event(item, now=now))
        except EventError as exc:
            errors.extend({"index": index, "field": e.field, "message": e.message} for e in exc.errors)
    if errors:
        described = "; ".join(f"events[{e['index']}]{_dotted(e['field'])}: {e['message']}" for e in errors)
        bad = len({e["index"] for e in errors})
        raise Rejection(
            400,
            f"{bad} of {len(items)} events are invalid, nothing was published: {described}",
            errors,
        )
    return events


def _dotted(name: str) -> str:
    return f".{name}" if name else ""


def _json_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_bearer(header: str | None, token: bytes | None) -> None:
    """Constant-time comparison of `Authorization: Bearer <token>`; no token configured means open."""
    if token is None:
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Rejection(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), token):
        raise Rejection(401, "wrong bearer token")


def check_content_type(content_type: str) -> None:
    if content_type not in JSON_CONTENT_TYPES:
        shown = content_type or "none"
        raise Rejection(415, f"Content-Type must be application/json (got {shown})")


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed `limit` bytes (without reading it all)."""
    too_big = Rejection(413, f"body larger than {limit} bytes; send fewer events per request")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


class Ingest:
    """The request handling of `POST /v1/events`, over a NATS connection that may come and go."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        metrics: IngestMetrics,
        *,
        token: bytes | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        self.nc = nc
        self.js = js
        self.metrics = metrics
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.publish_timeout = publish_timeout

    def readiness(self) -> str | None:
        return None if self.nc.is_connected else "not connected to NATS"

    async def handle_events(self, request: web.Request) -> web.Response:
        try:
            response = await self._accept(request)
        except Rejection as rejection:
            response = web.json_response(rejection.body(), status=rejection.status)
            if rejection.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="hookline"'
        self.metrics.requests.labels(str(response.status)).inc()
        return response

    async def _accept(self, request: web.Request) -> web.Response:
        check_bearer(request.headers.get("Authorization"), self.token)
        check_content_type(request.content_type)
        body = await read_limited(request, self.max_body_bytes)
        try:
            events = parse_events_body(body)
        except Rejection as rejection:
            self.metrics.event_outcomes["rejected"].inc(len({e.get("index") for e in rejection.errors}))
            raise
        started = time.perf_counter()
        try:
            duplicates = await bus.publish_events(self.nc, self.js, events, ack_timeout=self.publish_timeout)
        except bus.BusUnavailable as exc:
            log.warning("ingest: answering 503, %s", exc)
            raise Rejection(
                503,
                f"the event bus is unavailable ({exc}); nothing was accepted, retry the same request "
                "later (events with the same id are stored once)",
            ) from exc
        self.metrics.publish_duration.observe(time.perf_counter() - started)
        dup_ids = [e.id for e, dup in zip(events, duplicates, strict=True) if dup]
        self.metrics.event_outcomes["accepted"].inc(len(events) - len(dup_ids))
        if dup_ids:
            self.metrics.event_outcomes["duplicate"].inc(len(dup_ids))
        return web.json_response({"accepted": [e.id for e in events], "duplicates": dup_ids}, status=202)


def create_app(ingest: Ingest, registry: CollectorRegistry) -> web.Application:
    # The body limit is enforced by read_limited with a clear message; aiohttp's own cap stays above it.
    app = web.Application(client_max_size=ingest.max_body_bytes + 1024)
    app.router.add_post("/v1/events", ingest.handle_events)
    add_health_routes(app, registry, ingest.readiness)
    return app


def parse_duration(text: str) -> float:
    """'72h', '2m', '90s', '1d' or plain seconds, for retention and duplicate window flags."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:])
    number = value[:-1] if factor else value
    try:
        seconds = float(number) * (factor or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 90s, 2m, 72h, 3d") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
    return seconds


def read_token(token_file: str | None, env: dict[str, str] | os._Environ[str] = os.environ) -> bytes | None:
    """The bearer token from a file (Kubernetes Secret mount) or the environment; None leaves ingest open."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            msg = f"hookline ingest: cannot read --token-file {token_file}: {exc.strerror}"
            raise SystemExit(msg) from None
        if not text:
            raise SystemExit(f"hookline ingest: --token-file {token_file} is empty")
        return text.encode()
    value = env.get(TOKEN_ENV, "").strip()
    return value.encode() if value else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default="0.0.0.0:8080", help="HOST:PORT to serve on (default %(default)s)"
    )
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS server URL (env {NATS_URL_ENV}; default %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        help=f"file holding the bearer token producers must send (else env {TOKEN_ENV}; none: no auth)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted (default %(default)s)",
    )
    parser.add_argument(
        "--retention",
        type=parse_duration,
        default=float(bus.DEFAULT_RETENTION_SECONDS),
        help="how long the stream keeps events, e.g. 72h (default 72h)",
    )
    parser.add_argument(
        "--duplicate-window",
        type=parse_duration,
        default=float(bus.DEFAULT_DUPLICATE_WINDOW_SECONDS),
        help="repeats of an event id within this window are stored once (default 2m)",
    )
    parser.add_argument(
        "--publish-timeout",
        type=parse_duration,
        default=DEFAULT_PUBLISH_TIMEOUT,
        help="how long to wait for NATS to confirm a batch before answering 503 (default 5s)",
    )


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    host, port = parse_listen(args.listen, 8080)
    token = read_token(args.token_file)
    nc = await bus.connect(args.nats_url, name="hookline-ingest")
    try:
        js = nc.jetstream()
        await bus.ensure_stream(js, args.retention, args.duplicate_window)
        registry = CollectorRegistry()
        ingest = Ingest(
            nc,
            js,
            IngestMetrics(registry),
            token=token,
            max_body_bytes=args.max_body_bytes,
            publish_timeout=args.publish_timeout,
        )
        runner = await start_site(create_app(ingest, registry), host, port)
        log.info("ingest listening on %s:%d (auth %s)", host, port, "on" if token else "off")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        await nc.drain()
    return 0


def run(args: argparse.Namespace) -> int:
    exit_codes = {bus.BusUnavailable: 1, ValueError: 2}
    return run_service(lambda stop: serve(args, stop), exit_codes, log)
