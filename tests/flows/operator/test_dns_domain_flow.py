"""DNS TXT proofs and verified domains through the operator: the strict API emulator, nats-server, a real
DNS server on loopback (dnslib) the operator is pointed at (--dns-nameserver), and a customer's site
that records every GET (a domain-proven Webhook must cost it nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from dnsserver import LoopbackDNS
from operator_helpers import DOMAINS, WEBHOOKS, api_path, condition, wait_for

from hookline.operator.rules.recheck import RecheckSchedule

OTHER_NS = "other"


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS().start()
    yield server
    server.stop()


async def create(
    cluster: Any, resource: str, kind: str, name: str, namespace: str = "shop", **spec: Any
) -> None:
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    await cluster.call("POST", api_path(resource, namespace=namespace), body)


def verified(cluster: Any, resource: str, name: str, namespace: str = "shop") -> dict[str, Any]:
    return condition(cluster.get(resource, name, namespace), "Verified")


def token(cluster: Any, name: str) -> str | None:
    return ((cluster.get(WEBHOOKS, name) or {}).get("status") or {}).get("verification", {}).get("content")


async def test_a_txt_record_verifies_a_webhook_and_status_says_what_was_found(cluster, start_operator, dns):
    await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0)
    record = "_hookline-challenge.api.shop.example"
    dns.zone[record] = ["v=spf1 -all"]  # a record is there, without the token
    await create(cluster, WEBHOOKS, "Webhook", "by-dns", url="https://api.shop.example/hook", events=["open"],
                 verification={"method": "DNS"})  # fmt: skip
    mismatch = await wait_for(
        lambda: (
            verified(cluster, WEBHOOKS, "by-dns").get("reason") == "RecordMismatch"
            and verified(cluster, WEBHOOKS, "by-dns")
        ),
        "Verified=False/RecordMismatch",
    )
    assert record in mismatch["message"] and "v=spf1 -all" in mismatch["message"]
    found = cluster.get(WEBHOOKS, "by-dns")["status"]["verification"]
    assert (found["method"], found["record"], found["recordsFound"]) == ("DNS", record, ["v=spf1 -all"])

    dns.zone[record] = ["v=spf1 -all", token(cluster, "by-dns")]
    done = await wait_for(
        lambda: (
            verified(cluster, WEBHOOKS, "by-dns").get("status") == "True"
            and verified(cluster, WEBHOOKS, "by-dns")
        ),
        "Verified=True by the TXT record",
    )
    assert done["reason"] == "RecordMatched" and record in done["message"]
    assert cluster.get(WEBHOOKS, "by-dns")["status"]["verification"]["method"] == "DNS"


async def test_missing_and_nxdomain_records_are_not_found(cluster, start_operator, dns):
    await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0)
    dns.zone["_hookline-challenge.empty.shop.example"] = []  # the name exists, no TXT
    for name, host in (("empty", "empty.shop.example"), ("nowhere", "nowhere.shop.example")):
        await create(cluster, WEBHOOKS, "Webhook", name, url=f"https://{host}/hook", events=["open"],
                     verification={"method": "DNS"})  # fmt: skip
    for name, words in (("empty", "has no TXT record"), ("nowhere", "NXDOMAIN")):
        found = await wait_for(
            lambda n=name: (
                verified(cluster, WEBHOOKS, n).get("reason") == "RecordNotFound"
                and verified(cluster, WEBHOOKS, n)
            ),
            f"{name}: Verified=False/RecordNotFound",
        )
        assert words in found["message"]


async def test_a_verified_domain_covers_its_namespace_and_subdomains_and_no_other_namespace(
    cluster, start_operator, dns, site
):
    await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0)
    await create(
        cluster, DOMAINS, "WebhookDomain", "shop-example", domain="shop.example", includeSubdomains=True
    )
    domain_token = await wait_for(
        lambda: ((cluster.get(DOMAINS, "shop-example") or {}).get("status") or {}).get("token"),
        "a domain token",
    )
    pending = verified(cluster, DOMAINS, "shop-example")
    assert pending.get("reason") in ("Pending", "RecordNotFound")
    assert cluster.get(DOMAINS, "shop-example")["status"]["record"] == "_hookline-challenge.shop.example"
    dns.zone["_hookline-challenge.shop.example"] = [domain_token]
    await wait_for(
        lambda: verified(cluster, DOMAINS, "shop-example").get("status") == "True", "the domain verified"
    )
    assert verified(cluster, DOMAINS, "shop-example")["reason"] == "RecordMatched"
    asked = len(dns.queries)

    # A Webhook on a subdomain, in the domain's namespace: verified by it, no file, no request.
    await create(
        cluster, WEBHOOKS, "Webhook", "covered", url="https://api.shop.example/hooks/x.php", events=["open"]
    )
    done = await wait_for(
        lambda: (
            verified(cluster, WEBHOOKS, "covered").get("status") == "True"
            and verified(cluster, WEBHOOKS, "covered")
        ),
        "Verified=True by the domain",
    )
    assert done["reason"] == "DomainVerified" and "WebhookDomain shop-example" in done["message"]
    status = cluster.get(WEBHOOKS, "covered")["status"]["verification"]
    assert (status["method"], status["record"]) == ("Domain", "shop-example")
    # ...and a host that only ends like it is not on it.
    lookalike = "https://evilshop.example/hook"
    await create(cluster, WEBHOOKS, "Webhook", "lookalike", url=lookalike, events=["open"],
                 verification={"method": "DNS"})  # fmt: skip
    # The same host in another namespace: the domain is not honoured there (its own proof is looked for).
    await create(cluster, WEBHOOKS, "Webhook", "elsewhere", namespace=OTHER_NS, url="https://api.shop.example/hook",
                 events=["open"], verification={"method": "DNS"})  # fmt: skip
    for name, namespace in (("lookalike", "shop"), ("elsewhere", OTHER_NS)):
        refused = await wait_for(
            lambda n=name, ns=namespace: (
                verified(cluster, WEBHOOKS, n, ns).get("reason") == "RecordNotFound"
                and verified(cluster, WEBHOOKS, n, ns)
            ),
            f"{name}: not verified by the domain",
        )
        assert refused["status"] == "False"
    assert site.gets() == []
    # Each refused Webhook asked for its own record; the covered one asked nothing.
    own = {q for q, _ in dns.queries[asked:]}
    assert own == {"_hookline-challenge.evilshop.example", "_hookline-challenge.api.shop.example"}
    assert dns.queries_for("_hookline-challenge.shop.example") == 1


async def test_webhooks_on_verified_domains_cost_one_proof_per_domain(cluster, start_operator, dns, site):
    """100 Webhooks on 10 verified domains: 10 TXT lookups, no request per Webhook, and a re-check round
    costs 10 lookups again (bench/ownership_cost.py runs the same with 1,000 Webhooks)."""
    schedule = RecheckSchedule(interval=3.0, grace=60.0, checks_per_second=50, burst=50, jitter=0, tick=0.2)
    operator = await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0, recheck=schedule)
    domains = [f"d{i}.example" for i in range(10)]
    for i, domain in enumerate(domains):
        await create(cluster, DOMAINS, "WebhookDomain", f"d{i}", domain=domain)
    for i, domain in enumerate(domains):
        token = await wait_for(
            lambda n=f"d{i}": ((cluster.get(DOMAINS, n) or {}).get("status") or {}).get("token"), "a token"
        )
        dns.zone[f"_hookline-challenge.{domain}"] = [token]
    for i in range(10):
        await wait_for(
            lambda n=f"d{i}": verified(cluster, DOMAINS, n).get("status") == "True", f"d{i} verified"
        )
    proofs, proven_at = len(dns.queries), time.monotonic()
    names = [f"wh-{i:03d}" for i in range(100)]
    await asyncio.gather(
        *(
            create(
                cluster,
                WEBHOOKS,
                "Webhook",
                name,
                url=f"https://{domains[i % 10]}/hooks/{name}.php",
                events=["open"],
                paused=True,
            )
            for i, name in enumerate(names)
        )
    )
    await wait_for(
        lambda: all(verified(cluster, WEBHOOKS, n).get("reason") == "DomainVerified" for n in names),
        "all 100 Webhooks verified by their domains",
    )
    # The Webhooks asked nothing: no GET, and the only lookups since are the domains' own re-checks
    # (every 3 s; creating 100 Webhooks may take longer than that on a busy machine).
    assert site.gets() == []
    rounds = int((time.monotonic() - proven_at) / schedule.interval) + 1
    since = Counter(q for q, _ in dns.queries[proofs:])
    assert set(since) <= {f"_hookline-challenge.{d}" for d in domains}, since
    assert max(since.values(), default=0) <= rounds, (since, rounds)
    assert not [p for p in operator.runtime.ownership.proofs if p[0] == "Webhook"]
    # One re-check round: each domain once more, not each Webhook.
    records = {f"_hookline-challenge.{d}" for d in domains}
    mark = len(dns.queries)
    await wait_for(
        lambda: {q for q, _ in dns.queries[mark:]} == records, "a re-check round of the 10 domains", within=20
    )
    assert len(dns.queries) - mark <= 2 * len(domains)  # at most two rounds' worth, not 100 Webhooks'


@pytest.mark.slow
async def test_a_lapsed_domain_pauses_its_webhooks_and_its_return_resumes_them(cluster, start_operator, dns):
    fast = {"checks_per_second": 50, "burst": 50, "jitter": 0, "tick": 0.2}
    schedule = RecheckSchedule(interval=1.0, grace=2.0, grace_retry=0.5, **fast)
    await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0, recheck=schedule)
    await create(
        cluster, DOMAINS, "WebhookDomain", "shop-example", domain="shop.example", includeSubdomains=True
    )
    domain_token = await wait_for(
        lambda: ((cluster.get(DOMAINS, "shop-example") or {}).get("status") or {}).get("token"),
        "a domain token",
    )
    record = "_hookline-challenge.shop.example"
    dns.zone[record] = [domain_token]
    await wait_for(
        lambda: verified(cluster, DOMAINS, "shop-example").get("status") == "True", "the domain verified"
    )
    url = "https://api.shop.example/hook"
    await create(
        cluster, WEBHOOKS, "Webhook", "covered", url=url, events=["open"], verification={"method": "DNS"}
    )
    await wait_for(
        lambda: verified(cluster, WEBHOOKS, "covered").get("reason") == "DomainVerified", "DomainVerified"
    )

    def replicas() -> Any:
        return ((cluster.get("apps/v1/deployments", "covered-sender") or {}).get("spec") or {}).get(
            "replicas"
        )

    await wait_for(lambda: replicas() == 1, "the sender Deployment")

    del dns.zone[record]  # the domain's record is gone: grace, then lapsed, then its Webhooks pause
    await wait_for(
        lambda: "OwnershipRecheckFailed" in {e["reason"] for e in cluster.events_for("shop-example")},
        "an OwnershipRecheckFailed Event on the domain",
    )
    await wait_for(
        lambda: verified(cluster, DOMAINS, "shop-example").get("reason") == "OwnershipLapsed",
        "the domain lapsed",
    )
    lapsed = await wait_for(
        lambda: (
            verified(cluster, WEBHOOKS, "covered").get("reason") == "OwnershipLapsed"
            and verified(cluster, WEBHOOKS, "covered")
        ),
        "the covered Webhook lapsed with it",
    )
    assert lapsed["status"] == "False"
    await wait_for(lambda: replicas() == 0, "its sender scaled to 0")

    dns.zone[record] = [domain_token]  # back: the domain and then its Webhook are verified again
    await wait_for(
        lambda: verified(cluster, DOMAINS, "shop-example").get("status") == "True", "the domain back"
    )
    await wait_for(
        lambda: verified(cluster, WEBHOOKS, "covered").get("reason") == "DomainVerified", "the Webhook back"
    )
    await wait_for(lambda: replicas() == 1, "its sender scaled back up")
