"""Sender pools: assignment, sealed keys, and `hookline pool` replicas as real processes against a real
nats-server and real receivers on 127.0.0.1. Entries are written with the operator's own PoolDirectory.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from dataplane_helpers import SECRET, Receiver, sender_config, wait_until, wait_until_ready
from standardwebhooks.webhooks import Webhook

from hookline.api import SenderMode, SpecError, parse_webhook_spec
from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.pools import PoolDirectory, pool_entry
from hookline.operator.rules.placement import placement
from hookline.operator.settings import OperatorConfig
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.bus.poolproto import (
    PoolEntry,
    PoolError,
    PoolKey,
    Roster,
    pool_bucket,
    replica_from_hostname,
    replica_of,
    roster_key,
    seal_binding,
)
from hookline.sender.model.events import parse_event
from hookline.sender.model.signing import parse_secret
from hookline.sender.observe.health import bound_port, start_site

POOL_KEY = "k" * 16 + "pool-key-for-tests-only-0123456789"
POOL = "default"
KEY = PoolKey(POOL_KEY)


# --- assignment --------------------------------------------------------------------------------------------


def test_each_replica_gets_a_fair_share_and_adding_one_moves_only_what_the_new_one_takes():
    consumers = [f"hookline_ns{i % 7}_hook-{i}" for i in range(2000)]
    four = {c: replica_of(c, 4) for c in consumers}
    assert all(0 <= r < 4 for r in four.values())
    shares = Counter(four.values())
    assert min(shares.values()) > 2000 / 4 * 0.8 and max(shares.values()) < 2000 / 4 * 1.2
    assert four == {c: replica_of(c, 4) for c in consumers}  # stable: the same answer every time
    five = {c: replica_of(c, 5) for c in consumers}
    moved = [c for c in consumers if four[c] != five[c]]
    assert all(five[c] == 4 for c in moved)  # nothing moves between the old replicas
    assert 2000 / 5 * 0.8 < len(moved) < 2000 / 5 * 1.2
    # Back to four: only the fifth replica's Webhooks move, each back where it was.
    assert {c: replica_of(c, 4) for c in consumers} == four


def test_a_replica_number_comes_from_the_statefulset_pod_name():
    assert replica_from_hostname("hookline-pool-default-0") == 0
    assert replica_from_hostname("hookline-pool-bulk-12") == 12
    with pytest.raises(PoolError, match="--replica N"):
        replica_from_hostname("laptop")


def test_placement_follows_the_spec_then_the_installation_default():
    dedicated = OperatorConfig()
    pooled = OperatorConfig(default_sender_mode=SenderMode.POOL, default_sender_pool="bulk")

    def spec(**sender):
        return parse_webhook_spec({"url": "https://shop.example/h", "events": ["open"], "sender": sender})

    assert placement(spec(), dedicated).mode == SenderMode.DEDICATED
    assert (placement(spec(), pooled).mode, placement(spec(), pooled).pool) == (SenderMode.POOL, "bulk")
    assert placement(spec(pool="vip"), dedicated).pool == "vip"  # a pool name alone means Pool
    assert placement(spec(mode="Dedicated"), pooled).mode == SenderMode.DEDICATED
    assert placement(spec(mode="Pool"), dedicated).pool == "default"
    with pytest.raises(SpecError, match=r"spec\.sender\.pool.*Dedicated"):
        spec(mode="Dedicated", pool="vip")
    with pytest.raises(SpecError, match=r"spec\.sender\.pool"):
        spec(pool="Not_A_Label")


# --- sealed signing keys and entries -----------------------------------------------------------------------


def test_a_sealed_signing_key_opens_only_with_the_same_pool_key_for_the_same_webhook():
    key = PoolKey(POOL_KEY)
    signing = parse_secret(SECRET)
    shop = seal_binding("default", "shop", "uid-1", "https://shop.example/h")
    sealed = key.seal(signing, shop)
    assert SECRET.removeprefix("whsec_") not in sealed and signing.hex() not in sealed
    assert key.open(sealed, shop) == signing
    with pytest.raises(PoolError, match="same pool key Secret"):
        PoolKey("another pool key of at least thirty-two chars").open(sealed, shop)
    for replayed in (
        seal_binding("default", "other", "uid-1", "https://shop.example/h"),  # another Webhook
        seal_binding("default", "shop", "uid-2", "https://shop.example/h"),  # deleted and made again
        seal_binding("default", "shop", "uid-1", "https://attacker.example/h"),  # another URL
    ):
        with pytest.raises(PoolError, match="does not open"):
            key.open(sealed, replayed)
    with pytest.raises(PoolError, match="at least 32 characters"):
        PoolKey("short")


def test_an_entry_carries_no_secret_in_clear_and_reads_back(tmp_path):
    cfg = sender_config("nats://127.0.0.1:4222", "http://127.0.0.1:9/h", secret_file="/var/run/x/secret")
    entry = pool_entry(cfg, parse_secret(SECRET), PoolKey(POOL_KEY))
    data = entry.to_bytes()
    assert b"whsec_" not in data and b"/var/run/x/secret" not in data
    back = PoolEntry.from_bytes(data, source="pool entry a.default.0.x")
    assert back.config.spec == cfg.spec and back.config.signing_secret_file is None
    assert PoolKey(POOL_KEY).open(back.sealed_key or "", back.binding) == parse_secret(SECRET)
    assert not back.config.allow_networks and not back.config.allow_http  # egress is never in an entry
    with pytest.raises(PoolError, match=r"a\.default\.0\.x: not JSON"):
        PoolEntry.from_bytes(b"{", source="pool entry a.default.0.x")
    with pytest.raises(PoolError, match="spec"):
        PoolEntry.from_bytes(b'{"config": {"webhook": {"namespace": "a", "name": "b"}}}', source="entry")
    with pytest.raises(ValueError, match="pool key"):
        pool_entry(cfg, parse_secret(SECRET), None)  # signing without a pool key: refused, not sent unsigned
    with pytest.raises(ValueError, match="pool key"):
        pool_entry(cfg, None, None)  # no entry without a pool key: it could not be authenticated


# --- replicas as processes ---------------------------------------------------------------------------------


class PoolProcess:
    """One `hookline pool` replica as a real process; its log is kept for the failure message."""

    def __init__(self, tmp_path: Path, nats_url: str, replica: int, *, loopback: bool = True) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"pool-{replica}.log"
        key_file = tmp_path / "pool-key"
        key_file.write_text(POOL_KEY + "\n")
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hookline.cli",
                "pool",
                "--pool",
                POOL,
                "--replica",
                str(replica),
                "--nats-url",
                nats_url,
                "--pool-key-file",
                str(key_file),
                "--listen",
                f"127.0.0.1:{self.port}",
                *(["--allow-network", "127.0.0.0/8", "--allow-http"] if loopback else []),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
async def pool_env(tmp_path, nats_server) -> AsyncIterator[dict]:
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    await bus.ensure_stream(js)
    consumers = Consumers(nats_server.url)
    procs: list[PoolProcess] = []
    async with aiohttp.ClientSession() as http:

        async def start(replica: int, *, loopback: bool = True) -> PoolProcess:
            proc = PoolProcess(tmp_path, nats_server.url, replica, loopback=loopback)
            procs.append(proc)
            await wait_until_ready(http, f"{proc.base}/readyz", proc.proc)
            return proc

        try:
            yield {
                "nc": nc,
                "js": js,
                "directory": PoolDirectory(consumers, PoolKey(POOL_KEY)),
                "start": start,
                "http": http,
            }
        finally:
            for proc in procs:
                proc.stop()
            await consumers.close()
            await nc.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """The customer's endpoint on 127.0.0.1, recording every request."""
    endpoint = await Receiver().start()
    yield endpoint
    await endpoint.stop()


