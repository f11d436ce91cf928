"""A receiver behind a private CA that requires a client certificate, reached by the operator itself:
the ownership check (its GETs) and a WebhookTest both present the certificate of spec.tls
(a kubernetes.io/tls Secret) and trust the CA of spec.tls.caBundleRef (a ConfigMap); without the
certificate the same site refuses the handshake and the Webhook stays unverified."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web
from operator_helpers import (
    CONFIGMAPS,
    NS,
    SECRETS,
    TESTS,
    WEBHOOKS,
    Site,
    api_path,
    condition,
    create_webhook,
    token_of,
    wait_for,
)

from hookline.sender.bus.natsserver import free_port
from hookline.sender.transport.egress import EgressPolicy


@pytest.fixture
async def mtls_site() -> AsyncIterator[tuple[Site, trustme.CA, trustme.LeafCert]]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    site = Site()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    site.base = f"https://127.0.0.1:{port}"
    yield site, ca, ca.issue_cert("operator.hookline.test")
    await runner.cleanup()


def verified(cluster: Any, name: str) -> bool:
    return condition(cluster.get(WEBHOOKS, name), "Verified").get("status") == "True"


async def test_the_ownership_check_and_a_webhook_test_present_the_client_certificate(
    cluster, start_operator, mtls_site
):
    site, ca, client = mtls_site
    pems = {"tls.crt": client.cert_chain_pems[0].bytes(), "tls.key": client.private_key_pem.bytes()}
    tls_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "client-cert", "namespace": NS},
        "data": {k: base64.b64encode(v).decode() for k, v in pems.items()},
    }
    await cluster.call("POST", api_path(SECRETS), tls_secret)
    bundle = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "private-ca", "namespace": NS}}
    await cluster.call(
        "POST", api_path(CONFIGMAPS), {**bundle, "data": {"ca.crt": ca.cert_pem.bytes().decode()}}
    )
    await start_operator(egress=EgressPolicy(["127.0.0.0/8"], allow_http=True))
    tls = {"clientCertificateSecretRef": {"name": "client-cert"}, "caBundleRef": {"name": "private-ca"}}
    for name, spec in (
        ("with-cert", {"tls": tls}),
        ("ca-only", {"tls": {"caBundleRef": {"name": "private-ca"}}}),
    ):
        await create_webhook(cluster, name, url=site.url(f"/hooks/{name}.php"), events=["click"], **spec)
        token = await wait_for(lambda n=name: token_of(cluster, n), f"{name}'s token")
        site.files[f"/hooks/hookline-{token}.txt"] = token

    await wait_for(lambda: verified(cluster, "with-cert"), "Verified through mTLS")
    assert any(path.startswith("/hooks/hookline-") for path in site.gets())
    test = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": "mtls-test", "namespace": NS},
        "spec": {
            "webhook": "with-cert",
            "event": "click",
            "data": {"recipient": "a@b.example", "original": "https://x.example/"},
        },
    }
    await cluster.call("POST", api_path(TESTS), test)

    def finished() -> dict[str, Any] | None:
        status = (cluster.get(TESTS, "mtls-test") or {}).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = await wait_for(finished, "the WebhookTest")
    assert status["phase"] == "Succeeded", status
    assert [p["path"] for p in site.posts()] == ["/hooks/with-cert.php"]

    # The CA alone: the check reaches no file (the handshake is refused) and says so.
    await wait_for(
        lambda: (
            (cluster.get(WEBHOOKS, "ca-only") or {})
            .get("status", {})
            .get("verification", {})
            .get("checks", 0)
            >= 2
        ),
        "two checks of ca-only",
    )
    assert not verified(cluster, "ca-only")
    assert not any("ca-only" in p for p in site.gets())
