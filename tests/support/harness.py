"""Fault-test harness: the real processes wired together on loopback, with switchable receivers.

Pieces, all real: an `EmbeddedNats` (restartable, file store), `hookline ingest` and `hookline
sender --config FILE` as subprocesses (the external contract of DESIGN.md), and aiohttp receivers
on 127.0.0.1 whose behaviour the test switches (answer 2xx, fail with 500, hang past the timeout,
429 with Retry-After, 410). Every test ends with `account(...)`: each event ingest acknowledged is
delivered (a 2xx at its receiver), dead-lettered, or (only after a 410) still waiting in its
consumer; nothing is lost, and duplicate deliveries are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import nats.js.errors
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from hookline.sender.bus import MSG_ID_HEADER, STREAM, pending_of
from hookline.sender.bus.deadletter import DeadLetter, iter_dead_letters
from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate
from hookline.sender.model.bundles import pack
from hookline.sender.model.config import consumer_name, parse_sender_config
from hookline.sender.model.events import parse_event
from hookline.sender.observe.health import bound_port, start_site

LOOPBACK = "127.0.0.1"
# Generous: a loaded 2-core CI machine runs these next to other suites.
WAIT_SECONDS = 120.0
STARTUP_SECONDS = 60.0
# NATS cannot answer just now, which a wait polls through: a cluster electing leaders after losing a
# node (its JetStream meta leader, which creates the consumers that read dead letters, can come seconds
# after the streams' leaders), a server restarting. Anything else (a stream gone, a refusal) still fails.
NATS_NOT_ANSWERING: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.js.errors.ServiceUnavailableError,
)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = WAIT_SECONDS,
    what: str = "condition",
    diagnostics: Callable[[], str | Awaitable[str]] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll until `condition` holds; on timeout the error says what was awaited and shows what
    `diagnostics` (plain or async: process logs, a consumer's state) returns; a diagnostic that fails
    says so in the error instead of replacing it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            extra = f"\n{await _diagnose(diagnostics)}" if diagnostics else ""
            raise AssertionError(f"{what}: not reached within {within:g}s{extra}")
        await asyncio.sleep(interval)


async def _diagnose(diagnostics: Callable[[], str | Awaitable[str]]) -> str:
    try:
        found = diagnostics()
        return await found if isinstance(found, Awaitable) else found
    except Exception as exc:  # the wait's own error matters more than what could not be shown
        return f"(diagnostics failed: {exc!r})"


# ---------------------------------------------------------------------------------------------------------
# Receivers


class Mode(StrEnum):
    OK = "ok"  # 200
    FAIL = "fail"  # 500
    HANG = "hang"  # no answer until released (then 503, never counted as delivered)
    THROTTLE = "throttle"  # 429 with Retry-After
    GONE = "gone"  # 410


@dataclass
class Attempt:
    """One request as the receiver saw it; `status` None while it hangs."""

    event_id: str  # the webhook-id header: the event's id, or a batch's id
    arrived: float  # time.monotonic() in the test process
    status: int | None = None
    answered: float | None = None
    events: tuple[str, ...] = ()  # the ids of the events the request carried (one, or a batch's)


@dataclass
class Receiver:
    """A customer endpoint on 127.0.0.1. Switch `mode` at any time; `then()` queues one-off answers."""

    name: str = "receiver"
    mode: Mode = Mode.OK
    retry_after: str = "2"
    delay: float = 0.0  # think time before answering, to keep a stream of events in flight
    attempts: list[Attempt] = field(default_factory=list)
    url: str = ""
    _queued: deque[Mode] = field(default_factory=deque)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = await start_site(app, LOOPBACK, 0)
        self.url = f"http://{LOOPBACK}:{bound_port(self._runner)}/hooks/copernica.php"
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set(self, mode: Mode, *, retry_after: str | None = None) -> None:
        if mode is Mode.HANG:
            self._released.clear()
        else:
            self._released.set()  # a hung request answers (503) once the receiver stops hanging
        self.mode = mode
        if retry_after is not None:
            self.retry_after = retry_after

    def then(self, *modes: Mode) -> None:
        """Answer the next requests with these modes, one each, before falling back to `mode`."""
        self._queued.extend(modes)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        attempt = Attempt(webhook_id, time.monotonic(), events=carried_ids(webhook_id, body))
        self.attempts.append(attempt)
        mode = self._queued.popleft() if self._queued else self.mode
        if self.delay:
            await asyncio.sleep(self.delay)
        if mode is Mode.HANG:
            await self._released.wait()
            return self._answer(attempt, web.Response(status=503, text="was hanging"))
        if mode is Mode.FAIL:
            return self._answer(attempt, web.Response(status=500, text="broken"))
        if mode is Mode.THROTTLE:
            return self._answer(
                attempt, web.Response(status=429, text="slow down", headers={"Retry-After": self.retry_after})
            )
        if mode is Mode.GONE:
            return self._answer(attempt, web.Response(status=410, text="gone"))
        return self._answer(attempt, web.Response(status=200, text="ok"))

    @staticmethod
    def _answer(attempt: Attempt, response: web.Response) -> web.Response:
        attempt.status = response.status
        attempt.answered = time.monotonic()
        return response

    @property
    def delivered_ids(self) -> set[str]:
        """Every event a 2xx answer took (a batch's events each)."""
        return {e for a in self.attempts if a.status is not None and 200 <= a.status < 300 for e in a.events}

    @property
    def successes(self) -> int:
        """Events taken with a 2xx answer, each time one came (a batch counts its events)."""
        return sum(len(a.events) for a in self.attempts if a.status is not None and 200 <= a.status < 300)

    @property
    def hanging(self) -> int:
        return sum(1 for a in self.attempts if a.status is None)

    def answered_with(self, status: int) -> list[Attempt]:
        return [a for a in self.attempts if a.status == status]


def carried_ids(webhook_id: str, body: bytes) -> tuple[str, ...]:
    """The events a request carried: a JSON batch body's ids, else the one event of webhook-id."""
    if body.startswith(b"["):
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return tuple(str(item["id"]) for item in json.loads(body))
    return (webhook_id,)


# ---------------------------------------------------------------------------------------------------------
# Processes


def log_tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a process's log, for an error that says why something did not happen."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Process:
    """A `hookline ...` subprocess with its log file and health port."""

    label: str
    argv: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hookline.cli", *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what it had in flight is unacknowledged."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        return None if proc is None else terminate(proc, timeout)

    async def wait_ready(self, http: aiohttp.ClientSession, within: float = STARTUP_SECONDS) -> None:
        async def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise AssertionError(f"{self.label} exited ({code}) before ready:\n{log_tail(self.log_path)}")
            try:
                async with http.get(f"{self.base_url}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, within=within, what=f"{self.label} ready", interval=0.1)

    async def metrics(
        self, http: aiohttp.ClientSession
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with http.get(f"{self.base_url}/metrics") as response:
            text = await response.text()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    async def metric(self, http: aiohttp.ClientSession, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in (await self.metrics(http)).items() if n == name and wanted <= ls)


@dataclass
class Webhook:
    """One Webhook under test: its receiver, its config file and its sender replicas."""

    namespace: str
    name: str
    receiver: Receiver
    config_path: Path
    senders: list[Process] = field(default_factory=list)

    @property
    def consumer(self) -> str:
        return consumer_name(self.namespace, self.name)

    @property
    def sender(self) -> Process:
        return self.senders[0]


@dataclass
class Accounting:
    accepted: int
    delivered: int
    dead_lettered: int
    waiting: int  # still in the consumer (expected only after a 410 stopped the Webhook)
    lost: int  # accepted, yet neither delivered, dead-lettered nor waiting
    duplicates: int  # 2xx answers beyond the first for an event
    both: list[str]  # delivered and dead-lettered: must not happen

    def __str__(self) -> str:
        return (
            f"accepted {self.accepted} = delivered {self.delivered} + dead-lettered {self.dead_lettered}"
            f" + waiting {self.waiting} (lost {self.lost}); duplicate deliveries {self.duplicates}"
        )


def click(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "click",
        "recipient": "jane@example.com",
        "ip": "203.0.113.7",
        "original": "https://shop.example.com/sale",
        "tags": ["fault-test"],
    }


class Harness:
    """NATS + ingest + senders + receivers for one test; use `async with Harness(tmp_path, nats_server)`."""

    def __init__(self, tmp_path: Path, nats_server: EmbeddedNats, ingest_args: Sequence[str] = ()) -> None:
        self.tmp = tmp_path
        self.nats = nats_server
        self.ingest_args = list(ingest_args)  # extra `hookline ingest` flags
        self.ingest: Process | None = None
        self.receivers: list[Receiver] = []
        self.webhooks: list[Webhook] = []
        self.http: aiohttp.ClientSession | None = None

    def _auth_args(self) -> list[str]:
        """The extra flags, and --insecure-no-auth unless they give producer tokens (ingest refuses to
        start with neither)."""
        tokens = {"--token-file", "--tokens-file"} & set(self.ingest_args)
        return [*self.ingest_args, *([] if tokens else ["--insecure-no-auth"])]

    async def __aenter__(self) -> Harness:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        port = free_port()
        self.ingest = Process(
            "ingest",
            ["ingest", "--listen", f"{LOOPBACK}:{port}", "--nats-url", self.nats.url, *self._auth_args()],
            self.tmp / "ingest.log",
            port,
        )
        self.ingest.start()
        await self.ingest.wait_ready(self.http)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for webhook in self.webhooks:
            for sender in webhook.senders:
                sender.stop()
        if self.ingest is not None:
            self.ingest.stop()
        for receiver in self.receivers:
            await receiver.stop()
        if self.http is not None:
            await self.http.close()

    def diagnostics(self) -> str:
        parts = []
        for process in self._processes():
            parts.append(f"--- {process.label} log (tail):\n{log_tail(process.log_path)}")
        for receiver in self.receivers:
            statuses: dict[str | None, int] = {}
            for a in receiver.attempts:
                statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
            parts.append(f"--- {receiver.name}: {len(receiver.attempts)} requests {statuses}")
        return "\n".join(parts)

    def _processes(self) -> Iterable[Process]:
        if self.ingest is not None:
            yield self.ingest
        for webhook in self.webhooks:
            yield from webhook.senders

    # --- setup

    async def receiver(self, name: str = "receiver", **kwargs: Any) -> Receiver:
        receiver = await Receiver(name=name, **kwargs).start()
        self.receivers.append(receiver)
        return receiver

    async def webhook(
        self,
        name: str,
        receiver: Receiver,
        *,
        replicas: int = 1,
        namespace: str = "shop",
        scope: dict[str, str] | None = None,
        **delivery: Any,
    ) -> Webhook:
        """Write the sender config (as the operator would) and start `replicas` senders; wait until ready.
        `scope`: spec.database / spec.collection (default: every click)."""
        path = self.tmp / f"{namespace}-{name}-sender.yaml"
        webhook = Webhook(namespace, name, receiver, path)
        for index in range(replicas):
            port = free_port()
            document = {
                "webhook": {"namespace": namespace, "name": name},
                "spec": {
                    "url": receiver.url,
                    "events": ["click"],
                    "format": "json",
                    "delivery": {"timeoutSeconds": 2, "maxAttempts": 10, **delivery},
                    **(scope or {}),
                },
                "nats": {"url": self.nats.url, "consumer": webhook.consumer},
                "listen": f"{LOOPBACK}:{port}",
                "allowNetworks": ["127.0.0.0/8"],
                "allowHttp": True,
                "replicas": replicas,
            }
            parse_sender_config(document)  # a typo here should fail loudly, not as a hung test
            replica_path = path.with_suffix(f".{index}.yaml")
            replica_path.write_text(yaml.safe_dump(document))
            webhook.senders.append(
                Process(
                    f"sender {namespace}/{name}#{index}",
                    ["sender", "--config", str(replica_path)],
                    self.tmp / f"sender-{namespace}-{name}-{index}.log",
                    port,
                )
            )
        self.webhooks.append(webhook)
        for sender in webhook.senders:
            sender.start()
        for sender in webhook.senders:
            await self.started(sender)
        return webhook

    async def started(self, process: Process) -> None:
        assert self.http is not None
        await process.wait_ready(self.http)

    async def restart_sender(self, process: Process) -> None:
        process.stop()
        process.start()
        await self.started(process)

    async def restart_nats(self, down_seconds: float = 0.0) -> None:
        """Stop and start nats-server (same port and store) without blocking the receivers' loop."""
        await asyncio.to_thread(self.nats.restart, down_seconds)

    async def kill_nats(self, down_seconds: float = 0.0) -> None:
        """SIGKILL nats-server (no flush of its consumer state), then start it on the same port and store."""
        proc, self.nats.proc = self.nats.proc, None
        assert proc is not None
        proc.kill()
        await asyncio.to_thread(proc.wait)
        await asyncio.sleep(down_seconds)
        await asyncio.to_thread(self.nats.start)

    # --- traffic

    async def post(self, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        assert self.http is not None and self.ingest is not None
        async with self.http.post(f"{self.ingest.base_url}/v1/events", json=events) as response:
            return response.status, await response.json(content_type=None)

    async def ingest_events(self, count: int, prefix: str = "evt", *, batch: int = 100) -> list[str]:
        """Post `count` click events in batches; every batch must be accepted (202)."""
        accepted: list[str] = []
        for start in range(0, count, batch):
            events = [click(f"{prefix}-{i:05d}") for i in range(start, min(count, start + batch))]
            status, body = await self.post(events)
            assert status == 202, f"ingest answered {status}: {body}"
            accepted.extend(body["accepted"])
        return accepted

    async def publish_bundles(self, count: int, prefix: str = "evt", *, size: int = 50) -> list[str]:
        """Store `count` click events as bundles of `size` (several events per message, as an ingest
        that bundles would), each bundle confirmed by JetStream; the ids, in order."""
        events = [parse_event(click(f"{prefix}-{i:05d}")) for i in range(count)]

        async def publish(js: Any) -> None:
            for start in range(0, count, size):
                part = events[start : start + size]
                payload, headers = pack([event.to_bytes() for event in part])
                headers[MSG_ID_HEADER] = f"bundle:{part[0].id}:{len(part)}"
                await js.publish(part[0].subject, payload, headers=headers)

        await self._js_call(publish)
        return [event.id for event in events]

    # --- inspection (a fresh connection each time: the tests restart nats-server)

    async def stored_messages(self) -> int:
        """Messages the events stream holds (the last sequence: acked ones may be gone already)."""

        async def read(js: Any) -> int:
            return int((await js.stream_info(STREAM)).state.last_seq or 0)

        return await self._js_call(read)

    async def _js_call(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        nc = await nats.connect(
            self.nats.url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1
        )
        try:
            return await call(nc.jetstream())
        finally:
            await nc.close()

    async def dead_letters(self, webhook: Webhook) -> list[DeadLetter]:
        async def read(js: Any) -> list[DeadLetter]:
            return [s.record async for s in iter_dead_letters(js, webhook.namespace, webhook.name)]

        return await self._js_call(read)

    async def waiting(self, webhook: Webhook) -> int:
        """Events in the Webhook's consumer not yet settled (pending plus unacknowledged)."""

        async def read(js: Any) -> int:
            return pending_of(await js.consumer_info(STREAM, webhook.consumer))

        return await self._js_call(read)

    async def account(
        self, webhook: Webhook, accepted: Iterable[str], *, count_waiting: bool = False
    ) -> Accounting:
        """Where each accepted event is now. Waiting events are counted only when asked (after a 410)."""
        accepted_ids = set(accepted)
        delivered = webhook.receiver.delivered_ids & accepted_ids
        dead = {d.event_id for d in await self.dead_letters(webhook)} & accepted_ids
        waiting = await self.waiting(webhook) if count_waiting else 0
        return Accounting(
            accepted=len(accepted_ids),
            delivered=len(delivered),
            dead_lettered=len(dead),
            waiting=waiting,
            lost=max(0, len(accepted_ids - delivered - dead) - waiting),
            duplicates=webhook.receiver.successes - len(webhook.receiver.delivered_ids),
            both=sorted(delivered & dead),
        )

    async def settled(
        self, webhook: Webhook, accepted: Iterable[str], *, within: float = WAIT_SECONDS
    ) -> Accounting:
        """Wait until every accepted event is delivered or dead-lettered, then account for them."""
        accepted_ids = set(accepted)
        last: list[Accounting] = []
        unanswered: list[str] = []  # why the last look could not be taken (NATS not answering)

        async def done() -> bool:
            try:
                accounting = await self.account(webhook, accepted_ids)
            except NATS_NOT_ANSWERING as exc:  # e.g. no meta leader yet after a node was killed
                unanswered[:] = [f"NATS not answering: {type(exc).__name__} {exc}"]
                return False
            last[:] = [accounting]
            unanswered.clear()
            return accounting.lost == 0

        await wait_until(
            done,
            within=within,
            what=f"every accepted event of {webhook.name} delivered or dead-lettered",
            diagnostics=lambda: f"{last[0] if last else ''} {''.join(unanswered)}\n{self.diagnostics()}",
            interval=0.5,
        )
        assert not last[0].both, f"delivered and also dead-lettered: {last[0].both[:5]}"
        return last[0]


def reasons(records: Iterable[DeadLetter]) -> dict[str, int]:
    """Dead letters counted by reason."""
    summary: dict[str, int] = {}
    for record in records:
        summary[str(record.reason)] = summary.get(str(record.reason), 0) + 1
    return summary


def report(name: str, accounting: Accounting) -> None:
    """Print the figures of a fault (shown with `pytest -s`, and in the output of a failing test)."""
    print(f"[fault] {name}: {accounting}")
