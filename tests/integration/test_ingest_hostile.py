"""`POST /v1/events` under hostile input, against a real ingest on a real nats-server (issue 9).

The corpus: encodings, nesting, number forms, sizes, each field of each type missing, null or
mistyped. No case may get a 500 or hang; each 400 names the field; nothing of a refused request
reaches the stream; and ingest keeps its NATS connection (a valid request afterwards gets 202).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from dataplane_helpers import add_witness
from nats.js import api
from prometheus_client import CollectorRegistry

from hookline.api import EVENT_TYPES
from hookline.sender import bus
from hookline.sender.ingest.body import MAX_REPORTED_ERRORS
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.ingest.settings import IngestSettings
from hookline.sender.model.eventtypes import EVENT_SPECS
from hookline.sender.model.examples import example_event
from hookline.sender.model.values import MAX_DEPTH
from hookline.sender.observe.health import bound_port
from hookline.sender.observe.metrics import IngestMetrics

TOKEN = "hostile-test-token"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}


@dataclass
class Target:
    url: str
    ingest: Ingest
    js: Any
    http: aiohttp.ClientSession
    port: int

    async def post(
        self, data: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str], int]:
        client_timeout = aiohttp.ClientTimeout(total=20)
        async with self.http.post(
            f"{self.url}/v1/events", data=data, headers=headers or HEADERS, timeout=client_timeout
        ) as response:
            raw = await response.read()
            return response.status, json.loads(raw), dict(response.headers), len(raw)

    async def stored(self) -> int:
        return (await self.js.stream_info(bus.STREAM)).state.messages


async def serve(nc: Any, js: Any, **limits: Any) -> tuple[Ingest, Any]:
    registry = CollectorRegistry()
    settings = IngestSettings(publish_timeout_seconds=5, **limits)
    ingest = Ingest(nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=settings)
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    return ingest, runner


@pytest.fixture
async def target(nats) -> AsyncIterator[Target]:
    nc, js = nats
    await add_witness(js)
    ingest, runner = await serve(nc, js, header_timeout_seconds=1.0, max_connections=50)
    port = bound_port(runner)
    async with aiohttp.ClientSession() as http:
        yield Target(f"http://127.0.0.1:{port}", ingest, js, http, port)
    await runner.cleanup()


def enc(value: Any) -> bytes:
    return json.dumps(value).encode()


def _valid(event_type: str = "open", **fields: Any) -> dict[str, Any]:
    event = example_event(event_type)
    event.update(fields)
    return event


# ---------------------------------------------------------------------------------------------------------
# The corpus: (id, body, extra headers, the field the 400 must name or None for a body-level refusal)

CASES: list[Any] = []


def case(name: str, body: bytes, field: str | None, headers: dict[str, str] | None = None) -> None:
    CASES.append(pytest.param(body, field, headers or {}, id=name))


# Encodings
case("utf16-body", json.dumps(_valid()).encode("utf-16"), None)
case("utf16le-body", json.dumps(_valid()).encode("utf-16-le"), None)
case("utf32-body", json.dumps(_valid()).encode("utf-32"), None)
case("latin1-body", json.dumps(_valid(recipient="ä@x")).replace("\\u00e4", "ä").encode("latin-1"), None)
case("invalid-utf8", b'{"type": "open", "recipient": "\xff\xfe"}', None)
case("utf8-bom", b"\xef\xbb\xbf" + enc(_valid()), None)
case("lone-surrogate-value", b'{"type":"open","recipient":"\\ud800","ip":"1.2.3.4"}', "recipient")
case("lone-surrogate-low", b'{"type":"open","recipient":"a\\udc00b","ip":"1.2.3.4"}', "recipient")
case(
    "lone-surrogate-key",
    b'{"type":"create","profile":1,"database":"d","parameters":{"\\ud800":1}}',
    "parameters.\\ud800",
)
case(
    "lone-surrogate-in-parameters",
    b'{"type":"create","profile":1,"database":"d","parameters":{"a":["\\udfff"]}}',
    "parameters.a[0]",
)
case("lone-surrogate-tag", b'{"type":"open","recipient":"r","ip":"i","tags":["\\ud83d"]}', "tags[0]")
case("nul-garbage", b"\x00\x00\x00\x00", None)
case("empty-body", b"", None)
case("whitespace-body", b"   \n ", None)
case("truncated-json", b'{"type": "open", "recipient": ', None)
case("trailing-garbage", enc(_valid()) + b"}", None)
case("two-documents", enc(_valid()) + enc(_valid()), None)
case("single-quotes", b"{'type': 'open'}", None)
case("comment", b'{"type": "open" /* x */}', None)
# Nesting
case("deep-array-10000", b"[" * 10000 + b"]" * 10000, None)
case("deep-object-10000", b'{"a":' * 10000 + b"1" + b"}" * 10000, None)
# Parsed or refused as too deep depending on the stack left: either way a 400 with the limit.
case(
    "deep-parameters-976",
    b'{"type":"create","profile":1,"database":"d","parameters":' + b'{"a":' * 976 + b"1" + b"}" * 976 + b"}",
    None,
)
case(
    "deep-parameters-limit-plus-one",
    enc(_valid("create", parameters=json.loads('{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH))),
    "parameters" + ".a" * (MAX_DEPTH - 1),
)
case(
    "deep-list-parameters",
    enc(_valid("create", parameters={"x": json.loads("[" * 40 + "]" * 40)})),
    "parameters.x" + "[0]" * (MAX_DEPTH - 2),
)
case("array-of-arrays", b"[[" + enc(_valid()) + b"]]", "")
# Number forms
case("nan-parameter", b'{"type":"create","profile":1,"database":"d","parameters":{"x":NaN}}', "parameters.x")
case(
    "inf-parameter",
    b'{"type":"create","profile":1,"database":"d","parameters":{"x":Infinity}}',
    "parameters.x",
)
case(
    "neg-inf-parameter",
    b'{"type":"create","profile":1,"database":"d","parameters":{"x":-Infinity}}',
    "parameters.x",
)
case(
    "1e400-parameter",
    b'{"type":"create","profile":1,"database":"d","parameters":{"x":1e400}}',
    "parameters.x",
)
case("-1e400-field", b'{"type":"create","profile":1,"database":"d","fields":{"x":-1e400}}', "fields.x")
case("nan-field", b'{"type":"create","profile":1,"database":"d","fields":{"x":NaN}}', "fields.x")
case("nan-profile", b'{"type":"create","profile":NaN,"database":"d"}', "profile")
case(
    "5000-digit-int",
    b'{"type":"create","profile":1,"database":"d","parameters":{"n":' + b"9" * 5000 + b"}}",
    "parameters.n",
)
case("5000-digit-profile", b'{"type":"create","profile":' + b"7" * 5000 + b',"database":"d"}', "profile")
case(
    "negative-5000-digit",
    b'{"type":"create","profile":1,"database":"d","fields":{"n":-' + b"1" * 5000 + b"}}",
    "fields.n",
)
case("int-2-pow-64", enc(_valid("create", parameters={"n": 2**64})), "parameters.n")
case("int-below-int64", enc(_valid("create", fields={"n": -(2**63) - 1})), "fields.n")
case("huge-time", b'{"type":"open","recipient":"r","ip":"i","time":' + b"1" * 30 + b"}", "time")
case("float-time", enc(_valid(time=1.5)), "time")
case("nan-time", b'{"type":"open","recipient":"r","ip":"i","time":NaN}', "time")
case("string-time", enc(_valid(time="1700000000")), "time")
case("bool-time", enc(_valid(time=True)), "time")
case("negative-time", enc(_valid(time=-5)), "time")
case("time-past-9999", enc(_valid(time=253_402_300_800)), "time")
# Timestamps
FULLWIDTH_ZERO, ARABIC_INDIC_ZERO = 0xFF10, 0x0660


def _digits(zero: int, text: str = "2024-11-05 09:30:00") -> str:
    """The timestamp written with another script's digits (int() reads them; receivers do not)."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


