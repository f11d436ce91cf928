"""The commands for people (`hookline list`, `test`, `attempts`, `redrive`) through a kubeconfig that points
at the strict API emulator: output formats, selectors, watch, the namespace rule and one-line errors."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
import yaml
from operator_helpers import ADMIN_TOKEN, TESTS, WEBHOOKS, api_path, condition, create_webhook, wait_for
from strict_api import Identity, Rule

from hookline.cli import main
from hookline.kubecli.errors import CommandError
from hookline.kubecli.testing import parse_data


def write_kubeconfig(path, server: str, *, token: str = ADMIN_TOKEN, namespace: str | None = "shop") -> str:
    context = {"cluster": "emulator", "user": "me", **({"namespace": namespace} if namespace else {})}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "me", "user": {"token": token}}],
                "contexts": [{"name": "shop", "context": context}],
                "current-context": "shop",
            }
        )
    )
    return str(path)


@pytest.fixture
def kubeconfig(cluster, tmp_path):
    return write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))


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
    assert await hookline("test", "nope", "--kubeconfig", kubeconfig, "--data", "a=b") == 1
    assert capsys.readouterr().err == "error: webhook shop/nope not found\n"


def test_data_pairs_nest_and_parse_json():
    assert parse_data(["recipient=a@b.example", "profile=42", "fields.email=x@y", 'tags=["t"]']) == {
        "recipient": "a@b.example",
        "profile": 42,
        "fields": {"email": "x@y"},
        "tags": ["t"],
    }
    with pytest.raises(CommandError, match="expected KEY=VALUE"):
        parse_data(["recipient"])


async def create_in(cluster, namespace: str, name: str, labels: dict[str, str] | None = None) -> None:
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"url": f"https://{name}.example/h", "events": ["open"]},
    }
    await cluster.call("POST", api_path(WEBHOOKS, namespace=namespace), body)


async def test_list_prints_json_yaml_names_and_wide_and_filters_by_label(cluster, kubeconfig, capsys):
    await create_in(cluster, "shop", "a", {"team": "mail"})
    await create_in(cluster, "shop", "b", {"team": "web"})

    assert await hookline("list", "--kubeconfig", kubeconfig, "-o", "json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List" and listed["apiVersion"] == "v1"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    assert {(i["apiVersion"], i["kind"]) for i in listed["items"]} == {("hookline.io/v1alpha1", "Webhook")}
    assert listed["items"][0]["spec"]["url"] == "https://a.example/h"

    assert await hookline("list", "--kubeconfig", kubeconfig, "-o", "yaml", "-l", "team=web") == 0
    listed = yaml.safe_load(capsys.readouterr().out)
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["b"]

    assert await hookline("list", "--kubeconfig", kubeconfig, "-o", "name", "--selector", "team!=web") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/a\n"

    assert await hookline("list", "--kubeconfig", kubeconfig, "-o", "wide") == 0
    head, *rows = capsys.readouterr().out.splitlines()
    assert head.split()[-4:] == ["DELIVERING", "PENDING", "LAST-SUCCESS", "AGE"] and len(rows) == 2

    assert await hookline("list", "--kubeconfig", kubeconfig, "-l", "team=none") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "No Webhooks found in the shop namespace.\n"
    assert await hookline("list", "--kubeconfig", kubeconfig, "-l", "team=none", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


async def test_the_namespace_follows_the_kubeconfig_context(cluster, tmp_path, monkeypatch, capsys):
    await create_in(cluster, "billing", "invoices")
    await create_in(cluster, "shop", "orders")
    server = str(cluster.url).rstrip("/")
    billing = write_kubeconfig(tmp_path / "billing", server, namespace="billing")
    no_namespace = write_kubeconfig(tmp_path / "plain", server, namespace=None)

    assert await hookline("list", "--kubeconfig", billing, "-o", "name") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/invoices\n"
    assert await hookline("list", "--kubeconfig", billing, "-n", "shop", "-o", "name") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/orders\n"
    assert await hookline("list", "--kubeconfig", no_namespace) == 0  # no namespace in the context: default
    assert "in the default namespace" in capsys.readouterr().err
    monkeypatch.setenv("KUBECONFIG", billing)  # as kubectl: $KUBECONFIG when there is no --kubeconfig
    assert await hookline("list", "-o", "name") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/invoices\n"
    monkeypatch.setenv("HOOKLINE_NAMESPACE", "shop")
    assert await hookline("list", "-o", "name") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/orders\n"
    monkeypatch.delenv("HOOKLINE_NAMESPACE")

    # attempts and redrive take the same namespace: the API finds billing/invoices, then NATS is asked
    # (here nothing listens), and an unknown Webhook is named with the namespace it was looked for in.
    from hookline.sender.bus.natsserver import free_port

    dead = f"nats://127.0.0.1:{free_port()}"
    assert await hookline("attempts", "invoices", "--nats-url", dead) == 1
    assert "cannot connect to NATS" in capsys.readouterr().err
    for command in ("attempts", "redrive"):
        assert await hookline(command, "orders", "--nats-url", dead) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: webhook billing/orders not found (asked the Kubernetes API")
        assert err.count("\n") == 1
        assert await hookline(command, "orders", "--nats-url", dead, "--nats-only") == 1
        assert "cannot connect to NATS" in capsys.readouterr().err


async def test_watch_prints_each_change_until_its_timeout(cluster, kubeconfig, capsys):
    await create_in(cluster, "shop", "a")

    async def later():
        await asyncio.sleep(1.0)
        await create_in(cluster, "shop", "b")
        await cluster.call("PATCH", api_path(WEBHOOKS, name="a"), {"metadata": {"labels": {"team": "mail"}}})

    changes = asyncio.create_task(later())
    code = await hookline("list", "--kubeconfig", kubeconfig, "-w", "--timeout", "3", "-o", "name")
    await changes
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "webhook.hookline.io/a",
        "webhook.hookline.io/b",
        "webhook.hookline.io/a",
    ]
    assert await hookline("list", "--kubeconfig", kubeconfig, "--timeout", "3") == 2
    assert capsys.readouterr().err == "error: --timeout goes with --watch\n"


async def test_refusals_are_one_line_that_names_what_is_missing(cluster, tmp_path, capsys):
    server = str(cluster.url).rstrip("/")
    await create_in(cluster, "shop", "orders")
    stranger = write_kubeconfig(tmp_path / "stranger", server, token="nobody-knows-this")
    assert await hookline("list", "--kubeconfig", stranger) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: the Kubernetes API at {server} did not accept the credentials of user")
    assert "401 Unauthorized" in err and err.count("\n") == 1

    reader = Rule(frozenset({"hookline.io"}), frozenset({"webhooks"}), frozenset({"get"}))
    cluster.identities["reader-token"] = Identity("reader", (reader,))
    viewer = write_kubeconfig(tmp_path / "viewer", server, token="reader-token")
    assert await hookline("list", "--kubeconfig", viewer) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: forbidden: you may not list webhooks.hookline.io -n shop")
    assert "kubectl auth can-i list webhooks.hookline.io -n shop" in err and err.count("\n") == 1
    assert await hookline("test", "orders", "--kubeconfig", viewer) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: forbidden: you may not create webhooktests.hookline.io -n shop")

    cluster.identities["reader-token"] = Identity("reader", ())
    assert await hookline("list", "--kubeconfig", viewer, "-A") == 1
    assert "you may not list webhooks.hookline.io --all-namespaces" in capsys.readouterr().err


async def test_watch_runs_until_ctrl_c_and_stops_without_a_traceback(cluster, kubeconfig):
    await create_in(cluster, "shop", "a")
    hookline_script = str(Path(sys.executable).parent / "hookline")
    proc = await asyncio.create_subprocess_exec(
        hookline_script,
        "list",
        "-w",
        "-o",
        "name",
        "--kubeconfig",
        kubeconfig,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd="/",
    )
    try:
        async with asyncio.timeout(30):
            assert await proc.stdout.readline() == b"webhook.hookline.io/a\n"
            await create_in(cluster, "shop", "b")
            assert await proc.stdout.readline() == b"webhook.hookline.io/b\n"
            proc.send_signal(signal.SIGINT)
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130 and err == b""
