"""Forged and replayed pool entries (issue 19, item 3), against a real nats-server and a real
`hookline pool` replica process: whoever can write the pool bucket but does not hold the pool key
cannot make a replica send anything. Each refusal is in the replica's roster, and no request reaches
the receiver. An entry's egress fields never widen what the replica may reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from dataplane_helpers import SECRET, Receiver, sender_config, wait_until, wait_until_ready
from harness import log_tail

from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.pools import PoolDirectory, pool_entry
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.bus.poolproto import (
    PoolEntry,
    PoolKey,
    Roster,
    assignment_key,
    pool_bucket,
    roster_key,
)
from hookline.sender.model.events import parse_event
from hookline.sender.model.signing import parse_secret

POOL_KEY = "pool key of the forgery tests, at least 32 characters"
POOL = "default"


class Replica:
    """`hookline pool` replica 0 as a process, with loopback allowed or not by its own flags."""

    def __init__(self, tmp_path: Path, nats_url: str, *, loopback: bool) -> None:
        self.port = free_port()
        key_file = tmp_path / "pool-key"
        key_file.write_text(POOL_KEY)
        self.log_path = tmp_path / "pool.log"
        self.log = self.log_path.open("wb")
        flags = ["--allow-network", "127.0.0.0/8", "--allow-http"] if loopback else []
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "hookline.cli", "pool", "--pool", POOL, "--replica", "0"),
                *("--nats-url", nats_url, "--pool-key-file", str(key_file)),
                *("--listen", f"127.0.0.1:{self.port}", *flags),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_tail(self) -> str:
        return "hookline pool log (last 60 lines):\n" + log_tail(self.log_path, 60)


@pytest.fixture
async def env(tmp_path, nats_server) -> AsyncIterator[dict]:
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    await bus.ensure_stream(js)
    consumers = Consumers(nats_server.url)
    receiver = await Receiver().start()
    replicas: list[Replica] = []
    async with aiohttp.ClientSession() as http:

        async def start(loopback: bool) -> Replica:
            replica = Replica(tmp_path, nats_server.url, loopback=loopback)
            replicas.append(replica)
            await wait_until_ready(http, f"http://127.0.0.1:{replica.port}/readyz", replica.proc)
            return replica

        try:
            yield {
                "nc": nc,
                "js": js,
                "kv": await pool_bucket(js),
                "consumers": consumers,
                "directory": PoolDirectory(consumers, PoolKey(POOL_KEY)),
                "receiver": receiver,
                "start": start,
                "http": http,
            }
        finally:
            for replica in replicas:
                replica.stop()
            await receiver.stop()
            await consumers.close()
            await nc.close()


async def roster(kv) -> Roster | None:
    try:
        entry = await kv.get(roster_key(POOL, 0))
    except Exception:
        return None
    return Roster.from_bytes(PoolKey(POOL_KEY).open_record(entry.key, entry.value)) if entry.value else None


async def poll(check, within: float, what: str) -> None:
    """Await `check()` until it is true, or fail naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not seen within {within:g}s")
        await asyncio.sleep(0.1)


