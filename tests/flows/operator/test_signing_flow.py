"""Signing and receiver credentials through the operator, on the strict API with real pool replicas on a
real nats-server and a real receiver:

- a key rotation done as the README says (add the new key, receivers accept both, remove the old one):
  while both are live a receiver with only the old key and one with only the new key accept every
  request (reference library ``standardwebhooks``); afterwards the old key fails;
- a key changed in place in its Secret reaches the pool within seconds (the Secret watch), no reconcile
  of the Webhook's own needed;
- ``signing.generate: ed25519``: the operator makes the key Secret, status.signing lists the key ids
  and the public key, and the JWKS endpoint serves it; ``v1a`` verifies with the public key taken from
  the JWKS document (cryptography's Ed25519PublicKey from the JWK's ``x``);
- a ``secretHeaders`` value reaches the receiver and appears in no ConfigMap, pool entry, status, Event,
  log line, metric or attempt record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
import trustme
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from operator_helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    SECRETS,
    STATEFULSETS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    token_of,
    wait_for,
)
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook, WebhookVerificationError

from hookline.api import CONFIG_HASH_ANNOTATION
from hookline.operator.loops.poolsync import POOL_LABEL, POOL_SELECTOR
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.bus.poolproto import PoolKey, pool_bucket
from hookline.sender.delivery.poolreplica import PoolReplica
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams
from hookline.sender.model.events import parse_event
from hookline.sender.observe.metrics import SenderMetrics, render
from hookline.sender.transport.egress import EgressPolicy

pytestmark = pytest.mark.slow

POOL_KEY = "pool key used by the signing flow test, 32+ characters"
OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_" + base64.b64encode(b"N" * 32).decode()
NEWER = "whsec_" + base64.b64encode(b"R" * 32).decode()
TOKEN = "Bearer receiver-token-5b0c2e7d91"


class Replica:
    """One pool replica in this process (as `hookline pool` runs it), its metrics kept for the grep."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, nats_url: str) -> None:
        self.nc = await bus.connect(nats_url)
        await prepare_streams(self.nc)
        policy = EgressPolicy(["127.0.0.0/8"], allow_http=True)
        self.supervisor = Supervisor(self.nc, policy, SenderMetrics(self.registry))
        member = PoolReplica(self.nc, "default", 0, PoolKey(POOL_KEY), self.supervisor)
        kv = await pool_bucket(self.nc.jetstream())
        self.tasks = [asyncio.create_task(member.follow(kv)), asyncio.create_task(member.report(kv))]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.supervisor.close()
        await self.nc.close()


@pytest.fixture
async def replica(nats_server) -> AsyncIterator[Replica]:
    handle = Replica()
    await handle.start(nats_server.url)
    yield handle
    await handle.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_body(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": encoded,
    }


def signing_of(cluster: Any, name: str) -> dict[str, Any]:
    return ((cluster.get(WEBHOOKS, name) or {}).get("status") or {}).get("signing") or {}


def accepts(secret: str, post: dict[str, Any]) -> bool:
    try:
        Webhook(secret).verify(post["body"], post["headers"])
    except WebhookVerificationError:
        return False
    return True


