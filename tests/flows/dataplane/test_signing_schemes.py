"""Every signing scheme end to end: a real engine on a real nats-server delivers to real aiohttp
receivers on 127.0.0.1, and independent implementations verify what arrives.

- rotation: with the old and the new key live, a receiver knowing only the old key and one knowing only
  the new key (the reference library ``standardwebhooks``) both accept every request; once the old key
  is removed it fails;
- ``v1a``: ed25519 verified with cryptography's Ed25519PublicKey from the JWK's ``x``, beside a ``v1``;
- RFC 9421 + RFC 9530, ed25519 and HMAC: verified by the ``http-message-signatures`` library (not our
  code), which refuses a changed body, method or timestamp;
- a secret header value reaches the receiver and appears in no metric and no attempt record;
- mTLS: a receiver with ``ssl.CERT_REQUIRED`` accepts the configured client certificate, refuses without.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from dataplane_helpers import Receiver, sender_config, wait_until
from http_message_signatures import HTTPMessageVerifier, InvalidSignature, MappingKeyResolver, algorithms
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook, WebhookVerificationError

from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams
from hookline.sender.model.credentials import Credentials, TLSMaterial
from hookline.sender.model.events import parse_event
from hookline.sender.model.signingkeys import generate_key_text, parse_signing_key
from hookline.sender.observe.metrics import SenderMetrics, render
from hookline.sender.transport.egress import EgressPolicy

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
TOKEN = "Bearer s3cr3t-header-value-7f1d9"


def event(event_id: str) -> Any:
    return parse_event(
        {
            "id": event_id,
            "type": "open",
            "time": 1_700_000_000,
            "recipient": "a@example.com",
            "ip": "192.0.2.7",
        }
    )


class Senders:
    """Real engines on one NATS connection, stopped at teardown."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.registry = CollectorRegistry()
        self.metrics = SenderMetrics(self.registry)
        self.stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(self, name: str, url: str, creds: Credentials | None, **spec: Any) -> SenderRuntime:
        cfg = sender_config("unused", url, name=name, **spec)
        policy = EgressPolicy(["127.0.0.0/8"], allow_http=True)
        runtime = await SenderRuntime.create(self.nc, cfg, policy, self.metrics, creds)
        stop = asyncio.Event()
        self.stops.append((stop, asyncio.create_task(runtime.run(stop))))
        await wait_until(lambda: runtime.engine.readiness() is None, what=f"{name} consuming")
        return runtime

    async def close(self) -> None:
        for stop, task in self.stops:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def senders(nats) -> AsyncIterator[Senders]:
    nc, _js = nats
    await prepare_streams(nc)
    handle = Senders(nc)
    yield handle
    await handle.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    handle = await Receiver().start()
    yield handle
    await handle.stop()


async def deliver(nats: Any, receiver: Receiver, *ids: str) -> list[Any]:
    nc, js = nats
    await bus.publish_events(nc, js, [event(i) for i in ids])
    await wait_until(lambda: set(ids) <= set(receiver.delivered()), what=f"{ids} delivered")
    return [receiver.delivered()[i] for i in ids]


def accepts(secret: str, request: Any) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


def keys(*texts: str) -> Credentials:
    return Credentials(keys=tuple(parse_signing_key(t) for t in texts))


async def test_during_a_rotation_receivers_with_only_the_old_or_only_the_new_key_accept_every_request(
    nats, senders, receiver
):
    url = f"{receiver.url}/hooks/rotating.php"
    signing = {"signing": {"secretRefs": [{"name": "old", "key": "k"}, {"name": "new", "key": "k"}]}}
    await senders.start("rotating", url, keys(OLD, NEW), format="json", **signing)
    during = await deliver(nats, receiver, *(f"rot-{n}" for n in range(5)))
    for request in during:
        assert len(request.headers["webhook-signature"].split()) == 2
        assert accepts(OLD, request) and accepts(NEW, request)
    await senders.close()  # the old key removed: a new engine with the new key only

    await senders.start(
        "rotating", url, keys(NEW), format="json", signing={"secretRef": {"name": "new", "key": "k"}}
    )
    (after,) = await deliver(nats, receiver, "rot-after")
    assert accepts(NEW, after) and not accepts(OLD, after)