async def roster_of(js, replica: int) -> Roster | None:
    kv = await pool_bucket(js)
    try:
        entry = await kv.get(roster_key(POOL, replica))
    except Exception:
        return None
    return Roster.from_bytes(KEY.open_record(entry.key, entry.value)) if entry.value else None


async def wait_roster(js, replica: int, want, what: str, within: float = 90.0) -> Roster:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    roster = None
    while loop.time() < deadline:
        roster = await roster_of(js, replica)
        if roster is not None and want(roster):
            return roster
        await asyncio.sleep(0.2)
    raise AssertionError(f"replica {replica}: {what} not seen within {within:g}s; last roster {roster}")


def open_event(event_id: str, database: str) -> object:
    return parse_event(
        {
            "id": event_id,
            "type": "open",
            "time": 1_700_000_000,
            "recipient": "anna@example.com",
            "database": database,
            "profile": 1,
            "ip": "192.0.2.7",
            "useragent": "Mail/1.0",
            "referer": "",
        }
    )


async def test_one_replica_serves_200_webhooks_and_a_hanging_receiver_holds_up_only_its_own(pool_env):
    nc, js, directory = pool_env["nc"], pool_env["js"], pool_env["directory"]
    receiver = await Receiver().start()
    held = asyncio.Event()
    hanging_started = 0

    async def hang(_: web.Request) -> web.Response:
        nonlocal hanging_started
        hanging_started += 1
        await held.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hang)
    hanging_site = await start_site(app, "127.0.0.1", 0)
    hanging_url = f"http://127.0.0.1:{bound_port(hanging_site)}/stuck"
    key = PoolKey(POOL_KEY)
    await pool_env["start"](0)
    try:
        names = [f"shop-{i}" for i in range(200)]
        for i, name in enumerate(names):
            url = hanging_url if i == 0 else f"{receiver.url}/{name}"
            signing = {"secret_file": "/unused", "format": "json"} if i == 1 else {}
            cfg = sender_config(nc.connected_url.geturl(), url, name=name, database=f"db{i}", **signing)
            entry = pool_entry(cfg, parse_secret(SECRET) if i == 1 else None, key)
            await directory.place(cfg.nats.consumer, entry.to_bytes(), POOL, 0, None)
        consumers = {sender_config("nats://x", "http://x/", name=n).nats.consumer for n in names}
        await wait_roster(js, 0, lambda r: set(r.running) == consumers, "all 200 engines running")

        events = [open_event(f"{n}-{k}", f"db{i}") for i, n in enumerate(names) for k in range(3)]
        await bus.publish_events(nc, js, events)
        healthy = {e.id for e in events if not e.id.startswith("shop-0-")}
        await wait_until(lambda: healthy <= set(receiver.delivered()), 120, "every healthy Webhook's events")
        # Every other Webhook was served while the hanging receiver still held its requests.
        assert hanging_started >= 1 and not held.is_set()
        assert not any(r.path == "/stuck" for r in receiver.requests)
        signed = [r for r in receiver.requests if r.path == "/shop-1"]
        assert signed and all(
            Webhook(SECRET).verify(r.body, {k.lower(): v for k, v in r.headers.items()}) is not None
            for r in signed
        )
        assert all(
            "webhook-signature" not in {k.lower() for k in r.headers}
            for r in receiver.requests
            if r.path == "/shop-2"
        )
    finally:
        held.set()
        await hanging_site.cleanup()
        await receiver.stop()


