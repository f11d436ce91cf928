"""`hookline verify WEBHOOK|DOMAIN`: checks now, through a kubeconfig at the strict API emulator, a real
customer site and a real DNS server on loopback, and prints what it found in each place and record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dnsserver import LoopbackDNS
from operator_helpers import DOMAINS, api_path, create_webhook, token_of, wait_for
from test_kubecli import write_kubeconfig

from hookline.cli import main


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS().start()
    yield server
    server.stop()


async def hookline(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_verify_prints_each_file_location_record_and_domain(
    cluster, site, start_operator, dns, tmp_path, capsys
):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0)
    await create_webhook(cluster, "orders", url=site.url("/hooks/orders.php"), events=["open"])
    token = await wait_for(lambda: token_of(cluster, "orders"), "a token")
    site.files[f"/hookline-{token}.txt"] = token  # at the root, not beside the script
    flags = ["--kubeconfig", kubeconfig, "--allow-network", "127.0.0.0/8", "--allow-http",
             "--dns-nameserver", dns.nameserver, "--timeout", "2"]  # fmt: skip
    assert await hookline("verify", "orders", *flags) == 0
    out = capsys.readouterr().out
    assert f"file {site.base}/hooks/hookline-{token}.txt: HTTP 404 (FileNotFound)" in out
    assert f"file {site.base}/hookline-{token}.txt: holds the token" in out
    assert "is an IP address" in out and "result: proven by its File proof" in out

    meta = {"name": "shop-example", "namespace": "shop"}
    domain = {"apiVersion": "hookline.io/v1alpha1", "kind": "WebhookDomain", "metadata": meta,
              "spec": {"domain": "shop.example"}}  # fmt: skip
    await cluster.call("POST", api_path(DOMAINS), domain)
    domain_token = await wait_for(
        lambda: ((cluster.get(DOMAINS, "shop-example") or {}).get("status") or {}).get("token"),
        "a domain token",
    )
    dns.zone["_hookline-challenge.shop.example"] = ["something else"]
    assert await hookline("verify", "shop-example", *flags) == 1
    out = capsys.readouterr().out
    assert "TXT _hookline-challenge.shop.example: 'something else'" in out and "result: NOT proven" in out
    dns.zone["_hookline-challenge.shop.example"] = ["something else", domain_token]
    assert await hookline("verify", "shop-example", "--domain", *flags) == 0
    assert "(one holds the token)" in capsys.readouterr().out
    assert await hookline("verify", "nothing-here", *flags) == 1
    assert "no Webhook or WebhookDomain shop/nothing-here" in capsys.readouterr().err
