"""Producer tokens (issue 19, item 6) against a real nats-server: each token publishes only for its
databases (403 naming the database, nothing of the request published), tokens in clear, as SHA-256 or
in a file of their own, the old single token as every database, no token in metrics or logs; the
command refuses to start without tokens unless --insecure-no-auth (with a WARNING), and serves TLS."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from dataplane_helpers import add_witness, wait_until_ready
from kubecerts import make_certificates
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.cmd.ingestauth import follow_token_files, producer_auth_of
from hookline.sender.ingest.producers import ProducerAuth, TokensError, load_tokens_file
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.observe.health import bound_port
from hookline.sender.observe.metrics import IngestMetrics, render

CRM = "crm-token-0123456789abcdef"
SHOP = "shop-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
REPORTS = "reports-token-0123456789abcdef"


def event(database: str | None, event_id: str) -> dict:
    doc = {"id": event_id, "type": "open", "recipient": "anna@example.com", "ip": "192.0.2.7"}
    return doc | ({"database": database} if database else {})


@pytest.fixture
def tokens_file(tmp_path) -> str:
    (tmp_path / "reports-token").write_text(REPORTS + "\n")
    doc = {
        "tokens": [
            {"name": "crm", "token": CRM, "databases": ["crm", "newsletter"]},
            {"name": "shop", "sha256": hashlib.sha256(SHOP.encode()).hexdigest(), "databases": ["shop"]},
            {"name": "admin", "token": ADMIN, "databases": ["*"]},
            {"name": "reports", "tokenFile": str(tmp_path / "reports-token"), "databases": ["reports"]},
        ]
    }
    path = tmp_path / "tokens.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return str(path)


@pytest.fixture
async def service(nats, tokens_file) -> AsyncIterator[dict]:
    nc, js = nats
    await add_witness(js)
    registry = CollectorRegistry()
    ingest = Ingest(nc, js, IngestMetrics(registry), auth=ProducerAuth(load_tokens_file(tokens_file)))
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    async with aiohttp.ClientSession() as http:

        async def post(token: str | None, body: object) -> tuple[int, dict]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(f"{base}/v1/events", json=body, headers=headers) as response:
                return response.status, await response.json()

        async def stored() -> int:
            return (await js.stream_info(bus.STREAM)).state.messages

        yield {"post": post, "stored": stored, "registry": registry}
    await runner.cleanup()


async def test_a_token_publishes_only_for_its_databases_and_a_mixed_request_is_refused_whole(service):
    post, stored = service["post"], service["stored"]
    assert (await post(CRM, [event("crm", "c1"), event("newsletter", "c2")]))[0] == 202
    before = await stored()
    status, body = await post(CRM, event("shop", "c3"))
    assert status == 403
    assert "'crm'" in body["error"] and "'shop'" in body["error"]
    assert body["errors"] == [
        {
            "index": 0,
            "id": "c3",
            "field": "database",
            "message": "token 'crm' may not publish for database 'shop' (it may for: crm, newsletter)",
        }
    ]
    # One allowed and one refused event: the whole request is refused, nothing of it is stored.
    status, body = await post(CRM, [event("crm", "c4"), event("shop", "c5"), event(None, "c6")])
    assert status == 403 and [e["index"] for e in body["errors"]] == [1, 2]
    assert "'(none)'" in body["error"] and "nothing of this request was published" in body["error"]
    assert await stored() == before
    # The SHA-256 form, the token file form and '*' (also for events without a database).
    assert (await post(SHOP, event("shop", "s1")))[0] == 202
    assert (await post(SHOP, event("crm", "s2")))[0] == 403
    assert (await post(REPORTS, event("reports", "r1")))[0] == 202
    assert (await post(ADMIN, [event("shop", "a1"), event(None, "a2"), event("x", "a3")]))[0] == 202
    assert await stored() == before + 5
    # Unknown and missing tokens: 401.
    assert (await post("not-a-token-0123456789", event("crm", "u1")))[0] == 401
    assert (await post(None, event("crm", "u2")))[0] == 401

    text = render(service["registry"]).decode()
    assert 'hookline_ingest_producer_requests_total{code="403",producer="crm"} 2.0' in text
    assert 'hookline_ingest_producer_requests_total{code="202",producer="shop"} 1.0' in text
    assert 'hookline_ingest_producer_requests_total{code="401",producer="unknown"} 2.0' in text
    for secret in (CRM, SHOP, ADMIN, REPORTS, hashlib.sha256(SHOP.encode()).hexdigest()):
        assert secret not in text


def test_the_tokens_file_names_what_is_wrong(tmp_path):
    def problem(doc: object) -> str:
        path = tmp_path / "t.yaml"
        path.write_text(json.dumps(doc))
        with pytest.raises(TokensError) as caught:
            ProducerAuth(load_tokens_file(str(path)))
        return str(caught.value)

    assert "tokens[0].databases" in problem({"tokens": [{"name": "a", "token": CRM, "databases": []}]})
    assert "exactly one of token, sha256, tokenFile" in problem(
        {"tokens": [{"name": "a", "token": CRM, "sha256": "0" * 64, "databases": ["*"]}]}
    )
    assert "at least 16 characters" in problem(
        {"tokens": [{"name": "a", "token": "short", "databases": ["*"]}]}
    )
    assert "tokens[0].name" in problem({"tokens": [{"name": "Bad Name", "token": CRM, "databases": ["*"]}]})
    assert "64 hex digits" in problem({"tokens": [{"name": "a", "sha256": "xyz", "databases": ["*"]}]})
    twice = {"name": "a", "token": CRM, "databases": ["*"]}
    assert "a given twice" in problem({"tokens": [twice, twice]})
    same = {"name": "b", "token": CRM, "databases": ["*"]}
    assert "producers a, b have the same token" in problem({"tokens": [twice, same]})
    assert "non-empty list" in problem({"tokens": []})


def _ingest(nats_url: str, port: int, *flags: str) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HOOKLINE_INGEST_TOKEN", "HOOKLINE_INGEST_TOKENS_FILE")
    }
    command = [sys.executable, "-m", "hookline.cli", "ingest", "--listen", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*command, "--nats-url", nats_url, *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_the_command_refuses_to_start_without_tokens_unless_told(nats_server):
    proc = _ingest(nats_server.url, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no producer token" in out.decode() and "--insecure-no-auth" in out.decode()
    proc = _ingest(nats_server.url, free_port(), "--insecure-no-auth", "--token-file", "/dev/null")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--token-file /dev/null is empty" in out.decode()


async def test_the_command_serves_tls_with_producer_tokens_and_warns_when_open(
    nats_server, tmp_path, tokens_file
):
    certs = make_certificates(tmp_path / "certs")
    port, open_port = free_port(), free_port()
    tls = _ingest(
        nats_server.url,
        port,
        "--tokens-file",
        tokens_file,
        "--tls-cert",
        str(certs.serving),
        "--tls-key",
        str(certs.serving_key),
    )
    insecure = _ingest(nats_server.url, open_port, "--insecure-no-auth")
    context = ssl.create_default_context(cafile=str(certs.ca))
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{open_port}/readyz", insecure)
            async with http.post(f"http://127.0.0.1:{open_port}/v1/events", json=event("any", "o1")) as r:
                assert r.status == 202
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as https:
            await wait_until_ready(https, f"https://127.0.0.1:{port}/readyz", tls)
            headers = {"Authorization": f"Bearer {CRM}"}
            async with https.post(
                f"https://127.0.0.1:{port}/v1/events", json=event("crm", "t1"), headers=headers
            ) as r:
                assert r.status == 202
            async with https.post(
                f"https://127.0.0.1:{port}/v1/events", json=event("shop", "t2"), headers=headers
            ) as r:
                assert r.status == 403
        async with aiohttp.ClientSession() as plain:  # the TLS port speaks no plain HTTP
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{port}/readyz") as r:
                    await r.read()
    finally:
        for proc in (tls, insecure):
            proc.terminate()
    tls_log = tls.communicate(timeout=30)[0].decode()
    open_log = insecure.communicate(timeout=30)[0].decode()
    assert "https; producers: crm, shop, admin, reports" in tls_log
    assert all(token not in tls_log for token in (CRM, SHOP, ADMIN, REPORTS))
    assert "WARNING" in open_log and "authentication is OFF (--insecure-no-auth)" in open_log


async def test_a_rotated_tokens_secret_takes_effect_without_a_restart(nats_server, tmp_path):
    path = tmp_path / "tokens.yaml"

    def write(token: str) -> None:
        path.write_text(json.dumps({"tokens": [{"name": "crm", "token": token, "databases": ["crm"]}]}))

    write(CRM)
    port = free_port()
    proc = _ingest(nats_server.url, port, "--tokens-file", str(path), "--tokens-reload", "1s")
    rotated = "crm-token-rotated-0123456789"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{port}/readyz", proc)

            async def status(token: str, event_id: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                url = f"http://127.0.0.1:{port}/v1/events"
                async with http.post(url, json=event("crm", event_id), headers=headers) as response:
                    return response.status

            assert await status(CRM, "before") == 202
            write(rotated)
            for attempt in range(100):
                if await status(rotated, f"after-{attempt}") == 202:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the rotated token was never accepted")
            assert await status(CRM, "old") == 401
    finally:
        proc.terminate()
    log = proc.communicate(timeout=30)[0].decode()
    assert "producer tokens reloaded: crm" in log
    assert CRM not in log and rotated not in log


async def test_a_tokens_file_that_no_longer_reads_keeps_the_tokens_in_use(tmp_path, caplog):
    path = tmp_path / "tokens.yaml"
    path.write_text(json.dumps({"tokens": [{"name": "crm", "token": CRM, "databases": ["crm"]}]}))
    args = argparse.Namespace(
        tokens_file=str(path), token_file=None, insecure_no_auth=False, tokens_reload=0.05
    )
    log = logging.getLogger("test.ingest.reload")
    holder = [producer_auth_of(args, log, env={})]
    follow = asyncio.create_task(follow_token_files(args, lambda: holder[0], holder.append, log))
    try:
        path.write_text("tokens: [")
        for _ in range(200):
            if "were not reloaded" in caplog.text:
                break
            await asyncio.sleep(0.02)
        assert "were not reloaded" in caplog.text and "the ones in use stay" in caplog.text
        assert len(holder) == 1 and holder[0].identify(f"Bearer {CRM}").name == "crm"
    finally:
        follow.cancel()