async def wait_roster(kv, want, what: str, within: float = 60.0) -> Roster:
    last: list[Roster | None] = [None]

    async def check() -> bool:
        last[0] = await roster(kv)
        return last[0] is not None and want(last[0])

    try:
        await poll(check, within, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last roster {last[0]}") from None
    assert last[0] is not None
    return last[0]


def open_event(event_id: str, database: str) -> object:
    return parse_event(
        {"id": event_id, "type": "open", "time": 1_700_000_000, "recipient": "a@example.com"}
        | {"database": database, "profile": 1, "ip": "192.0.2.7"}
    )


async def test_forged_and_replayed_entries_are_refused_reported_and_send_nothing(env):
    nc, js, kv, directory, receiver = env["nc"], env["js"], env["kv"], env["directory"], env["receiver"]
    url = nc.connected_url.geturl()
    key = PoolKey(POOL_KEY)
    await env["start"](True)

    # Webhook X, placed by the operator's own code: it works.
    victim = sender_config(url, f"{receiver.url}/victim", name="victim", database="victim", secret_file="/x")
    await env["consumers"].ensure(victim)
    real = pool_entry(victim, parse_secret(SECRET), key, uid="uid-victim")
    await directory.place(victim.nats.consumer, real.to_bytes(), POOL, 0, None)
    await wait_roster(kv, lambda r: victim.nats.consumer in r.running, "the victim's engine")
    await bus.publish_events(nc, js, [open_event("to-victim", "victim")])
    await wait_until(lambda: "to-victim" in receiver.delivered(), 30, "the victim's own delivery")
    stored = (await kv.get(assignment_key(POOL, 0, victim.nats.consumer))).value

    def forged(name: str, path: str) -> tuple[str, object]:
        cfg = sender_config(url, f"{receiver.url}/{path}", name=name, database=name)
        return cfg.nats.consumer, cfg

    # 1. No MAC at all: an entry as the old protocol wrote it.
    plain, cfg = forged("plain", "plain")
    await kv.put(assignment_key(POOL, 0, plain), PoolEntry(cfg).to_bytes())
    # 2. A MAC made with another key.
    other, cfg = forged("other-key", "other-key")
    at = assignment_key(POOL, 0, other)
    await kv.put(
        at, PoolKey("someone else's key, also 32 characters long").sign_record(at, PoolEntry(cfg).to_bytes())
    )
    # 3. X's authentic value copied under Y's key.
    copied, _ = forged("copied", "copied")
    await kv.put(assignment_key(POOL, 0, copied), stored)
    # 4. X's value with its URL changed in place (the MAC kept).
    doc = json.loads(stored)
    doc["record"] = doc["record"].replace(f"{receiver.url}/victim", f"{receiver.url}/stolen")
    await kv.put(assignment_key(POOL, 0, victim.nats.consumer), json.dumps(doc).encode())

    want = {
        plain: "not an authenticated record",
        other: "MAC does not match",
        copied: "MAC does not match",
        victim.nats.consumer: "MAC does not match",
    }
    seen = await wait_roster(kv, lambda r: set(want) <= set(r.problems), "every forgery refused")
    for consumer, reason in want.items():
        assert reason in seen.problems[consumer], (consumer, seen.problems[consumer])
    assert victim.nats.consumer not in seen.running  # X's engine stopped: its entry is no longer X's

    # 5. A valid MAC (as if the operator were fooled into signing) over X's consumer with another URL
    # and X's real sealed key: the sealed key is bound to X's identity and URL and does not open.
    replay = PoolEntry(
        victim.model_copy(update={"spec": victim.spec.model_copy(update={"url": f"{receiver.url}/stolen"})}),
        real.sealed_key,
        "uid-victim",
    )
    await directory.place(victim.nats.consumer, replay.to_bytes(), POOL, 0, None)
    await wait_roster(
        kv,
        lambda r: "does not open for this Webhook and URL" in r.problems.get(victim.nats.consumer, ""),
        "the replayed sealed key refused",
    )
    # A witness Webhook on the same replica: once its event (published last) is delivered, the
    # replica has had every earlier event; nothing but the two real Webhooks' requests arrived.
    witness = sender_config(url, f"{receiver.url}/witness", name="witness", database="witness")
    await env["consumers"].ensure(witness)
    await directory.place(witness.nats.consumer, pool_entry(witness, None, key).to_bytes(), POOL, 0, None)
    final = await wait_roster(kv, lambda r: r.running == [witness.nats.consumer], "only the witness runs")
    events = [open_event(f"after-{db}", db) for db in ("victim", "plain", "other-key", "copied")]
    await bus.publish_events(nc, js, [*events, open_event("witness", "witness")])
    await wait_until(lambda: "witness" in receiver.delivered(), 30, "the witness's delivery")
    assert [r.path for r in receiver.requests] == ["/victim", "/witness"]
    assert SECRET not in json.dumps(final.problems) and SECRET.removeprefix("whsec_") not in json.dumps(
        final.problems
    )


async def test_an_entry_cannot_widen_the_replicas_egress(env):
    nc, js, kv, directory, receiver = env["nc"], env["js"], env["kv"], env["directory"], env["receiver"]
    url = nc.connected_url.geturl()
    replica = await env["start"](False)  # this replica may not reach loopback or use http
    widening = {"allow_networks": ["0.0.0.0/0", "::/0"], "allow_http": True}
    targets = {
        "loopback": f"{receiver.url}/widened",
        # refused by the classifier even inside 0.0.0.0/0: no request is ever made to it
        "metadata": "http://169.254.169.254/latest/meta-data/",
    }
    consumers = []
    for name, target in targets.items():
        cfg = sender_config(url, target, name=name, database=name).model_copy(update=widening)
        assert cfg.allow_networks == widening["allow_networks"]
        await env["consumers"].ensure(cfg)
        # signed with the real key, as if the entry came from the operator with egress fields in it
        await directory.place(cfg.nats.consumer, PoolEntry(cfg, None, "uid").to_bytes(), POOL, 0, None)
        consumers.append(cfg.nats.consumer)
    await wait_roster(kv, lambda r: set(consumers) <= set(r.running), "both engines running")
    await bus.publish_events(nc, js, [open_event(f"e-{name}", name) for name in targets])

    async def both_blocked() -> bool:
        async with env["http"].get(f"http://127.0.0.1:{replica.port}/metrics") as response:
            text = await response.text()
        blocked = re.findall(r'hookline_delivery_attempts_total\{[^}]*outcome="blocked"[^}]*\} (\S+)', text)
        return len(blocked) == 2 and all(float(v) >= 1 for v in blocked)

    await poll(both_blocked, 30, "both deliveries refused as blocked by the replica's own policy")
    assert receiver.requests == []


async def test_the_operator_ignores_a_roster_not_written_with_the_pool_key(env):
    """A forged roster (claiming a Webhook consumes) would make its status Ready: only rosters
    authenticated with the pool key reach the operator."""
    kv, directory = env["kv"], env["directory"]
    forged = Roster(POOL, 0, 1e12, ["hookline_shop_orders"])
    await kv.put(roster_key(POOL, 0), forged.to_bytes())
    other = PoolKey("someone else's key, also 32 characters long")
    await kv.put(roster_key(POOL, 1), other.sign_record(roster_key(POOL, 1), forged.to_bytes()))
    genuine = Roster(POOL, 2, 1e12, ["hookline_shop_real"])
    await kv.put(roster_key(POOL, 2), PoolKey(POOL_KEY).sign_record(roster_key(POOL, 2), genuine.to_bytes()))
    seen: list[Roster] = []

    async def collect() -> None:
        async for found in directory.rosters():
            seen.append(found)

    task = asyncio.create_task(collect())
    try:
        # the watch delivers the stored values in the order they were written: 0 and 1 came first
        await poll(lambda: asyncio.sleep(0, result=bool(seen)), 10, "the genuine roster")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [r.replica for r in seen] == [2]


async def test_an_authentic_but_older_entry_replayed_is_refused_and_the_current_one_keeps_running(env):
    """The operator changed X's URL; X's earlier entry (authentic, the old URL) is put back under its
    key: the replica keeps the current engine, says so in its roster, and nothing goes to the old URL."""
    nc, js, kv, directory, receiver = env["nc"], env["js"], env["kv"], env["directory"], env["receiver"]
    url, key = nc.connected_url.geturl(), PoolKey(POOL_KEY)
    replica = await env["start"](True)
    old = sender_config(url, f"{receiver.url}/old", name="moved", database="moved")
    await env["consumers"].ensure(old)
    consumer, at = old.nats.consumer, assignment_key(POOL, 0, old.nats.consumer)
    await directory.place(consumer, pool_entry(old, None, key, uid="u").to_bytes(), POOL, 0, None)
    await wait_roster(kv, lambda r: consumer in r.running, "the engine")
    captured = (await kv.get(at)).value
    new = sender_config(url, f"{receiver.url}/new", name="moved", database="moved")
    await directory.place(consumer, pool_entry(new, None, key, uid="u").to_bytes(), POOL, 0, (POOL, 0))

    async def held() -> str:
        """Where an undelivered probe is (never handed out, or out and unacked), and the replica's log."""
        state = await js.consumer_info(bus.STREAM, consumer)
        return (
            f"consumer {consumer}: pending {state.num_pending}, ack pending {state.num_ack_pending}, "
            f"redelivered {state.num_redelivered}, waiting pulls {state.num_waiting}\n{replica.log_tail()}"
        )

    # The replica swaps the engine in-process (the old one drains first): probe until /new answers.
    for probe in range(100):
        await bus.publish_events(nc, js, [open_event(f"probe-{probe}", "moved")])
        await wait_until(lambda p=probe: f"probe-{p}" in receiver.delivered(), 30, f"probe {probe}", held)
        if receiver.delivered()[f"probe-{probe}"].path == "/new":
            break
    else:
        raise AssertionError("the new URL never took over")
    before = len(receiver.requests)

    await kv.put(at, captured)  # the replay
    seen = await wait_roster(
        kv, lambda r: "replayed old entry" in r.problems.get(consumer, ""), "the refusal"
    )
    assert consumer in seen.running
    await bus.publish_events(nc, js, [open_event("second", "moved")])
    await wait_until(lambda: "second" in receiver.delivered(), 30, "the second delivery")
    assert [r.path for r in receiver.requests[before:]] == ["/new"]