case("timestamp-fullwidth-digits", enc(_valid(timestamp=_digits(FULLWIDTH_ZERO))), "timestamp")
case("timestamp-arabic-indic", enc(_valid(timestamp=_digits(ARABIC_INDIC_ZERO))), "timestamp")
case("timestamp-year-1", enc(_valid(timestamp="0001-01-01 00:00:00")), "timestamp")
case("timestamp-1969", enc(_valid(timestamp="1969-12-31 23:59:59")), "timestamp")
case("timestamp-iso", enc(_valid(timestamp="2024-11-05T09:30:00Z")), "timestamp")
case("timestamp-feb-30", enc(_valid(timestamp="2024-02-30 00:00:00")), "timestamp")
case("timestamp-number", enc(_valid(timestamp=20241105)), "timestamp")
case("timestamp-huge", enc(_valid(timestamp="9" * 100_000)), "timestamp")
case("created-fullwidth", enc(_valid("create", created=_digits(FULLWIDTH_ZERO))), "created")
case("modified-year-1", enc(_valid("update", modified="0001-01-01 00:00:00")), "modified")
# Sizes
case("event-over-max-payload", enc(_valid(useragent="x" * 1_045_000)), "")
case("event-just-over-limit", enc(_valid("create", parameters={"blob": "y" * (1024 * 1024 - 8000)})), "")
case("10001-events", b"[" + b",".join([b"{}"] * 10_001) + b"]", None)
case("10000-empty-objects", b"[" + b",".join([b"{}"] * 10_000) + b"]", "type")
case("100000-empty-objects", b"[" + b",".join([b"{}"] * 100_000) + b"]", None)
case("10000-numbers", b"[" + b",".join([b"1"] * 10_000) + b"]", "")
case("empty-array", b"[]", None)
case("huge-id", enc(_valid(id="a" * 10_000)), "id")
case("id-with-space", enc(_valid(id="a b")), "id")
case("id-unicode", enc(_valid(id="é")), "id")
case("id-number", enc(_valid(id=42)), "id")
case("many-unknown-fields", enc({**_valid(), **{f"k{i}": i for i in range(5000)}}), "k0")
# Top-level shapes
case("json-null", b"null", "")
case("json-number", b"42", "")
case("json-string", b'"open"', "")
case("json-true", b"true", "")
case("array-with-null", enc([_valid(), None]), "")
case("type-missing", enc({"recipient": "r", "ip": "i"}), "type")
case("type-null", enc(_valid(type=None)), "type")
case("type-number", enc(_valid(type=1)), "type")
case("type-list", enc(_valid(type=["open"])), "type")
case("type-unknown", enc(_valid(type="clik")), "type")
case("type-surrogate", b'{"type":"\\ud800"}', "type")
case("unknown-field", enc(_valid(recipent="typo")), "recipent")
case("collection-without-database", enc(_valid("create", database=None, collection="c")), "database")
case("subprofile-without-collection", enc(_valid("create", subprofile=5)), "collection")
case("tags-not-list", enc(_valid(tags="vip")), "tags")
case("tags-with-number", enc(_valid(tags=["a", 1])), "tags[1]")
case("fields-not-object", enc(_valid("create", fields=[1])), "fields")
case("fields-nested-object", enc(_valid("create", fields={"a": {"b": 1}})), "fields.a")
case("interests-with-object", enc(_valid("create", interests=[{}])), "interests[0]")
case("parameters-list", enc(_valid("create", parameters=[])), "parameters")

