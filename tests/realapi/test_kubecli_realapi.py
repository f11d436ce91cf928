"""The commands for people against a real kube-apiserver: TLS with the cluster's CA, client certificates
from files and from `-data`, a credential plugin, and the real server's 401, 403 and 404 as one line."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import sys

import yaml
from operator_helpers import WEBHOOKS, api_path

from hookline.cli import main


async def hookline(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def create_webhook(admin, namespace: str, name: str) -> None:
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "mail"}},
        "spec": {"url": f"https://{name}.example/h", "events": ["open"]},
    }
    await admin.call("POST", api_path(WEBHOOKS, namespace), body)


def inlined(source, target, namespace: str) -> str:
    """The admin kubeconfig with its files inlined as `-data` and a namespace in its context."""
    doc = yaml.safe_load(source.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    for entry, key in (
        (cluster, "certificate-authority"),
        (user, "client-certificate"),
        (user, "client-key"),
    ):
        with open(entry.pop(key), "rb") as f:
            entry[f"{key}-data"] = base64.b64encode(f.read()).decode()
    doc["contexts"][0]["context"]["namespace"] = namespace
    target.write_text(yaml.safe_dump(doc))
    return str(target)


def with_user(source, target, user: dict) -> str:
    doc = yaml.safe_load(source.read_text())
    doc["users"][0]["user"] = user
    target.write_text(yaml.safe_dump(doc))
    return str(target)


async def test_list_over_tls_with_client_certificates(real_cluster, admin, namespace, tmp_path, capsys):
    await create_webhook(admin, namespace, "orders")
    files = str(real_cluster.kubeconfig)
    assert await hookline("list", "--kubeconfig", files, "-n", namespace, "-o", "json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["orders"]
    assert listed["items"][0]["kind"] == "Webhook"

    data = inlined(real_cluster.kubeconfig, tmp_path / "inline", namespace)
    assert await hookline("list", "--kubeconfig", data, "-l", "team=mail", "-o", "name") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/orders\n"
    assert await hookline("list", "--kubeconfig", data, "-l", "team=web", "-o", "yaml") == 0
    assert yaml.safe_load(capsys.readouterr().out)["items"] == []


async def test_the_real_servers_refusals_are_one_line(real_cluster, admin, namespace, tmp_path, capsys):
    await create_webhook(admin, namespace, "orders")
    data = inlined(real_cluster.kubeconfig, tmp_path / "inline", namespace)

    assert await hookline("test", "nope", "--kubeconfig", data) == 1
    assert capsys.readouterr().err == f"error: webhook {namespace}/nope not found\n"
    assert await hookline("attempts", "nope", "--kubeconfig", data) == 1
    assert capsys.readouterr().err.startswith(
        f"error: webhook {namespace}/nope not found (asked the Kubernetes"
    )

    stranger = with_user(tmp_path / "inline", tmp_path / "stranger", {"token": "not-a-token"})
    assert await hookline("list", "--kubeconfig", stranger) == 1
    err = capsys.readouterr().err
    assert "401 Unauthorized" in err and err.count("\n") == 1

    # The operator's ServiceAccount, through a credential plugin (as EKS, GKE and AKS kubeconfigs log in):
    # it may read Webhooks but not create WebhookTests.
    plugin = tmp_path / "token-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": real_cluster.operator_token},
    }
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}
    operator = with_user(tmp_path / "inline", tmp_path / "operator", user)
    assert await hookline("list", "--kubeconfig", operator, "-o", "name") == 0
    assert capsys.readouterr().out == "webhook.hookline.io/orders\n"
    assert await hookline("test", "orders", "--kubeconfig", operator) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: forbidden: you may not create webhooktests.hookline.io -n {namespace}")
    assert real_cluster.operator_user in err and err.count("\n") == 1
