"""`hookline list` and `hookline test` through a kubeconfig that points at the API emulator."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from operator_helpers import ADMIN_TOKEN, TESTS, WEBHOOKS, api_path, condition, create_webhook, wait_for

from hookline.cli import main
from hookline.kubecli.kube import CommandError
from hookline.kubecli.testing import parse_data


@pytest.fixture
def kubeconfig(cluster, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": str(cluster.url).rstrip("/")}}],
                "users": [{"name": "me", "user": {"token": ADMIN_TOKEN}}],
                "contexts": [
                    {"name": "shop", "context": {"cluster": "emulator", "user": "me", "namespace": "shop"}}
                ],
                "current-context": "shop",
            }
        )
    )
    return str(path)


async def hookline(*argv):
    return await asyncio.to_thread(main, list(argv))


async def test_list_shows_webhooks_and_filters_by_database(cluster, kubeconfig, capsys):
    await create_webhook(cluster, "a", url="https://a.example/h", events=["open"], database="newsletter")
    await create_webhook(cluster, "b", url="https://b.example/h", events=["click", "open"])
    status = {
        "conditions": [{"type": "Verified", "status": "True", "reason": "FileMatched"}],
        "sender": {"mode": "Pool", "pool": "default", "replica": 3},
    }
    await cluster.call("PATCH", api_path(WEBHOOKS, name="a", sub="status"), {"status": status})
    await cluster.call(
        "PATCH",
        api_path(WEBHOOKS, name="a"),
        {"metadata": {"labels": {"hookline.io/database": "newsletter"}}},
    )

    assert await hookline("list", "--kubeconfig", kubeconfig) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "NAME",
        "URL",
        "EVENTS",
        "DATABASE",
        "COLLECTION",
        "VERIFIED",
        "READY",
        "SENDER",
    ]
    assert out[1].split()[:4] == ["a", "https://a.example/h", "open", "newsletter"]
    assert "True (FileMatched)" in out[1] and out[1].endswith("pool default/3")
    assert out[2].split()[:3] == ["b", "https://b.example/h", "click,open"]

    assert await hookline("list", "--kubeconfig", kubeconfig, "--database", "newsletter", "-A") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:]] == [["shop", "a"]]

    assert await hookline("list", "--kubeconfig", kubeconfig, "--collection", "orders") == 2
    assert "--collection needs --database" in capsys.readouterr().err


async def test_test_command_sends_and_prints_the_answer(cluster, site, start_operator, kubeconfig, capsys):
    await start_operator()
    await create_webhook(cluster, "shop-hook", url=site.url("/hooks/shop.php"), events=["click"])
    token = await wait_for(
        lambda: (
            ((cluster.get(WEBHOOKS, "shop-hook") or {}).get("status") or {})
            .get("verification", {})
            .get("content")
        ),
        "a token",
    )
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: condition(cluster.get(WEBHOOKS, "shop-hook"), "Verified").get("status") == "True", "Verified"
    )
    site.post_body = "OK from the shop"

    code = await hookline(
        "test",
        "shop-hook",
        "--kubeconfig",
        kubeconfig,
        "--data",
        "recipient=a@b.example",
        "--data",
        "original=https://x.example/",
        "--timeout",
        "60",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Succeeded" in out and "HTTP 200" in out and "OK from the shop" in out
    (post,) = site.posts()
    assert b"recipient=a%40b.example" in post["body"]
    created = [k for k in cluster.objects if k[0] == TESTS or str(k[0]).endswith("webhooktests")]
    assert created and created[0][2].startswith("shop-hook-test-")


async def test_test_command_names_a_missing_webhook(cluster, kubeconfig, capsys):
    assert await hookline("test", "nope", "--kubeconfig", kubeconfig, "--data", "a=b") == 2
    assert "Webhook nope in namespace shop: not found" in capsys.readouterr().err


def test_data_pairs_nest_and_parse_json():
    assert parse_data(["recipient=a@b.example", "profile=42", "fields.email=x@y", 'tags=["t"]']) == {
        "recipient": "a@b.example",
        "profile": 42,
        "fields": {"email": "x@y"},
        "tags": ["t"],
    }
    with pytest.raises(CommandError, match="expected KEY=VALUE"):
        parse_data(["recipient"])