# Each field of each type: missing (required ones), null (required ones) and mistyped (every one).
_WRONG: dict[str, Any] = {
    "_is_str": 12,
    "_is_nonempty_str": 12,
    "_is_ref": [1],
    "_is_str_or_int": {"a": 1},
    "_is_str_list": "x",
    "_is_object": "x",
    "_is_timestamp": 5,
}
for _type in EVENT_TYPES:
    _spec = EVENT_SPECS[_type]
    for _name, _check in _spec.required.items():
        _missing = _valid(_type)
        _missing.pop(_name, None)
        case(f"{_type}-{_name}-missing", enc(_missing), _name)
        case(f"{_type}-{_name}-null", enc(_valid(_type, **{_name: None})), _name)
    for _name, _check in {**_spec.required, **_spec.optional}.items():
        case(f"{_type}-{_name}-mistyped", enc(_valid(_type, **{_name: _WRONG[_check.check.__name__]})), _name)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 100


@pytest.mark.parametrize(("body", "field", "headers"), CASES)
async def test_hostile_body_is_refused_naming_the_field_and_nothing_is_stored(target, body, field, headers):
    started = time.monotonic()
    status, answer, _, size = await target.post(body, {**HEADERS, **headers})
    assert time.monotonic() - started < 15
    assert status == 400, answer
    assert (
        "nothing was published" in answer["error"] or "events" in answer["error"] or "JSON" in answer["error"]
    )
    assert size < 64 * 1024  # error bodies stay small, whatever the request
    if field is not None:
        named = {e["field"] for e in answer["errors"]}
        assert field in named, (field, named)
    assert await target.stored() == 0
    # Still connected to NATS and serving: a valid request is stored.
    status, answer, _, _ = await target.post(enc(_valid()))
    assert status == 202, answer
    assert await target.stored() == 1


