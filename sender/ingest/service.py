"""`hookline ingest`: producers POST events to `/v1/events`; each is validated and published to JetStream.

A request is all or nothing as far as the producer can tell: every event is validated and encoded
before any is published, and the request succeeds (202) only when the stream confirmed every event.
If NATS is down, slow or full the answer is 503 (with Retry-After) and some events of the batch may
already be stored; the producer retries the same batch and, because each event is published with its
id as `Nats-Msg-Id`, the stream drops the repeats within its duplicate window (default 2 minutes).
Producers that want safe retries therefore send their own `id`s (ingest fills in a random one
otherwise and returns it).

Limits hold wherever input enters, each refusal naming the field and the limit: an encoded event
must fit the bus with room for its dead letter (`bus.max_event_bytes` of the server's max_payload,
read at connect), values are bounded (`events.value_problems`), a request holds at most
`MAX_EVENTS_PER_REQUEST` events, gzip/deflate bodies inflate to at most the body limit (and only
after the request was authorised), error bodies list the first `MAX_REPORTED_ERRORS` errors and a
count, a body must arrive within `--body-timeout`, headers within `--header-timeout`, and at most
`--max-connections` connections are open (more are answered 503 and closed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import multiprocessing
import os
import time
import zlib
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.attemptlog import ensure_attempt_store
from hookline.sender.bus.connection import DEFAULT_NATS_URL, NATS_URL_ENV
from hookline.sender.model.events import MAX_DEPTH, Event, EventError, HugeInteger, parse_event, subject_for
from hookline.sender.observe.health import (
    add_health_routes,
    parse_listen,
    run_service,
    start_site,
    wait_first,
)
from hookline.sender.observe.metrics import IngestMetrics

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PUBLISH_TIMEOUT = 5.0
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1000
MAX_EVENTS_PER_REQUEST = 10_000
MAX_REPORTED_ERRORS = 20
# After JetStream refused a publish (stream full), /readyz stays false this long unless a publish
# succeeds first; a producer is told to come back after it.
STORE_REFUSAL_HOLD_SECONDS = 5.0
RETRY_AFTER_SECONDS = 2
# Bodies larger than this (or compressed) are inflated and parsed in a worker process when ingest has
# one, so that a few costly requests never hold up the event loop that answers everyone else; at most
# MAX_HEAVY_WAITING of them wait for it at once (more get 503 with Retry-After).
HEAVY_BODY_BYTES = 64 * 1024
MAX_HEAVY_WAITING = 8
CONTENT_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")
TOKEN_ENV = "HOOKLINE_INGEST_TOKEN"
STREAM_RETENTION_ENV = "HOOKLINE_STREAM_RETENTION"
MAX_CONSUMERS_ENV = "HOOKLINE_STREAM_MAX_CONSUMERS"
REPLICAS_ENV = "HOOKLINE_NATS_REPLICAS"
JSON_CONTENT_TYPES = ("application/json",)


@dataclass
class Rejection(Exception):
    """A request ingest refuses: HTTP status, a message saying what to do, and per-event field errors."""

    status: int
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    retry_after: int | None = None
    rejected_events: int = 0  # events of the request found invalid (errors lists only the first ones)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


def decode_document(body: bytes) -> Any:
    """The JSON document of a body: strict UTF-8 (no UTF-16/32 guessing), bounded nesting, numbers
    kept as written so that `events.value_problems` can name a non-finite or oversized one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(
            400, f"the body is not UTF-8 encoded JSON (byte {exc.start} cannot be decoded as UTF-8)"
        ) from None
    try:
        return json.loads(text, parse_constant=_nonfinite)
    except json.JSONDecodeError as exc:
        raise Rejection(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise Rejection(400, f"JSON nested too deeply; events may nest at most {MAX_DEPTH} levels") from None
    except ValueError:
        # An integer literal past Python's conversion limit (4300 digits): parse again, marking it,
        # so that the error names the field.
        return json.loads(text, parse_constant=_nonfinite, parse_int=_bounded_int)


def _nonfinite(literal: str) -> float:
    return float(literal)  # NaN, Infinity, -Infinity: refused by value_problems, naming the field


def _bounded_int(literal: str) -> int:
    if len(literal) <= 40:
        return int(literal)
    marker = HugeInteger(0)
    marker.digits = len(literal.lstrip("-"))
    return marker


def parse_events_body(
    body: bytes, *, now: float | None = None, max_event_bytes: int | None = None
) -> list[tuple[Event, bytes]]:
    """Decode, validate and encode one event object or a JSON array of them; all must be valid.

    Returns each event with the bytes to publish, so nothing of a refused request is published.
    Errors name the event by its index in the request (0 for a single object) and the field; the
    error body lists the first MAX_REPORTED_ERRORS of them and says how many there were.
    """
    document = decode_document(body)
    items = document if isinstance(document, list) else [document]
    if not items:
        raise Rejection(400, "the array holds no events; send one event object or a non-empty array")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise Rejection(
            400, f"{len(items)} events in one request; send at most {MAX_EVENTS_PER_REQUEST} per request"
        )
    batch: list[tuple[Event, bytes]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(
                {"index": index, "field": "", "message": f"must be a JSON object, not {_json_type(item)}"}
            )
            continue
        try:
            event = parse_event(item, now=now)
        except EventError as exc:
            errors.extend({"index": index, "field": e.field, "message": e.message} for e in exc.errors)
            continue
        data = event.to_bytes()
        if max_event_bytes is not None and len(data) > max_event_bytes:
            errors.append(
                {"index": index, "field": "", "message": _size_message(event, len(data), max_event_bytes)}
            )
            continue
        batch.append((event, data))
    if errors:
        bad = len({e["index"] for e in errors})
        shown = errors[:MAX_REPORTED_ERRORS]
        described = "; ".join(f"events[{e['index']}]{_dotted(e['field'])}: {e['message']}" for e in shown)
        more = f" (and {len(errors) - len(shown)} more errors)" if len(errors) > len(shown) else ""
        raise Rejection(
            400,
            f"{bad} of {len(items)} events are invalid, nothing was published: {described}{more}",
            shown,
            rejected_events=bad,
        )
    return batch


class Outgoing(NamedTuple):
    """One validated event, encoded: what is published and answered."""

    id: str
    subject: str
    data: bytes


def prepare_body(raw: bytes, encoding: str, max_body_bytes: int, max_event_bytes: int) -> list[Outgoing]:
    """Inflate, decode, validate and encode a request body (pure, CPU only): the events to publish,
    or a Rejection. Large bodies run this in a worker process (see Ingest), small ones inline."""
    batch = parse_events_body(inflate(raw, encoding, max_body_bytes), max_event_bytes=max_event_bytes)
    return [Outgoing(event.id, subject_for(event), data) for event, data in batch]


def lower_priority() -> None:
    """In the worker: large bodies get the CPU the event loop (small requests, probes) leaves over."""
    with contextlib.suppress(OSError):
        os.nice(10)


def _prepare_in_worker(
    raw: bytes, encoding: str, max_body_bytes: int, max_event_bytes: int
) -> list[Outgoing] | tuple[int, str, list[dict[str, Any]], int]:
    """`prepare_body` in a worker process: a Rejection travels back as a plain tuple."""
    try:
        return prepare_body(raw, encoding, max_body_bytes, max_event_bytes)
    except Rejection as rejection:
        return (rejection.status, rejection.message, rejection.errors, rejection.rejected_events)


def _size_message(event: Event, size: int, limit: int) -> str:
    fields = {k: len(json.dumps(v, ensure_ascii=False).encode()) for k, v in event.payload.items()}
    largest = max(fields, key=fields.__getitem__)
    return (
        f"the event is {size} bytes encoded, over the limit of {limit} bytes per event (the bus's "
        f"max_payload less room for its dead letter); its largest field is {largest} "
        f"({fields[largest]} bytes)"
    )


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


def check_content_encoding(header: str | None) -> str:
    encoding = (header or "identity").strip().lower()
    if encoding not in CONTENT_ENCODINGS:
        raise Rejection(
            415, f"Content-Encoding {encoding!r} is not supported; send identity, gzip or deflate"
        )
    return encoding


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body inflated to at most `limit` bytes: past that, 413 without inflating more."""
    if encoding == "identity":
        return data
    wbits = 31 if encoding in ("gzip", "x-gzip") else (15 if data[:1] == b"\x78" else -15)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Rejection(400, f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Rejection(413, f"the body inflates to more than {limit} bytes; send fewer events per request")
    if not inflater.eof:
        raise Rejection(400, f"the {encoding} body is truncated")
    return out


async def read_limited(request: web.Request, limit: int, within: float = DEFAULT_BODY_TIMEOUT) -> bytes:
    """The body, or 413 as soon as it is known to exceed `limit` bytes (without reading it all);
    408 when it does not arrive within `within` seconds."""
    too_big = Rejection(413, f"body larger than {limit} bytes; send fewer events per request")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise too_big
                chunks.append(chunk)
    except TimeoutError:
        raise Rejection(408, f"the body did not arrive within {within:g}s") from None
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
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        workers: Executor | None = None,
    ) -> None:
        self.nc = nc
        self.workers = workers
        self.heavy_waiting = 0
        self.js = js
        self.metrics = metrics
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.publish_timeout = publish_timeout
        self.body_timeout = body_timeout
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
        return response

    async def _accept(self, request: web.Request) -> tuple[web.Response, bool]:
        check_bearer(request.headers.get("Authorization"), self.token)
        check_content_type(request.content_type)
        encoding = check_content_encoding(request.headers.get("Content-Encoding"))
        raw = await read_limited(request, self.max_body_bytes, self.body_timeout)
        try:
            batch = await self._prepare(raw, encoding)
        except Rejection as rejection:
            if rejection.status == 400:
                self.metrics.event_outcomes["rejected"].inc(rejection.rejected_events or 1)
            raise
        return await self._publish(batch), True

    async def _prepare(self, raw: bytes, encoding: str) -> list[Outgoing]:
        limits = (self.max_body_bytes, self.max_event_bytes)
        if self.workers is None or (encoding == "identity" and len(raw) <= HEAVY_BODY_BYTES):
            return prepare_body(raw, encoding, *limits)
        if self.heavy_waiting >= MAX_HEAVY_WAITING:
            raise Rejection(
                503,
                "ingest is busy with large requests; retry shortly (smaller batches are served right away)",
                retry_after=1,
            )
        self.heavy_waiting += 1
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.workers, _prepare_in_worker, raw, encoding, *limits)
        finally:
            self.heavy_waiting -= 1
        if isinstance(result, tuple):
            status, message, errors, rejected = result
            raise Rejection(status, message, errors, rejected_events=rejected)
        return result

    async def _publish(self, batch: list[Outgoing]) -> web.Response:
        started = time.perf_counter()
        try:
            duplicates = await bus.publish_encoded(
                self.nc, [(o.subject, o.id, o.data) for o in batch], ack_timeout=self.publish_timeout
            )
        except bus.BusUnavailable as exc:
            if isinstance(exc, bus.StoreRefused):
                self.refusing_until = time.monotonic() + STORE_REFUSAL_HOLD_SECONDS
                self.refusal = str(exc)
                self.metrics.store_refusing.set(1)
            log.warning("ingest: answering 503, %s", exc)
            raise Rejection(
                503,
                f"the event bus is unavailable ({exc}); nothing was accepted, retry the same request "
                "later (events with the same id are stored once)",
                retry_after=RETRY_AFTER_SECONDS,
            ) from exc
        if self.refusing_until:
            self.refusing_until = 0.0
            self.metrics.store_refusing.set(0)
        self.metrics.publish_duration.observe(time.perf_counter() - started)
        dup_ids = [o.id for o, dup in zip(batch, duplicates, strict=True) if dup]
        self.metrics.event_outcomes["accepted"].inc(len(batch) - len(dup_ids))
        if dup_ids:
            self.metrics.event_outcomes["duplicate"].inc(len(dup_ids))
        return web.json_response({"accepted": [o.id for o in batch], "duplicates": dup_ids}, status=202)


def create_app(ingest: Ingest, registry: CollectorRegistry) -> web.Application:
    # The body limit is enforced by read_limited with a clear message; aiohttp's own cap stays above it.
    app = web.Application(client_max_size=ingest.max_body_bytes + 1024)
    app.router.add_post("/v1/events", ingest.handle_events)
    add_health_routes(app, registry, ingest.readiness, liveness=ingest.liveness)
    return app


async def start_ingest_site(
    ingest: Ingest,
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
) -> web.AppRunner:
    """Serve ingest with its connection limits; bodies stay compressed until `inflate` (bounded)."""
    return await start_site(
        create_app(ingest, registry),
        host,
        port,
        max_connections=max_connections,
        idle_timeout=header_timeout,
    )


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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def replicas_count(text: str) -> int:
    value = positive_int(text)
    if value > bus.MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{text!r}: NATS keeps at most {bus.MAX_REPLICAS} replicas")
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
) -> None:
    """Ingest owns the streams' settings: the events stream (limits, consumer limit, replicas), and the
    replicas of the dead letters, the attempt log and the key-value buckets. A refusal (R3 on a single
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
        )
        await bus.ensure_dead_letter_stream(js, replicas=replicas, update_existing=True)
        await bus.ensure_floors_bucket(js, replicas)
        await ensure_attempt_store(js, replicas)
    except APIError as exc:
        if isinstance(exc, ServiceUnavailableError):
            raise
        raise ValueError(
            f"NATS refused hookline's stream settings (replicas {replicas}, max consumers {max_consumers}): "
            f"{exc.description} (err_code {exc.err_code}); a single server takes only --nats-replicas 1"
        ) from exc


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
        "--body-timeout",
        type=parse_duration,
        default=DEFAULT_BODY_TIMEOUT,
        help="a request body must arrive within this long, else 408 (default 10s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=parse_duration,
        default=DEFAULT_HEADER_TIMEOUT,
        help="a connection must send a request's headers within this long, and idles at most this long "
        "between requests (default 10s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
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
    closed = asyncio.Event()
    nc = await bus.connect(args.nats_url, name="hookline-ingest", on_closed=closed.set)
    workers = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=lower_priority
    )
    try:
        js = nc.jetstream()
        await ensure_bus_layout(
            js,
            retention=args.retention,
            duplicate_window=args.duplicate_window,
            max_bytes=args.stream_max_bytes,
            max_consumers=args.stream_max_consumers,
            replicas=args.nats_replicas,
            stream_retention=args.stream_retention,
        )
        registry = CollectorRegistry()
        ingest = Ingest(
            nc,
            js,
            IngestMetrics(registry),
            token=token,
            max_body_bytes=args.max_body_bytes,
            publish_timeout=args.publish_timeout,
            body_timeout=args.body_timeout,
            workers=workers,
        )
        runner = await start_ingest_site(
            ingest,
            registry,
            host,
            port,
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
        )
        log.info(
            "ingest listening on %s:%d (auth %s, events up to %d bytes)",
            host,
            port,
            "on" if token else "off",
            ingest.max_event_bytes,
        )
        try:
            await wait_first(stop, closed)
        finally:
            await runner.cleanup()
    finally:
        workers.shutdown(wait=False, cancel_futures=True)
        await bus.close_quietly(nc)
    if closed.is_set() and not stop.is_set():
        log.error("ingest: the NATS connection was closed for good; exiting so that the pod is restarted")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    exit_codes = {bus.BusUnavailable: 1, ValueError: 2}
    return run_service(lambda stop: serve(args, stop), exit_codes, log)
