"""What ownership proofs cost: N Webhooks (default 1,000) on D verified WebhookDomains (default 10).

The operator runs in this process (tests/support/operator_helpers.py RunningOperator) against the strict
API emulator, with a real nats-server and a real DNS server on loopback (dnslib, tests/support/
dnsserver.py) that counts every question; a loopback site counts every GET. The domains are proven
first (including subdomains), then the Webhooks are created on them (api.dN.example; paused: no sender
runs, nothing is delivered). Printed:
the outbound checks the Webhooks cost (TXT lookups and GETs), one re-check round's lookups, and the
status writes the re-checks made.

    .venv/bin/python bench/ownership_cost.py [--webhooks 1000] [--domains 10] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kmock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from dnsserver import LoopbackDNS  # noqa: E402
from operator_helpers import (  # noqa: E402
    DOMAINS,
    NS,
    OPERATOR_TOKEN,
    WEBHOOKS,
    RunningOperator,
    Site,
    api_path,
    declare_resources,
    operator_config,
    serve_on_loopback,
)
from strict_api import StrictCluster  # noqa: E402

from hookline.operator.rules.recheck import RecheckSchedule  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402


def verified_reason(cluster: Any, resource: str, name: str) -> str | None:
    for c in ((cluster.get(resource, name) or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == "Verified" and c["status"] == "True":
            return str(c["reason"])
    return None


def token_of(cluster: Any, name: str) -> str | None:
    return ((cluster.get(DOMAINS, name) or {}).get("status") or {}).get("token")


async def until(check: Any, what: str, deadline: float) -> None:
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timeout waiting for {what}")
        await asyncio.sleep(0.2)


async def bench(webhooks: int, domains: int, limit_seconds: float, recheck_seconds: float) -> int:
    deadline = time.monotonic() + limit_seconds
    dns = LoopbackDNS().start()
    site = Site()
    runner, site.base = await serve_on_loopback(site.handle)
    with (
        tempfile.TemporaryDirectory(prefix="hookline-bench-") as tmp,
        EmbeddedNats(Path(tmp) / "nats") as nats,
    ):
        async with StrictCluster() as cluster, kmock.Server(cluster):
            declare_resources(cluster)
            server = str(cluster.url).rstrip("/")

            def login(**_: Any) -> Any:
                import kopf

                return kopf.ConnectionInfo(
                    server=server, insecure=True, default_namespace=NS, token=OPERATOR_TOKEN
                )

            schedule = RecheckSchedule(
                interval=recheck_seconds, checks_per_second=20, burst=20, jitter=0, tick=0.5
            )
            config = operator_config(nats.url, dns_nameservers=(dns.nameserver,), recheck=schedule)
            operator = await RunningOperator(config, login).start()
            try:
                names = [f"d{i}" for i in range(domains)]
                for i, name in enumerate(names):
                    meta = {"name": name, "namespace": NS}
                    body = {"apiVersion": "hookline.io/v1alpha1", "kind": "WebhookDomain", "metadata": meta,
                            "spec": {"domain": f"d{i}.example", "includeSubdomains": True}}  # fmt: skip
                    await cluster.call("POST", api_path(DOMAINS, NS), body)
                for i, name in enumerate(names):
                    await until(lambda n=name: token_of(cluster, n), "domain tokens", deadline)
                    token = cluster.get(DOMAINS, name)["status"]["token"]
                    dns.zone[f"_hookline-challenge.d{i}.example"] = [token]
                await until(
                    lambda: all(verified_reason(cluster, DOMAINS, n) for n in names), "domains", deadline
                )
                before = len(dns.queries)
                started = time.perf_counter()
                limit = asyncio.Semaphore(50)

                async def create(i: int) -> None:
                    async with limit:
                        body = {
                            "apiVersion": "hookline.io/v1alpha1",
                            "kind": "Webhook",
                            "metadata": {"name": f"wh-{i:05d}", "namespace": NS},
                            "spec": {"url": f"https://api.d{i % domains}.example/hooks/{i}.php",
                                     "events": ["open"], "paused": True},
                        }  # fmt: skip
                        await cluster.call("POST", api_path(WEBHOOKS, NS), body)

                await asyncio.gather(*(create(i) for i in range(webhooks)))
                wh_names = [f"wh-{i:05d}" for i in range(webhooks)]
                await until(
                    lambda: (
                        sum(verified_reason(cluster, WEBHOOKS, n) == "DomainVerified" for n in wh_names)
                        == webhooks
                    ),
                    "every Webhook verified by its domain",
                    deadline,
                )
                elapsed = time.perf_counter() - started
                domain_records = {f"_hookline-challenge.d{i}.example" for i in range(domains)}
                lookups_for_webhooks = sum(1 for q, _ in dns.queries[before:] if q not in domain_records)
                domain_rechecks = len(dns.queries) - before - lookups_for_webhooks
                gets = len(site.gets())
                # One re-check round of the domains (interval recheck_seconds).
                round_start = len(dns.queries)
                await until(lambda: len(dns.queries) >= round_start + domains, "a re-check round", deadline)
                round_lookups = len(dns.queries) - round_start
            finally:
                await operator.stop()
                await runner.cleanup()
                dns.stop()
    print(f"{webhooks} Webhooks on {domains} verified WebhookDomains, all Verified=True/DomainVerified "
          f"{elapsed:.1f} s after the first create")  # fmt: skip
    print(f"domain proofs: {before} TXT lookups (one per domain)")
    print(
        f"outbound checks the {webhooks} Webhooks cost: {lookups_for_webhooks} TXT lookups, {gets} HTTP GETs"
    )
    print(f"(meanwhile the domains' own re-checks every {recheck_seconds:g} s: {domain_rechecks} lookups)")
    print(f"one re-check round: {round_lookups} TXT lookups (the domains), none per Webhook")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--recheck-seconds", type=float, default=5.0)
    args = parser.parse_args()
    return asyncio.run(bench(args.webhooks, args.domains, args.timeout, args.recheck_seconds))


if __name__ == "__main__":
    sys.exit(main())