# ---------------------------------------------------------------------------------------------------------
# Item 3: a request is validated and encoded whole before anything is published


async def test_a_lone_surrogate_late_in_a_batch_publishes_nothing(target):
    good = [enc(_valid(id=f"ok-{i}")) for i in range(5)]
    bad = b'{"type":"open","recipient":"\\ud800","ip":"1.2.3.4"}'
    status, answer, _, _ = await target.post(b"[" + b",".join([*good, bad]) + b"]")
    assert status == 400
    assert answer["errors"] == [
        {"index": 5, "field": "recipient", "message": "is not valid Unicode text (holds a lone surrogate)"}
    ]
    assert await target.stored() == 0


async def test_an_unexpected_error_is_a_counted_500(target, monkeypatch):
    from hookline.sender.ingest import service as ingest_module

    def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ingest_module, "prepare_body", explode)
    status, answer, _, _ = await target.post(enc(_valid()))
    assert status == 500
    assert "nothing was published" in answer["error"]
    async with target.http.get(f"{target.url}/metrics") as response:
        assert 'hookline_ingest_requests_total{code="500"} 1.0' in await response.text()


# ---------------------------------------------------------------------------------------------------------
# Item 1: the event size limit comes from the server's max_payload; no request can cut ingest off


async def test_an_event_too_large_for_the_bus_gets_400_with_the_limit_and_ingest_stays_connected(nats):
    nc, js = nats
    await add_witness(js)
    _, runner = await serve(nc, js)
    url = f"http://127.0.0.1:{bound_port(runner)}/v1/events"
    limit = bus.max_event_bytes(nc.max_payload)
    # 1,048,511 bytes: under the 1 MiB body limit, over max_payload once the header is added.
    body = enc(_valid(useragent="u" * 1_048_300))
    body = enc(_valid(useragent="u" * (1_048_300 + 1_048_511 - len(body))))
    assert len(body) == 1_048_511
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=body, headers=HEADERS) as response:
                assert response.status == 400
                answer = await response.json()
            assert f"limit of {limit} bytes" in answer["error"]
            assert "useragent" in answer["error"]
            async with http.post(url, data=enc(_valid()), headers=HEADERS) as response:
                assert response.status == 202
            # The largest event ingest accepts is published and fits into its dead letter.
            fits = enc(_valid(useragent=""))
            fits = enc(_valid(useragent="v" * (limit - len(fits) - 100)))
            async with http.post(url, data=fits, headers=HEADERS) as response:
                assert response.status == 202, await response.text()
    finally:
        await runner.cleanup()
    assert nc.is_connected