async def test_v1a_verifies_with_the_public_key_from_its_jwk_beside_a_v1(nats, senders, receiver):
    private = parse_signing_key(generate_key_text("ed25519"))
    jwk = private.jwk()
    assert (
        jwk is not None and jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == private.key_id
    )
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
    url = f"{receiver.url}/hooks/asym.php"
    signing = {"secretRefs": [{"name": "hmac", "key": "k"}, {"name": "ed", "key": "k"}]}
    await senders.start(
        "asym", url, Credentials(keys=(parse_signing_key(OLD), private)), format="json", signing=signing
    )
    (request,) = await deliver(nats, receiver, "asym-1")
    signatures = dict(part.split(",", 1) for part in request.headers["webhook-signature"].split())
    assert set(signatures) == {"v1", "v1a"}
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    public.verify(base64.b64decode(signatures["v1a"]), signed)  # raises when it does not verify
    assert accepts(OLD, request)
    with pytest.raises(Exception):  # noqa: B017 (cryptography raises InvalidSignature)
        public.verify(base64.b64decode(signatures["v1a"]), signed + b"tampered")


def rfc9421_verify(
    request: Any, url: str, algorithm: Any, key: Any, *, method: str = "POST", body: bytes | None = None
) -> None:
    """The independent verifier: http-message-signatures, with the key under its key id."""
    message = types.SimpleNamespace(method=method, url=url, headers=dict(request.headers))
    sig_input = request.headers["Signature-Input"]
    keyid = sig_input.split('keyid="', 1)[1].split('"', 1)[0]
    resolver = MappingKeyResolver(public_keys={keyid: key}, private_keys={})
    verifier = HTTPMessageVerifier(signature_algorithm=algorithm, key_resolver=resolver)
    (result,) = verifier.verify(
        message,
        body=request.body if body is None else body,
        require_components=("@method", "@target-uri", "content-digest", "webhook-id", "webhook-timestamp"),
        max_age=datetime.timedelta(minutes=5),
    )
    assert result.parameters["keyid"] == keyid


@pytest.mark.parametrize("kind", ["ed25519", "hmac-sha256"])
async def test_rfc9421_signatures_verify_independently_and_tampering_is_refused(
    nats, senders, receiver, kind
):
    key = parse_signing_key(generate_key_text(kind))  # type: ignore[arg-type]
    url = f"{receiver.url}/hooks/httpsig-{kind}.php"
    signing = {"scheme": "HTTPMessageSignatures", "secretRef": {"name": "k", "key": "k"}}
    await senders.start(f"httpsig-{kind}", url, Credentials(keys=(key,)), signing=signing)
    (request,) = await deliver(nats, receiver, f"sig-{kind}")
    assert "webhook-signature" not in request.headers and request.headers["Content-Digest"].startswith(
        "sha-256=:"
    )
    if kind == "ed25519":
        algorithm, verify_key = algorithms.ED25519, key.private_key.public_key()
    else:
        algorithm, verify_key = algorithms.HMAC_SHA256, key.secret
    rfc9421_verify(request, url, algorithm, verify_key)
    with pytest.raises(InvalidSignature):
        rfc9421_verify(request, url, algorithm, verify_key, body=request.body + b"&x=1")
    with pytest.raises(InvalidSignature):
        rfc9421_verify(request, url, algorithm, verify_key, method="PUT")
    later = types.SimpleNamespace(
        body=request.body, headers={**request.headers, "webhook-timestamp": "1700000001"}
    )
    with pytest.raises(InvalidSignature):
        rfc9421_verify(later, url, algorithm, verify_key)
    with pytest.raises(InvalidSignature):
        rfc9421_verify(request, url + "?other=1", algorithm, verify_key)


async def test_a_secret_header_reaches_the_receiver_and_no_metric_or_attempt_record(nats, senders, receiver):
    url = f"{receiver.url}/hooks/authz.php"
    creds = Credentials(headers=(("Authorization", TOKEN),))
    spec = {
        "secretHeaders": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "t", "key": "t"}}}]
    }
    receiver.status = 500  # failed attempts are all recorded, with the request's headers named
    runtime = await senders.start("authz", url, creds, **spec, delivery={"maxAttempts": 2})
    nc, js = nats
    await bus.publish_events(nc, js, [event("authz-1")])
    await wait_until(lambda: len(receiver.requests) >= 1, what="a request")
    assert receiver.requests[0].headers["Authorization"] == TOKEN
    assert TOKEN not in repr(creds) and TOKEN not in repr(runtime.engine.delivery.__dict__.get("keys"))
    assert TOKEN not in render(senders.registry).decode()
    stored = await _attempt_records(js)
    assert stored and all(TOKEN.encode() not in raw for raw in stored)