@pytest.mark.slow
async def test_a_webhook_moves_between_replicas_without_loss_or_a_restart(pool_env, receiver):
    nc, js, directory = pool_env["nc"], pool_env["js"], pool_env["directory"]
    first, second = await pool_env["start"](0), await pool_env["start"](1)
    pids = (first.proc.pid, second.proc.pid)
    cfg = sender_config(nc.connected_url.geturl(), f"{receiver.url}/moving", name="moving", database="db")
    consumer = cfg.nats.consumer
    entry = pool_entry(cfg, None, KEY).to_bytes()
    await directory.place(consumer, entry, POOL, 0, None)
    await wait_roster(js, 0, lambda r: consumer in r.running, "the engine on replica 0")
    published: list[str] = []

    async def trickle(start: int, count: int) -> None:
        for k in range(start, start + count):
            await bus.publish_events(nc, js, [open_event(f"m-{k}", "db")])
            published.append(f"m-{k}")
            await asyncio.sleep(0.01)

    flow = asyncio.create_task(trickle(0, 300))
    await wait_until(lambda: len(receiver.requests) >= 50, 60, "deliveries from replica 0")
    assert await directory.move(consumer, POOL, 1, 0)
    await flow
    await wait_roster(js, 1, lambda r: consumer in r.running, "the engine on replica 1")
    await wait_roster(js, 0, lambda r: consumer not in r.running, "replica 0 let it go")
    await trickle(300, 50)
    await wait_until(lambda: set(published) <= set(receiver.delivered()), 90, "every event delivered")
    counts = Counter(receiver.ids())
    assert set(counts) == set(published)
    # At-least-once: a repeat only for a request in flight at the move (at most maxInFlight).
    assert sum(n - 1 for n in counts.values()) <= cfg.spec.delivery.max_in_flight
    assert (first.proc.poll(), second.proc.poll()) == (None, None)
    assert (first.proc.pid, second.proc.pid) == pids


