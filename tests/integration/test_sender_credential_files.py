"""A dedicated `hookline sender` process reads its credentials from the files the operator mounts (the
paths its config names, never the values): two signing keys (a rotation), a secret header value and a
client certificate with a private CA, and keeps the values out of its log and its /metrics."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import yaml
from aiohttp import web
from dataplane_helpers import SECRET, sender_config, wait_until, wait_until_ready
from standardwebhooks.webhooks import Webhook

from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.model.config import parse_sender_config
from hookline.sender.model.events import parse_event

NEW = "whsec_" + "TkVXTkVXTkVXTkVXTkVXTkVXTkVXTkVXTkVXTkVXISE="
TOKEN = "Bearer file-mounted-token-93ab"


def start_sender(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hookline.cli", "sender", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def test_a_sender_process_signs_with_every_mounted_key_and_presents_its_client_certificate(
    tmp_path, nats_server, nats
):
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("sender.hookline.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    got: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append({"headers": dict(request.headers), "body": await request.read()})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    files = {
        "old": SECRET + "\n",
        "new": NEW,
        "token": TOKEN + "\n",
        "tls.crt": client.cert_chain_pems[0].bytes().decode(),
        "tls.key": client.private_key_pem.bytes().decode(),
        "ca.crt": ca.cert_pem.bytes().decode(),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    header = {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}}
    base = sender_config(
        nats_server.url,
        f"https://127.0.0.1:{port}/hooks/files.php",
        format="json",
        signing={"secretRefs": [{"name": "k", "key": "old"}, {"name": "k", "key": "new"}]},
        secretHeaders=[header],
        tls={"clientCertificateSecretRef": {"name": "c"}, "caBundleRef": {"name": "ca"}},
    )
    doc = {
        **base.to_document(),
        "signingSecretFiles": [str(tmp_path / "old"), str(tmp_path / "new")],
        "secretHeaderFiles": {"Authorization": str(tmp_path / "token")},
        "tlsFiles": {
            "certFile": str(tmp_path / "tls.crt"),
            "keyFile": str(tmp_path / "tls.key"),
            "caFile": str(tmp_path / "ca.crt"),
        },
    }
    cfg = parse_sender_config(doc)
    config = tmp_path / "sender.yaml"
    config.write_text(yaml.safe_dump(cfg.to_document()))
    assert TOKEN not in config.read_text() and SECRET not in config.read_text()
    log = tmp_path / "sender.log"
    proc = start_sender(config, log)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://{cfg.listen}/readyz", proc)
            nc, js = nats
            events = [
                parse_event({"id": f"f-{i}", "type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})
                for i in range(3)
            ]
            await bus.publish_events(nc, js, events)
            await wait_until(lambda: len(got) >= 3, what="3 deliveries over mTLS")
            async with http.get(f"http://{cfg.listen}/metrics") as response:
                metrics = await response.text()
        for request in got:
            assert request["headers"]["Authorization"] == TOKEN
            Webhook(SECRET).verify(request["body"], request["headers"])
            Webhook(NEW).verify(request["body"], request["headers"])
        assert TOKEN not in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await runner.cleanup()
    text = log.read_text()
    assert TOKEN not in text and SECRET not in text and NEW not in text