class Events:
    def __init__(self, nats_url: str, site: Any) -> None:
        self.nats_url, self.site, self.count = nats_url, site, 0

    async def deliver(self) -> dict[str, Any]:
        """Publish one open event and return the request the receiver got for it."""
        self.count += 1
        event_id = f"sig-{self.count}"
        raw = {"id": event_id, "type": "open", "time": 1_700_000_000, "recipient": "a@example.com"}
        nc = await bus.connect(self.nats_url)
        try:
            await bus.publish_events(
                nc, nc.jetstream(), [parse_event({**raw, "ip": "192.0.2.7", "database": "keys"})]
            )
        finally:
            await nc.close()

        def arrived() -> dict[str, Any] | None:
            return next((p for p in self.site.posts() if p["headers"].get("webhook-id") == event_id), None)

        return await wait_for(arrived, f"{event_id} delivered", within=30)

    async def first(self, wanted: Any, what: str, within: float = 30) -> dict[str, Any]:
        """Deliver events until one's request is ``wanted``; fail after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not wanted(post := await self.deliver()):
            assert loop.time() < deadline, f"no {what} within {within:g} s"
        return post


async def test_rotation_secret_watch_generated_key_jwks_and_a_secret_header_that_leaks_nowhere(
    cluster, site, start_operator, replica, nats_server, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    pool_key_file = tmp_path / "pool-key"
    pool_key_file.write_text(POOL_KEY)
    labels = {**POOL_SELECTOR, POOL_LABEL: "default"}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "hookline-pool-default", "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "serviceName": "hookline-pool-default",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "pool", "image": "x"}]},
            },
        },
    }
    await cluster.call("POST", api_path(STATEFULSETS), statefulset)
    await cluster.call("POST", api_path(SECRETS), secret_body("hook-keys", {"a": OLD}))
    await cluster.call("POST", api_path(SECRETS), secret_body("receiver-token", {"token": TOKEN}))
    keys_port = free_port()
    ca = trustme.CA()  # the JWKS endpoint serves HTTPS with a certificate of its own
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "keys.crt", tmp_path / "keys.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    await start_operator(
        pool_key_file=str(pool_key_file), keys_port=keys_port, keys_tls_cert=str(cert), keys_tls_key=str(key)
    )
    header = [
        {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "receiver-token", "key": "token"}}}
    ]
    common = {"events": ["open"], "database": "keys", "format": "json", "secretHeaders": header}
    await create_webhook(
        cluster,
        "rotating",
        url=site.url("/hooks/rotating.php"),
        sender={"mode": "Pool"},
        signing={"secretRefs": [{"name": "hook-keys", "key": "a"}], "generate": "ed25519"},
        **common,
    )
    # A dedicated twin: its ConfigMap must not carry the header value either.
    await create_webhook(
        cluster, "dedicated", url=site.url("/hooks/dedicated.php"), **{**common, "database": "other"}
    )
    # The keys (and the generated one's public key) are shown before the URL is verified, so the
    # receiver can be given them before its first delivery.
    await wait_for(
        lambda: len(signing_of(cluster, "rotating").get("keys") or []) == 2, "keys before verification"
    )
    assert condition(cluster.get(WEBHOOKS, "rotating"), "Verified").get("status") != "True"
    for name in ("rotating", "dedicated"):
        token = await wait_for(lambda n=name: token_of(cluster, n), f"{name}'s token")
        site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: condition(cluster.get(WEBHOOKS, "rotating"), "Ready").get("status") == "True", "Ready"
    )
    await wait_for(lambda: len(signing_of(cluster, "rotating").get("keys") or []) == 2, "two live keys")
    signing = signing_of(cluster, "rotating")
    assert signing["generatedSecret"] == "rotating-signing" and cluster.get(SECRETS, "rotating-signing")
    hmac_key, ed_key = signing["keys"]
    assert hmac_key["algorithm"] == "hmac-sha256" and hmac_key["keyId"].startswith("hmac-")
    assert "publicKey" not in hmac_key and hmac_key["secret"] == "hook-keys/a"
    assert ed_key["algorithm"] == "ed25519" and ed_key["publicKey"]

    # The public key, fetched as a customer would: the JWKS endpoint, one Webhook's and everyone's.
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
        async with http.get(f"https://127.0.0.1:{keys_port}/v1/keys/{NS}/rotating") as response:
            assert response.status == 200 and response.content_type == "application/jwk-set+json"
            (jwk,) = (await response.json(content_type=None))["keys"]
        async with http.get(f"https://127.0.0.1:{keys_port}/.well-known/jwks.json") as response:
            assert jwk in (await response.json(content_type=None))["keys"]
        async with http.get(f"https://127.0.0.1:{keys_port}/v1/keys/{NS}/dedicated") as response:
            assert response.status == 404  # HMAC only: nothing public
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", ed_key["keyId"])
    public = Ed25519PublicKey.from_public_bytes(
        base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    )

    events = Events(nats_server.url, site)
    first = await events.deliver()
    assert first["headers"]["Authorization"] == TOKEN
    assert accepts(OLD, first)
    signatures = dict(p.split(",", 1) for p in first["headers"]["webhook-signature"].split())
    signed = (
        f"{first['headers']['webhook-id']}.{first['headers']['webhook-timestamp']}.".encode() + first["body"]
    )
    public.verify(base64.b64decode(signatures["v1a"]), signed)
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(signatures["v1a"]), signed + b" ")

    # Rotation: add the new key; both receivers accept every request; remove the old key.
    await cluster.call("PATCH", api_path(SECRETS, name="hook-keys"), {"data": {"b": b64(NEW)}})
    both = {
        "secretRefs": [{"name": "hook-keys", "key": "a"}, {"name": "hook-keys", "key": "b"}],
        "generate": "ed25519",
    }
    await cluster.call("PATCH", api_path(WEBHOOKS, name="rotating"), {"spec": {"signing": both}})
    await wait_for(lambda: len(signing_of(cluster, "rotating").get("keys") or []) == 3, "three live keys")
    # The replica swaps its engine (the old one drains) once it reads the new entry; from then on:
    during = [await events.first(lambda p: accepts(NEW, p), "a request signed with the new key")]
    during += [await events.deliver() for _ in range(3)]
    for post in during:
        assert accepts(OLD, post) and accepts(NEW, post)
    only_new = {"secretRefs": [{"name": "hook-keys", "key": "b"}], "generate": "ed25519"}
    await cluster.call("PATCH", api_path(WEBHOOKS, name="rotating"), {"spec": {"signing": only_new}})
    await wait_for(lambda: len(signing_of(cluster, "rotating").get("keys") or []) == 2, "the old key gone")
    after = await events.first(lambda p: not accepts(OLD, p), "a request the old key fails")
    assert accepts(NEW, after)
    assert all(not accepts(OLD, p) for p in [await events.deliver() for _ in range(2)])

    # In place: the Secret's value changes, the Webhook does not; the watch brings it within seconds.
    await cluster.call("PATCH", api_path(SECRETS, name="hook-keys"), {"data": {"b": b64(NEWER)}})
    await events.first(lambda p: accepts(NEWER, p), "a request signed with the changed Secret", within=15)
    annotations = (cluster.get(WEBHOOKS, "rotating") or {})["metadata"].get("annotations") or {}
    assert annotations.get("secrets.hookline.io/changed", "").startswith("hook-keys@")  # the watch woke it

    # The header value: at the receiver, and nowhere else.
    assert all(p["headers"].get("Authorization") == TOKEN for p in site.posts())
    config_map = cluster.get(CONFIGMAPS, "dedicated-sender")
    assert config_map is not None and "secretHeaderFiles" in config_map["data"]["sender.yaml"]
    secrets = kmock.resource(SECRETS)
    for (resource, _ns, name), obj in cluster.objects.items():
        if resource != secrets and not obj.deleted:
            assert TOKEN not in json.dumps(obj.raw), f"{resource} {name} holds the header value"
    nc = await bus.connect(nats_server.url)
    try:
        kv = await pool_bucket(nc.jetstream())
        for key in await kv.keys():
            assert TOKEN.encode() not in (await kv.get(key)).value, f"pool entry {key} holds it in clear"
        for stream in ("HOOKLINE_ATTEMPTS", "HOOKLINE_FAILED_ATTEMPTS", "HOOKLINE_DEAD_LETTERS"):
            try:
                info = await nc.jetstream().stream_info(stream)
            except Exception:  # not made in this run
                continue
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    data = (await nc.jetstream().get_msg(stream, seq)).data or b""
                except Exception:  # removed meanwhile
                    continue
                assert TOKEN.encode() not in data, f"{stream} #{seq} holds it"
    finally:
        await nc.close()
    assert TOKEN not in render(replica.registry).decode()
    for value in (TOKEN, OLD, NEW):  # as written, and as a Secret's data holds it
        assert value not in caplog.text and b64(value) not in caplog.text

    # A dedicated sender: a changed Secret it reads rolls its pods (a new config hash on the template).
    def template_hash() -> str:
        deployment = cluster.get(DEPLOYMENTS, "dedicated-sender") or {}
        annotations = (
            deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
        )
        return str(annotations.get(CONFIG_HASH_ANNOTATION, ""))

    before = await wait_for(template_hash, "the dedicated sender's Deployment")
    await cluster.call(
        "PATCH", api_path(SECRETS, name="receiver-token"), {"data": {"token": b64(TOKEN + "-2")}}
    )
    await wait_for(lambda: template_hash() not in ("", before), "the dedicated sender rolled", within=15)
