"""`hookline dev` as a real process: manifests, ownership check, in-process senders, demo receiver, Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from dataplane_helpers import SECRET, Receiver, wait_until

from hookline.manifests import ManifestError, load_manifests
from hookline.sender.bus.natsserver import free_port
from hookline.sender.observe.health import start_site

SIGNING = {"secretRef": {"name": "hook-secret", "key": "secret"}}


def webhook(name: str, url: str, **spec) -> dict:
    return {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name},
        "spec": {"url": url, "events": ["open", "click"], **spec},
    }


def secret(value: str = SECRET) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hook-secret"},
        "stringData": {"secret": value},
    }


def write_manifests(directory: Path, *docs: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hooks.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


class DevProcess:
    def __init__(self, tmp_path: Path, manifests: Path, *extra: str, state: str = "state") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out = tmp_path / f"dev-{self.port}.out"
        self.err = tmp_path / f"dev-{self.port}.err"
        command = ["dev", "--manifests", str(manifests), "--port", str(self.port)]
        command += ["--state-dir", str(tmp_path / state), *extra]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hookline.cli", *command], stdout=out, stderr=err
            )

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    async def webhooks(self, http: aiohttp.ClientSession) -> dict[str, dict]:
        async with http.get(f"{self.base}/v1/webhooks") as response:
            assert response.status == 200
            return {item["metadata"]["name"]: item for item in (await response.json())["items"]}

    async def wait_listing(self, http: aiohttp.ClientSession) -> dict[str, dict]:
        for _ in range(600):
            if self.proc.poll() is not None:
                raise AssertionError(f"hookline dev exited {self.proc.returncode}: {self.stderr()}")
            try:
                return await self.webhooks(http)
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        raise AssertionError("hookline dev did not serve /v1/webhooks within 60 s")

    async def wait_condition(self, http, name: str, type_: str, status: str) -> dict:
        for _ in range(600):
            item = (await self.wait_listing(http))[name]
            conditions = {c["type"]: c for c in item["status"]["conditions"]}
            if conditions.get(type_, {}).get("status") == status:
                return item
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name}: {type_} did not become {status}: {item['status']}")

    async def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        for _ in range(1200):
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError("hookline dev did not stop within 60 s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_with_demo_receiver_verifies_and_delivers_what_is_posted(tmp_path):
    demo_port = free_port()
    demo = f"http://127.0.0.1:{demo_port}"
    manifests = write_manifests(
        tmp_path / "manifests",
        secret(),
        webhook(
            "signed-json",
            f"{demo}/hooks/newsletter.php",
            format="json",
            database="newsletter",
            signing=SIGNING,
        ),
        webhook("plain-form", f"{demo}/crm/copernica.php", events=["create"]),
    )
    dev = DevProcess(tmp_path, manifests, "--demo-receiver", f"127.0.0.1:{demo_port}")
    try:
        async with aiohttp.ClientSession() as http:
            for name in ("signed-json", "plain-form"):
                item = await dev.wait_condition(http, name, "Ready", "True")
                assert item["status"]["verification"]["verifiedURL"].startswith(demo)
                assert item["status"]["sender"]["readyReplicas"] == 1
            events = [
                {
                    "id": "dev-open-1",
                    "type": "open",
                    "recipient": "anna@example.com",
                    "ip": "192.0.2.7",
                    "database": "newsletter",
                },
                {
                    "id": "dev-create-1",
                    "type": "create",
                    "profile": 5,
                    "database": "crm",
                    "fields": {"email": "b@example.com"},
                },
            ]
            async with http.post(f"{dev.base}/v1/events", json=events) as response:
                assert response.status == 202
            listing = await dev.webhooks(http)
            # The attempt log, as `hookline attempts` shows it: the first success is always sampled.
            attempts_url = f"{dev.base}/v1/webhooks/default/signed-json/attempts"
            items: list = []
            for _ in range(100):
                async with http.get(attempts_url) as response:
                    assert response.status == 200
                    items = (await response.json())["items"]
                if items:
                    break
                await asyncio.sleep(0.1)
            assert [(i["eventId"], i["ok"], i["statusCode"]) for i in items] == [("dev-open-1", True, 200)]
            async with http.get(f"{attempts_url}?failed=1") as response:
                assert (await response.json())["items"] == []
            async with http.get(f"{dev.base}/v1/webhooks/default/nope/attempts") as response:
                assert response.status == 404
        await wait_until(
            lambda: "dev-open-1" in dev.stdout() and "dev-create-1" in dev.stdout(), what="printed"
        )
        lines = dev.stdout().splitlines()
        [opened] = [line for line in lines if "dev-open-1" in line]
        assert "open" in opened and "recipient=anna@example.com" in opened and "signature OK" in opened
        [created] = [line for line in lines if "dev-create-1" in line]
        assert "create" in created and "profile=5" in created and "unsigned" in created
        nats_port = int(re.search(r"nats-server on nats://127\.0\.0\.1:(\d+)", dev.stderr()).group(1))
        assert port_open(nats_port)
        assert await dev.stop(signal.SIGINT) == 0
    finally:
        dev.kill()
    assert not port_open(nats_port)
    assert not port_open(dev.port)
    assert not port_open(demo_port)
    assert SECRET not in dev.stderr() + dev.stdout() + str(listing)
    assert "stopping" in dev.stderr()


async def test_a_script_can_finish_verification_from_the_listing_and_the_token_is_stable(tmp_path):
    served: dict[str, str] = {}
    receiver = Receiver()

    async def serve_file(request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        if name in served:
            return web.Response(text=served[name])
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve_file)
    app.router.add_post("/{tail:.*}", receiver._handle)
    port = free_port()
    runner = await start_site(app, "127.0.0.1", port)
    manifests = write_manifests(
        tmp_path / "m", webhook("mine", f"http://127.0.0.1:{port}/in/hook.php", format="json")
    )
    dev = DevProcess(tmp_path, manifests)
    try:
        async with aiohttp.ClientSession() as http:
            item = await dev.wait_condition(http, "mine", "Verified", "False")
            item = await wait_for_reason(dev, http, "mine", "FileNotFound")
            verification = item["status"]["verification"]
            assert verification["locations"] == [
                f"http://127.0.0.1:{port}/in/{verification['fileName']}",
                f"http://127.0.0.1:{port}/{verification['fileName']}",
            ]
            assert verification["fileName"] in verification["lastError"]
            ready = {c["type"]: c for c in item["status"]["conditions"]}["Ready"]
            assert (ready["status"], ready["reason"]) == ("False", "NotVerified")
            # The script places the file the listing asks for.
            served[verification["fileName"]] = verification["content"]
            await dev.wait_condition(http, "mine", "Ready", "True")
            async with http.post(
                f"{dev.base}/v1/events",
                json={
                    "id": "s-1",
                    "type": "click",
                    "recipient": "a@example.com",
                    "ip": "192.0.2.1",
                    "original": "https://x.example/",
                },
            ) as response:
                assert response.status == 202
            await wait_until(lambda: "s-1" in receiver.delivered(), what="delivery")
            assert re.search(r"verifying default/mine: FileNotFound, next check in \d+s", dev.stderr())
            assert await dev.stop(signal.SIGTERM) == 0

            again = DevProcess(tmp_path, manifests)  # same state dir: same token, verified again at once
            try:
                item = await again.wait_condition(http, "mine", "Ready", "True")
                assert item["status"]["verification"]["fileName"] == verification["fileName"]
                assert await again.stop() == 0
            finally:
                again.kill()
    finally:
        dev.kill()
        await runner.cleanup()


async def wait_for_reason(dev: DevProcess, http, name: str, reason: str) -> dict:
    for _ in range(600):
        item = (await dev.webhooks(http))[name]
        verified = {c["type"]: c for c in item["status"]["conditions"]}["Verified"]
        if verified["reason"] == reason:
            return item
        await asyncio.sleep(0.1)
    raise AssertionError(f"Verified reason never became {reason}")


def test_a_bad_manifest_is_refused_naming_the_file_and_field(tmp_path):
    manifests = write_manifests(tmp_path / "bad", webhook("typo", "http://127.0.0.1:9/h", events=["opne"]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hookline.cli",
            "dev",
            "--manifests",
            str(manifests),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert str(manifests / "hooks.yaml") in proc.stderr
    assert "spec.events[0]" in proc.stderr
    assert "opne" in proc.stderr


@pytest.mark.parametrize(
    ("docs", "expected"),
    [
        (
            (webhook("a", "http://127.0.0.1:9/h", signing=SIGNING),),
            "spec.signing.secretRef.name: no Secret 'hook-secret'",
        ),
        (
            (
                secret(),
                webhook(
                    "a", "http://127.0.0.1:9/h", signing={"secretRef": {"name": "hook-secret", "key": "nope"}}
                ),
            ),
            "spec.signing.secretRef.key: Secret 'hook-secret' has no key 'nope'",
        ),
        (
            (secret("not-a-secret!"), webhook("a", "http://127.0.0.1:9/h", signing=SIGNING)),
            "Secret 'hook-secret' key 'secret'",
        ),
        (
            (webhook("a", "http://127.0.0.1:9/h"), webhook("a", "http://127.0.0.1:9/other")),
            "another manifest defines",
        ),
        (
            ({"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {}, "spec": {}},),
            "metadata.name is required",
        ),
        ((webhook("Bad_Name", "http://127.0.0.1:9/h"),), "metadata: name 'Bad_Name'"),
        ((webhook("a", "ftp://127.0.0.1/h"),), "spec.url"),
    ],
)
def test_manifest_problems_name_what_to_fix(tmp_path, docs, expected):
    manifests = write_manifests(tmp_path / "m", *docs)
    with pytest.raises(ManifestError) as caught:
        load_manifests(manifests)
    assert expected in str(caught.value)
    assert "hooks.yaml" in str(caught.value)
    assert "not-a-secret" not in str(caught.value)


def test_secrets_from_data_and_stringdata_and_other_kinds_are_ignored(tmp_path):
    import base64

    data_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hook-secret", "namespace": "shop"},
        "data": {"secret": base64.b64encode(SECRET.encode()).decode()},
    }
    hook = webhook("signed", "http://127.0.0.1:9/h", signing=SIGNING)
    hook["metadata"]["namespace"] = "shop"
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    loaded = load_manifests(write_manifests(tmp_path / "m", data_secret, hook, configmap))
    [signed] = loaded.webhooks
    assert (signed.namespace, signed.name, signed.signing_secret) == ("shop", "signed", SECRET)
    assert any("ConfigMap" in note for note in loaded.ignored)
