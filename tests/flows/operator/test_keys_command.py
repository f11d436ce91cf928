"""`hookline keys WEBHOOK` on the strict API: the live keys from status.signing, as a table and as the
JWKS document a receiver loads; a Webhook that does not sign says so."""

from __future__ import annotations

import asyncio
import base64
import json

import yaml
from operator_helpers import ADMIN_TOKEN, WEBHOOKS, api_path, create_webhook

from hookline.cli import main
from hookline.sender.model.signingkeys import generate_key_text, parse_signing_key, public_key_text


def kubeconfig(cluster, tmp_path) -> str:
    path = tmp_path / "kubeconfig"
    context = {"cluster": "emulator", "user": "me", "namespace": "shop"}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": str(cluster.url).rstrip("/")}}],
                "users": [{"name": "me", "user": {"token": ADMIN_TOKEN}}],
                "contexts": [{"name": "shop", "context": context}],
                "current-context": "shop",
            }
        )
    )
    return str(path)


async def test_keys_prints_key_ids_public_keys_and_a_jwks_document(cluster, tmp_path, capsys):
    key = parse_signing_key(generate_key_text("ed25519"))
    jwk = key.jwk()
    assert jwk is not None
    signing = {"secretRef": {"name": "k", "key": "k"}}
    await create_webhook(
        cluster, "signed", url="https://shop.example/h.php", events=["open"], signing=signing
    )
    await create_webhook(cluster, "plain", url="https://shop.example/p.php", events=["open"])
    status = {
        "signing": {
            "scheme": "StandardWebhooks",
            "keys": [
                {"keyId": "hmac-0123456789abcdef", "algorithm": "hmac-sha256", "secret": "k/old"},
                {"keyId": key.key_id, "algorithm": "ed25519", "secret": "k/k", "publicKey": jwk["x"]},
            ],
        }
    }
    await cluster.call("PATCH", api_path(WEBHOOKS, name="signed", sub="status"), {"status": status})
    config = kubeconfig(cluster, tmp_path)

    assert await asyncio.to_thread(main, ["keys", "signed", "--kubeconfig", config]) == 0
    table = capsys.readouterr().out
    assert "hmac-0123456789abcdef" in table and key.key_id in table and str(public_key_text(key)) in table
    assert await asyncio.to_thread(main, ["keys", "signed", "--kubeconfig", config, "-o", "jwks"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {"keys": [jwk]}
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == key.public_raw

    assert await asyncio.to_thread(main, ["keys", "plain", "--kubeconfig", config]) == 1
    assert "does not sign" in capsys.readouterr().err