async def test_a_connection_the_server_closed_fails_liveness(nats_server):
    closed = asyncio.Event()
    nc = await bus.connect(nats_server.url, on_closed=closed.set)
    js = nc.jetstream()
    await bus.ensure_stream(js)
    _, runner = await serve(nc, js)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        # What a too-large publish does to a connection: the server closes it, nats-py gives up.
        await nc.publish("x.y", b"z" * (nc.max_payload - 100), headers={"Pad": "p" * 1000})
        await asyncio.wait_for(closed.wait(), 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 503
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------------------
# Item 4: cheap requests cannot stall ingest


def _bomb(size: int, kind: str = "gzip") -> bytes:
    """`size` bytes of JSON-ish zeros, compressed (a decompression bomb for size >> body limit)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if kind == "gzip" else 15)
    chunk = b" " * (1024 * 1024)
    parts = [compressor.compress(b"[")]
    for _ in range(size // len(chunk)):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(b"]"))
    parts.append(compressor.flush())
    return b"".join(parts)


async def test_decompression_is_bounded_and_never_done_after_a_refusal(target):
    bomb = _bomb(1024 * 1024 * 1024)  # 1 GiB of spaces, ~1 MB compressed
    assert len(bomb) < 1024 * 1024 + 1024
    for headers, expected in (
        ({**HEADERS, "Content-Encoding": "gzip"}, 413),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, 401),
        ({**HEADERS, "Content-Encoding": "br"}, 415),
    ):
        started = time.monotonic()
        status, answer, _, _ = await target.post(bomb, headers)
        assert status == expected, answer
        assert time.monotonic() - started < 2.0
    assert await target.stored() == 0
    # Ordinary compressed requests work.
    for encoding, data in (("gzip", gzip.compress(enc(_valid()))), ("deflate", zlib.compress(enc(_valid())))):
        status, answer, _, _ = await target.post(data, {**HEADERS, "Content-Encoding": encoding})
        assert status == 202, (encoding, answer)


async def test_error_bodies_are_capped(target):
    body = b"[" + b",".join([b"{}"] * 10_000) + b"]"
    status, answer, _, size = await target.post(body)
    assert status == 400
    assert len(answer["errors"]) == MAX_REPORTED_ERRORS
    assert "10000 of 10000 events are invalid" in answer["error"]
    assert f"and {10_000 - MAX_REPORTED_ERRORS} more errors" in answer["error"]
    assert size < 16 * 1024
    # More events than a request may hold: refused before any is validated.
    status, answer, _, size = await target.post(b"[" + b",".join([b"{}"] * 100_000) + b"]")
    assert status == 400
    assert "at most 10000 per request" in answer["error"]
    assert size < 1024


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


async def test_slow_headers_are_cut_off_and_connections_are_bounded(target):
    # Trickling headers: the connection is closed after the header timeout (1 s here).
    sock = await asyncio.to_thread(_connect, target.port)
    try:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        data = await asyncio.to_thread(sock.recv, 1024)  # b"" when the server closes
        assert data == b"" or b"408" in data or b"400" in data
        assert time.monotonic() - started < 8
    finally:
        sock.close()
    # More connections than allowed (50): the extra ones get a 503 and are closed.
    held = [await asyncio.to_thread(_connect, target.port) for _ in range(50)]
    try:
        extra = await asyncio.to_thread(_connect, target.port)
        answer = await asyncio.to_thread(extra.recv, 1024)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()

    # Once they are gone, requests are served again.
    async def served() -> bool:
        async with target.http.post(f"{target.url}/v1/events", data=enc(_valid()), headers=HEADERS) as r:
            return r.status == 202

    deadline = time.monotonic() + 30
    while not await served():
        assert time.monotonic() < deadline, "ingest did not serve again after the connections closed"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_trickling_body_gets_408(nats):
    nc, js = nats
    registry = CollectorRegistry()
    settings = IngestSettings(body_timeout_seconds=0.5)
    ingest = Ingest(nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=settings)
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    port = bound_port(runner)
    sock = await asyncio.to_thread(_connect, port)
    try:
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{"
        )
        sock.sendall(head.encode())
        data = await asyncio.to_thread(sock.recv, 4096)
        assert data.startswith(b"HTTP/1.1 408"), data
    finally:
        sock.close()
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------------------
# Item 5: a full store answers 503 at once, /readyz false, and recovers once events are delivered


async def test_a_full_stream_answers_503_quickly_and_recovers_once_events_are_delivered(nats_server):
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    await bus.ensure_stream(js, max_bytes=1024 * 1024)
    await js.add_consumer(
        bus.STREAM, api.ConsumerConfig(durable_name="slow", ack_policy=api.AckPolicy.EXPLICIT)
    )
    _, runner = await serve(nc, js)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    batch = enc([_valid(useragent="f" * 4000) for _ in range(20)])
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.post(f"{base}/v1/events", data=batch, headers=HEADERS) as response:
                    if response.status == 503:
                        break
                    assert response.status == 202
            else:
                raise AssertionError("the stream never filled up")
            started = time.monotonic()
            async with http.post(f"{base}/v1/events", data=batch, headers=HEADERS) as response:
                assert response.status == 503
                assert response.headers["Retry-After"]
                assert "maximum bytes" in (await response.json())["error"]
            assert time.monotonic() - started < 1.0
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert "refuses writes" in await response.text()
            # The consumer catches up (acks everything): the space is free again, by itself.
            sub = await js.pull_subscribe("hookline.events.>", durable="slow", stream=bus.STREAM)
            while (await js.consumer_info(bus.STREAM, "slow")).num_pending:
                for msg in await sub.fetch(200, timeout=5):
                    await msg.ack_sync()
            # The recovery stream's reader acknowledges what it copied about once a second (flow control):
            # the newest events are released by then.
            for _ in range(50):
                async with http.post(f"{base}/v1/events", data=batch, headers=HEADERS) as response:
                    if response.status == 202:
                        break
                    assert response.status == 503
                await asyncio.sleep(0.1)
            assert response.status == 202
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            assert (await js.stream_info(bus.STREAM)).state.bytes < 200 * 1024
    finally:
        await runner.cleanup()
        await nc.close()
