"""`hookline keys WEBHOOK`: a Webhook's live signing keys from its status.signing, as a table (key id,
algorithm, where the key is, the ed25519 public key as Standard Webhooks writes it, ``whpk_...``) or
as the JWKS document a receiver can load (``-o jwks``). Never key material: HMAC keys are shared
secrets and show only their key id."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Any, TextIO

from hookline.api import WEBHOOK_PLURAL
from hookline.kubecli.client import KubeClient
from hookline.kubecli.errors import CommandError, report
from hookline.kubecli.kube import add_connection_arguments, command_namespace, kube_config
from hookline.operator.rules.signingstatus import jwks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("webhook", help="the Webhook's name")
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "jwks", "json"),
        default="table",
        help="jwks: the RFC 7517 document",
    )


def whpk(public_key: str) -> str:
    """``whpk_<base64>`` from a JWK ``x`` (base64url, no padding)."""
    raw = base64.urlsafe_b64decode(public_key + "=" * (-len(public_key) % 4))
    return "whpk_" + base64.b64encode(raw).decode()


def render(signing: dict[str, Any], output: str) -> str:
    if output == "jwks":
        return json.dumps(jwks([signing]), indent=2)
    if output == "json":
        return json.dumps(signing, indent=2)
    rows = [("KEY ID", "ALGORITHM", "SECRET", "PUBLIC KEY")]
    for key in signing.get("keys") or ():
        public = whpk(key["publicKey"]) if key.get("publicKey") else "-"
        rows.append((key["keyId"], key["algorithm"], key.get("secret") or "-", public))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "   ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]])
        for row in rows
    ]
    lines.append(f"scheme: {signing.get('scheme') or 'StandardWebhooks'}")
    if signing.get("lastError"):
        lines.append(f"error: {signing['lastError']}")
    return "\n".join(lines)


async def _keys(args: argparse.Namespace, out: TextIO) -> int:
    config = kube_config(args)
    assert config is not None
    namespace = command_namespace(args, config)
    async with KubeClient(config) as kube:
        webhook = await kube.get(WEBHOOK_PLURAL, namespace, args.webhook)
    signing = (webhook.get("status") or {}).get("signing")
    if not signing:
        spec_signing = (webhook.get("spec") or {}).get("signing")
        why = (
            "it does not sign (no spec.signing)"
            if not spec_signing
            else "the operator has not reported them yet"
        )
        raise CommandError(f"Webhook {namespace}/{args.webhook} has no signing keys: {why}")
    print(render(signing, args.output), file=out)
    return 0


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        return asyncio.run(_keys(args, out or sys.stdout))
    except CommandError as exc:
        return report(exc)
