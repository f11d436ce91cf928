"""Signing on a real kube-apiserver: the CRD's rules for spec.signing (CEL), a key pair the operator
generates (a Secret owned by the Webhook, which the garbage collector removes with it) and
status.signing kept as written (not pruned), with the operator as the chart's ServiceAccount."""

from __future__ import annotations

import base64

import pytest
from operator_helpers import SECRETS, WEBHOOKS, api_path
from realapi_helpers import eventually

from hookline.sender.model.signingkeys import parse_signing_key

pytestmark = pytest.mark.slow  # the garbage collector's pass takes seconds


async def test_a_generated_key_pair_is_owned_by_its_webhook_and_its_public_key_shown_in_status(
    admin, namespace, site, start_operator
):
    body = {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {"name": "both"}}
    both = {"secretRef": {"name": "a", "key": "k"}, "secretRefs": [{"name": "a", "key": "k"}]}
    body["spec"] = {"url": site.url("/hooks/both.php"), "events": ["click"], "signing": both}
    with pytest.raises(AssertionError, match="not both"):
        await admin.call("POST", api_path(WEBHOOKS, namespace), body)

    await start_operator()
    webhook = {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {"name": "signed"}}
    webhook["spec"] = {
        "url": site.url("/hooks/signed.php"),
        "events": ["click"],
        "signing": {"generate": "ed25519"},
    }
    await admin.call("POST", api_path(WEBHOOKS, namespace), webhook)

    async def keys():
        found = await admin.get(WEBHOOKS, "signed", namespace)
        return ((found or {}).get("status") or {}).get("signing", {}).get("keys")

    (shown,) = await eventually(keys, "status.signing.keys (before verification)")
    secret = await admin.get(SECRETS, "signed-signing", namespace)
    assert secret is not None
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Webhook", "signed", True)
    key = parse_signing_key(base64.b64decode(secret["data"]["signing-key"]).decode())
    jwk = key.jwk()
    assert jwk is not None
    assert shown == {
        "keyId": key.key_id,
        "algorithm": "ed25519",
        "secret": "signed-signing/signing-key",
        "publicKey": jwk["x"],
    }

    await admin.call("DELETE", api_path(WEBHOOKS, namespace, "signed"))

    async def collected():
        return await admin.get(SECRETS, "signed-signing", namespace) is None

    await eventually(collected, "the generated Secret removed with its Webhook")