async def _attempt_records(js: Any) -> list[bytes]:
    """Every message of the attempt log and of the failed-attempts stream, raw."""
    out = []
    for stream in ("HOOKLINE_ATTEMPTS", "HOOKLINE_FAILED_ATTEMPTS"):
        try:
            info = await js.stream_info(stream)
        except Exception:  # a stream this version does not have
            continue
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                out.append((await js.get_msg(stream, seq)).data or b"")
            except Exception:  # deleted in between
                continue
    return out


@pytest.fixture
def pki() -> tuple[trustme.CA, trustme.LeafCert, trustme.LeafCert]:
    ca = trustme.CA()
    return ca, ca.issue_cert("127.0.0.1"), ca.issue_cert("sender.hookline.test")


async def test_mtls_receiver_accepts_the_configured_client_certificate_and_refuses_without(
    nats, senders, pki
):
    ca, server, client = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append({"id": request.headers.get("webhook-id"), "peer": peer})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        url = f"https://127.0.0.1:{port}/hooks/mtls.php"
        ca_pem = ca.cert_pem.bytes()
        with_cert = TLSMaterial(client.cert_chain_pems[0].bytes(), client.private_key_pem.bytes(), ca_pem)
        tls_spec = {"tls": {"clientCertificateSecretRef": {"name": "c"}, "caBundleRef": {"name": "ca"}}}
        nc, js = nats
        await senders.start("mtls", url, Credentials(tls=with_cert), **tls_spec)
        await bus.publish_events(nc, js, [event("mtls-1")])
        await wait_until(lambda: any(s["id"] == "mtls-1" for s in seen), what="delivered over mTLS")
        assert seen[0]["peer"]["subjectAltName"] == (("DNS", "sender.hookline.test"),)
        await senders.close()

        # The CA alone (no client certificate): the handshake is refused, nothing reaches the handler.
        ca_only = TLSMaterial(None, None, ca_pem)
        runtime = await senders.start(
            "mtls-nocert", url, Credentials(tls=ca_only), tls={"caBundleRef": {"name": "ca"}}
        )
        await bus.publish_events(nc, js, [event("mtls-2")])
        await wait_until(lambda: _failures(senders, "mtls-nocert") >= 1, what="a refused attempt")
        assert not any(s["id"] == "mtls-2" for s in seen)
        assert runtime.engine.readiness() is None
    finally:
        await runner.cleanup()


def _failures(senders: Senders, webhook: str) -> float:
    total = 0.0
    for family in senders.registry.collect():
        for sample in family.samples:
            ours = (
                sample.labels.get("webhook") == webhook and sample.name == "hookline_delivery_attempts_total"
            )
            if ours and sample.labels.get("outcome") != "success":
                total += sample.value
    return total


async def test_a_key_change_swaps_the_engine_without_losing_what_was_in_flight(nats, receiver):
    """What a changed Secret does to a running engine (a pool replica's new entry): the old engine
    finishes its requests and gives back what it holds, the new one signs with the new key; every
    event arrives, each request verifies with the key of the engine that sent it."""
    nc, js = nats
    await prepare_streams(nc)
    supervisor = Supervisor(
        nc, EgressPolicy(["127.0.0.0/8"], allow_http=True), SenderMetrics(CollectorRegistry())
    )
    signing = {"signing": {"secretRef": {"name": "k", "key": "k"}}}
    cfg = sender_config("unused", f"{receiver.url}/hooks/swap.php", name="swap", format="json", **signing)
    receiver.delay = 0.3  # requests are in flight when the key changes
    try:
        supervisor.apply(cfg, keys(OLD))
        await wait_until(lambda: supervisor.readiness() is None, what="engine running")
        ids = [f"swap-{n}" for n in range(40)]
        await bus.publish_events(nc, js, [event(i) for i in ids])
        await wait_until(lambda: len(receiver.requests) >= 3, what="requests in flight")
        assert supervisor.apply(cfg, keys(NEW)) == "updated"
        await wait_until(
            lambda: set(ids) <= set(receiver.delivered()), within=60, what="every event delivered"
        )
    finally:
        await supervisor.close()
    assert all(accepts(OLD, r) or accepts(NEW, r) for r in receiver.requests)
    assert any(accepts(NEW, r) for r in receiver.requests) and any(accepts(OLD, r) for r in receiver.requests)
    assert all(r.answered == 200 for r in receiver.requests)