async def test_a_spec_change_and_a_removal_apply_in_the_running_replica(pool_env, receiver):
    nc, js, directory = pool_env["nc"], pool_env["js"], pool_env["directory"]
    replica = await pool_env["start"](0)
    url = f"{receiver.url}/hook"
    form = sender_config(nc.connected_url.geturl(), url, name="hook", database="db")
    consumer = form.nats.consumer
    await directory.place(consumer, pool_entry(form, None, KEY).to_bytes(), POOL, 0, None)
    await wait_roster(js, 0, lambda r: consumer in r.running, "the engine")
    await bus.publish_events(nc, js, [open_event("before", "db")])
    await wait_until(lambda: "before" in receiver.delivered(), 60, "the form delivery")
    assert receiver.delivered()["before"].headers["Content-Type"].startswith("application/x-www-form")

    as_json = sender_config(nc.connected_url.geturl(), url, name="hook", database="db", format="json")
    await directory.place(consumer, pool_entry(as_json, None, KEY).to_bytes(), POOL, 0, (POOL, 0))
    # The replica swaps the engine in-process (the old one drains first): from some event on,
    # deliveries are JSON. Probe until one is, instead of guessing how long the swap takes.
    as_json_ids: list[str] = []
    for probe in range(120):
        await bus.publish_events(nc, js, [open_event(f"after-{probe}", "db")])
        await wait_until(lambda p=probe: f"after-{p}" in receiver.delivered(), 60, f"probe {probe}")
        request = receiver.delivered()[f"after-{probe}"]
        if request.headers["Content-Type"].startswith("application/json"):
            as_json_ids.append(f"after-{probe}")
            break
    assert as_json_ids, "the spec change never reached the running replica"
    assert json.loads(receiver.delivered()[as_json_ids[0]].body)["id"] == as_json_ids[0]

    await directory.remove(consumer, (POOL, 0))
    await wait_roster(js, 0, lambda r: consumer not in r.running, "the engine removed")
    await bus.publish_events(nc, js, [open_event("kept", "db")])
    await asyncio.sleep(1.5)
    assert "kept" not in receiver.delivered()  # no engine: the event waits in its consumer
    await directory.place(consumer, pool_entry(as_json, None, KEY).to_bytes(), POOL, 0, None)
    await wait_until(lambda: "kept" in receiver.delivered(), 60, "the kept event after re-adding")
    assert replica.proc.poll() is None


async def test_an_entry_the_replica_cannot_open_is_reported_in_its_roster_not_sent_unsigned(
    pool_env, receiver
):
    nc, js, directory = pool_env["nc"], pool_env["js"], pool_env["directory"]
    await pool_env["start"](0)
    cfg = sender_config(nc.connected_url.geturl(), f"{receiver.url}/h", name="foreign", database="db")
    wrong = PoolKey("a pool key of another installation, 32+ chars")
    entry = pool_entry(cfg, parse_secret(SECRET), wrong)
    await directory.place(cfg.nats.consumer, entry.to_bytes(), POOL, 0, None)
    roster = await wait_roster(js, 0, lambda r: cfg.nats.consumer in r.problems, "the refused entry")
    assert "same pool key Secret" in roster.problems[cfg.nats.consumer]
    assert SECRET not in json.dumps(roster.problems)
    await bus.publish_events(nc, js, [open_event("unsigned", "db")])
    await asyncio.sleep(1.5)
    assert receiver.requests == []


@pytest.mark.slow
async def test_a_replica_killed_mid_stream_loses_nothing_once_its_pod_is_back(pool_env, receiver):
    nc, js, directory = pool_env["nc"], pool_env["js"], pool_env["directory"]
    replica = await pool_env["start"](0)
    receiver.delay = 0.1  # slow enough that the kill lands mid-stream on a loaded machine
    names = [f"k-{i}" for i in range(5)]
    for name in names:
        cfg = sender_config(nc.connected_url.geturl(), f"{receiver.url}/{name}", name=name, database=name)
        await directory.place(cfg.nats.consumer, pool_entry(cfg, None, KEY).to_bytes(), POOL, 0, None)
    await wait_roster(js, 0, lambda r: len(r.running) == 5, "five engines")
    events = [open_event(f"{n}-{k}", n) for n in names for k in range(200)]
    flow = asyncio.create_task(bus.publish_events(nc, js, events))
    await wait_until(lambda: len(receiver.requests) >= 100, 60, "deliveries under way")
    replica.proc.kill()  # SIGKILL: no drain, un-acked events stay with their consumers
    replica.proc.wait()
    await flow
    stopped_at = len(receiver.delivered())
    assert stopped_at < len(events)  # the kill did interrupt the stream
    await pool_env["start"](0)  # the StatefulSet's pod again: it reloads its Webhooks from NATS
    await wait_until(lambda: {e.id for e in events} <= set(receiver.delivered()), 120, "every event")
