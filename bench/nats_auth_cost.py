"""What NATS auth costs (nats.auth): connect latency, a sender's first delivery and its deliveries/s,
with the chart's decentralized JWT auth on (a sender on its own least-privilege user, minted by the
operator's code) against an anonymous server.

For each mode a fresh nats-server: anonymous (`-js`), or with the accounts' auth.conf and a full
resolver as the chart renders it. The streams are made (the layout user), the Webhook's consumer
(the operator user), `--events` events published (the ingest user), then `hookline sender` is started:
first delivery = the receiver's first request less the spawn time (process start, connect, consumer
check, first pull); deliveries/s at the receiver. Connect latency: the median of 30 connect+close.

    .venv/bin/python bench/nats_auth_cost.py [--events 5000] [--revocations 10000]

`--revocations N` adds the cost of N senders' users: .creds size, mint time, the account JWT carrying
N revocations, one more revocation pushed and a connect with them present.

`make bench` (bench/run.py) runs it with 5,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    HOOKLINE,
    rate,
    sample_event,
    spawn,
    stop,
    wait_count,
    wait_http,
    write_sender_config,
)

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.connection import BusAuth  # noqa: E402
from hookline.sender.bus.natsaccounts import (  # noqa: E402
    SERVER_CONFIG_FILE,
    AuthKeys,
    resolver_block,
    revoke_users,
)
from hookline.sender.bus.natsjwt import new_key  # noqa: E402
from hookline.sender.bus.natsperms import SenderIdentity, inbox_prefix  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port  # noqa: E402
from hookline.sender.cmd.ingest import ensure_bus_layout  # noqa: E402
from hookline.sender.model.events import parse_event  # noqa: E402

CONNECTS = 30


def start_server(tmp: Path, auth: bool) -> tuple[EmbeddedNats, dict[str, BusAuth], AuthKeys | None]:
    if not auth:
        server = EmbeddedNats(tmp / "store", log_file=tmp / "nats.log").start()
        return server, {}, None
    keys = AuthKeys.generate()
    files = keys.secret_files()
    (tmp / "nats-auth").mkdir()
    (tmp / "nats-auth" / SERVER_CONFIG_FILE).write_text(files[SERVER_CONFIG_FILE])
    (tmp / "nats").mkdir()
    config = tmp / "nats" / "nats-server.conf"
    config.write_text(f"include ../nats-auth/{SERVER_CONFIG_FILE}\n" + resolver_block(str(tmp / "jwt")))
    users: dict[str, BusAuth] = {}
    for role in ("layout", "operator", "ingest"):
        path = tmp / f"{role}.creds"
        path.write_text(files[f"{role}.creds"])
        users[role] = BusAuth(creds_file=str(path), inbox_prefix=inbox_prefix(role))
    server = EmbeddedNats(tmp / "store", config_file=config, log_file=tmp / "nats.log").start()
    return server, users, keys


async def connect_ms(url: str, auth: BusAuth) -> float:
    samples = []
    for _ in range(CONNECTS):
        start = time.perf_counter()
        nc = await bus.connect(url, auth=auth)
        await nc.flush()
        samples.append((time.perf_counter() - start) * 1000)
        await nc.close()
    return round(statistics.median(samples), 2)


async def one_mode(auth: bool, events: int, http_base: str, hook_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hookline-bench-auth-") as name:
        tmp = Path(name)
        server, users, keys = start_server(tmp, auth)
        try:
            none = BusAuth()
            nc = await bus.connect(server.url, auth=users.get("layout", none))
            await ensure_bus_layout(
                nc.jetstream(),
                retention=3600,
                duplicate_window=60,
                max_bytes=-1,
                max_consumers=100,
                replicas=1,
            )
            await nc.close()
            path, _, cfg = write_sender_config(
                tmp, server.url, hook_url, 32, "json", "auth" if auth else "anon"
            )
            sender_auth = none
            if keys is not None:
                who = SenderIdentity(cfg.webhook.namespace, cfg.webhook.name, cfg.nats.consumer)
                creds = tmp / "sender.creds"
                creds.write_text(keys.sender_creds(who, "bench"))
                doc = cfg.to_document()
                doc["nats"]["credsFile"] = str(creds)
                path.write_text(yaml.safe_dump(doc))
                sender_auth = BusAuth(creds_file=str(creds), inbox_prefix=who.inbox)
            nc = await bus.connect(server.url, auth=users.get("operator", none))
            await bus.ensure_consumer(nc.jetstream(), cfg)
            await nc.close()
            connect = await connect_ms(server.url, sender_auth)
            nc = await bus.connect(server.url, auth=users.get("ingest", none))
            js = nc.jetstream()
            batch = [parse_event(sample_event(i, "auth" if auth else "anon")) for i in range(events)]
            for start in range(0, len(batch), 500):
                await bus.publish_events(nc, js, batch[start : start + 500], ack_timeout=30)
            await nc.close()
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{http_base}/reset") as response:
                    await response.read()
                spawned = time.perf_counter()
                proc = spawn([*HOOKLINE, "sender", "--config", str(path)], tmp / "sender.log")
                try:
                    stats = await wait_count(http, http_base, events, within=300, key="events")
                finally:
                    stop(proc)
            return {
                "auth": auth,
                "connect_ms": connect,
                "first_delivery_ms": round((stats["first"] - spawned) * 1000),
                "deliveries_per_s": round(rate(stats)),
            }
        finally:
            server.close()


async def measure(events: int = 5000) -> dict[str, Any]:
    port = free_port()
    receiver = spawn([sys.executable, str(ROOT / "bench" / "receiver.py"), str(port)])
    http_base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_http(http, f"{http_base}/stats", receiver)
        off = await one_mode(False, events, http_base, f"{http_base}/hooks/bench")
        on = await one_mode(True, events, http_base, f"{http_base}/hooks/bench")
    finally:
        stop(receiver)
    return {"events": events, "off": off, "on": on}


async def revocation_cost(count: int = 10_000) -> dict[str, Any]:
    """The cost of `count` senders' users: .creds size, mint time, the account JWT with `count`
    revocations (NATS's max payload is 1 MiB), one more revocation and a connect with them present."""
    keys = AuthKeys.generate()
    started = time.perf_counter()
    for i in range(1000):
        keys.sender_creds(
            SenderIdentity("ns", f"w{i}", f"hookline_ns_w{i}"), f"uid{i}", expires_at=2_000_000_000
        )
    mint_ms = time.perf_counter() - started  # seconds for 1,000 = ms per user
    who = SenderIdentity("team-a-production", "orders-webhook", "hookline_team-a-production_orders-webhook")
    creds = keys.sender_creds(who, "uid", expires_at=2_000_000_000)
    now = int(time.time())
    revocations = {new_key("user").public: now for _ in range(count)}
    account_jwt = keys.account_jwt(revocations, issued_at=now)
    with tempfile.TemporaryDirectory(prefix="hookline-bench-revoke-") as name:
        tmp = Path(name)
        files = keys.secret_files()
        (tmp / "nats-auth").mkdir()
        (tmp / "nats-auth" / SERVER_CONFIG_FILE).write_text(files[SERVER_CONFIG_FILE])
        (tmp / "nats").mkdir()
        config = tmp / "nats" / "nats-server.conf"
        config.write_text(f"include ../nats-auth/{SERVER_CONFIG_FILE}\n" + resolver_block(str(tmp / "jwt")))
        (tmp / "system.creds").write_text(files["system.creds"])
        (tmp / "sender.creds").write_text(creds)
        server = EmbeddedNats(tmp / "store", config_file=config, log_file=tmp / "nats.log").start()
        try:
            system = BusAuth(creds_file=str(tmp / "system.creds"), inbox_prefix=inbox_prefix("system"))
            nc = await bus.connect(server.url, auth=system)
            await nc.request("$SYS.REQ.CLAIMS.UPDATE", account_jwt.encode(), timeout=10)
            await asyncio.sleep(1.1)  # the next account JWT must be issued later
            started = time.perf_counter()
            await revoke_users(nc, keys, [new_key("user").public], within=10)
            revoke_ms = (time.perf_counter() - started) * 1000
            await nc.close()
            connect = await connect_ms(
                server.url, BusAuth(creds_file=str(tmp / "sender.creds"), inbox_prefix=who.inbox)
            )
        finally:
            server.close()
    return {
        "count": count,
        "creds_bytes": len(creds),
        "mint_ms_per_user": round(mint_ms, 3),
        "account_jwt_bytes": len(account_jwt),
        "revoke_ms": round(revoke_ms, 1),
        "connect_ms_with_revocations": connect,
    }


def report_rows(result: dict[str, Any]) -> list[str]:
    off, on = result["off"], result["on"]
    return [
        f"| NATS connect, median of {CONNECTS}: auth on (JWT user) / off (bench/nats_auth_cost.py) "
        f"| {on['connect_ms']} / {off['connect_ms']} ms |",
        "| sender first delivery after its start (process start, connect, consumer check, first pull): "
        f"auth on / off | {on['first_delivery_ms']} / {off['first_delivery_ms']} ms |",
        f"| deliveries/s of one sender, {result['events']:,} events: auth on / off "
        f"| {on['deliveries_per_s']} / {off['deliveries_per_s']} |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--revocations", type=int, default=0, help="also: the cost of N senders' users")
    args = parser.parse_args()
    result = asyncio.run(measure(args.events))
    print(json.dumps(result, indent=2))
    print("\n".join(report_rows(result)))
    if args.revocations:
        print(json.dumps(asyncio.run(revocation_cost(args.revocations)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
