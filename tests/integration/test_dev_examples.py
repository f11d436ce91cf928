"""`hookline dev` on the examples shipped with the package, as a new user meets it: no --manifests, the
demo receiver on a port of their choosing (the examples' host `demo-receiver` follows it), a Webhook per
event type verified and delivered to, the ready banner's commands working as printed (the CLI finds dev
mode's NATS in .hookline-dev/nats-url), and the same from a wheel installed outside the repository."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest
from dataplane_helpers import wait_until

from hookline.manifests import EXAMPLES, load_manifests
from hookline.sender.bus.natsserver import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_WEBHOOKS = {w.name for w in load_manifests(EXAMPLES).webhooks}


class Dev:
    """`hookline dev` started in `cwd` with only the flags given (default manifests and state dir)."""

    def __init__(self, cwd: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out, self.err = cwd / "dev.out", cwd / "dev.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hookline.cli", "dev", "--port", str(self.port), *flags],
                cwd=cwd,
                stdout=out,
                stderr=err,
                env=env,
            )

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    async def all_ready(self, http: aiohttp.ClientSession, names: set[str]) -> dict[str, dict]:
        items: dict[str, dict] = {}
        for _ in range(900):
            if self.proc.poll() is not None:
                raise AssertionError(f"hookline dev exited {self.proc.returncode}: {self.stderr()}")
            try:
                async with http.get(f"{self.base}/v1/webhooks") as response:
                    listed = (await response.json())["items"]
                items = {i["metadata"]["name"]: i for i in listed}
                ready = {
                    name
                    for name, item in items.items()
                    if any(
                        c["type"] == "Ready" and c["status"] == "True" for c in item["status"]["conditions"]
                    )
                }
                if ready == names and "ready." in self.stderr():
                    return items
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"not all of {sorted(names)} became Ready: {self.stderr()}")

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        for _ in range(1200):
            if self.proc.poll() is not None:
                return self.proc.returncode
            await asyncio.sleep(0.05)
        self.kill()
        raise AssertionError("hookline dev did not stop within 60 s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def banner_commands(stderr: str) -> list[str]:
    """The commands the ready banner prints, one a line after 'ready.'."""
    block = stderr.split("ready. From another terminal:\n", 1)[1].split("Ctrl-C stops", 1)[0]
    return [line.strip().split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
async def test_dev_runs_the_shipped_examples_with_the_receiver_where_it_is_told(tmp_path):
    receiver_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "HOOKLINE_NATS_URL"}
    dev = Dev(tmp_path, "--demo-receiver", f"127.0.0.1:{receiver_port}", env=env)  # no --manifests
    try:
        async with aiohttp.ClientSession() as http:
            items = await dev.all_ready(http, EXAMPLE_WEBHOOKS)
            assert {"bounces", "failures", "deliveries"} <= set(items)
            for item in items.values():
                assert item["status"]["verification"]["verifiedURL"].startswith(
                    f"http://127.0.0.1:{receiver_port}/"
                )
            events = json.loads((EXAMPLES / "events.json").read_text())
            async with http.post(f"{dev.base}/v1/events", json=events) as response:
                assert response.status == 202, await response.text()
                accepted = (await response.json())["accepted"]
            async with http.get(f"{dev.base}/v1/schema") as response:
                assert response.status == 200
                assert (await response.json())["$defs"]["bounce"]["required"] == [
                    "type",
                    "recipient",
                    "envelope",
                    "mime",
                ]

        expected = {
            "/hooks/newsletter.php  open": "signature OK",
            "/hooks/newsletter.php  click": "signature OK",
            "/mail/bounces.php  bounce": "unsigned",
            "/mail/failures  failure": "signature OK",
            "/mail/deliveries  batch of": "unsigned",
            "/crm/copernica.php  create": "unsigned",
            "/crm/copernica.php  update": "unsigned",
            "/crm/copernica.php  delete": "unsigned",
        }

        def delivered() -> bool:
            out = dev.stdout()
            return all(any(k in line and v in line for line in out.splitlines()) for k, v in expected.items())

        await wait_until(delivered, within=60, what=f"a delivery per example Webhook: {dev.stdout()}")
        delivery_lines = [line for line in dev.stdout().splitlines() if "/mail/deliveries" in line]
        assert sum(int(m) for line in delivery_lines for m in re.findall(r"deliveryx(\d+)", line)) == 2

        # The ready banner names the commands; run as printed (here, where dev mode's state dir is), the
        # NATS commands find dev mode's NATS in .hookline-dev/nats-url.
        nats_url = re.search(r"nats-server on (nats://127\.0\.0\.1:\d+)", dev.stderr()).group(1)
        url_file = tmp_path / ".hookline-dev" / "nats-url"
        assert url_file.read_text().strip() == nats_url
        commands = banner_commands(dev.stderr())
        post = f"curl -s -X POST {dev.base}/v1/events -H 'Content-Type: application/json'"
        assert f"{post} -d @{EXAMPLES / 'events.json'}" in commands
        attempts = next(c for c in commands if c.startswith("hookline attempts "))
        assert "--nats-url" not in attempts
        name = attempts.split()[2]
        await wait_until(
            lambda: sum(1 for i in accepted if i in cli(tmp_path, *attempts.split()[1:], env=env).stdout) > 0,
            within=30,
            what="the attempts of the first example Webhook",
        )
        shown = cli(tmp_path, *attempts.split()[1:], "-o", "json", env=env)
        assert shown.returncode == 0, shown.stderr
        assert f"using the NATS of hookline dev, {nats_url}" in shown.stderr
        assert {a["eventId"] for a in json.loads(shown.stdout)} <= set(accepted)
        redrive = next(c for c in commands if c.startswith("hookline redrive "))
        dry = cli(tmp_path, *redrive.split()[1:], env=env)
        assert dry.returncode == 0, dry.stderr
        assert name in redrive

        assert await dev.stop() == 0
    finally:
        dev.kill()
    assert not url_file.exists()  # a stopped dev mode leaves no URL to a NATS that is gone


async def test_a_url_on_the_demo_receiver_host_needs_the_demo_receiver(tmp_path):
    proc = cli(tmp_path, "dev", "--port", str(free_port()))
    assert proc.returncode == 2
    assert "default/newsletter-engagement" in proc.stderr
    assert "the URL's host demo-receiver stands for the demo receiver" in proc.stderr
    assert "--demo-receiver HOST:PORT" in proc.stderr


@pytest.fixture
def installed_wheel(tmp_path) -> Path:
    """A wheel built from a copy of the sources, checked for the examples and installed with
    `pip install --target`: the site folder to put on PYTHONPATH."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("hookline", "sender", "operator"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    dist, site = tmp_path / "dist", tmp_path / "site"
    build = [*pip, "wheel", "--no-deps", "-w", str(dist), str(src)]
    built = subprocess.run(build, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob("hookline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".json")}
    assert {f"hookline/examples/{n}" for n in shipped} <= names
    assert not any(n.startswith("hookline/examples/kind/") for n in names)
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    installed = subprocess.run(install, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    probe = [sys.executable, "-c", "import hookline.dev, hookline.manifests as m; print(m.EXAMPLES)"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run(probe, cwd=dist, env=env, capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == str(site / "hookline" / "examples"), found.stderr  # not the repository's
    return site


@pytest.mark.slow
async def test_a_built_wheel_holds_the_examples_and_dev_mode_runs_from_it_alone(tmp_path, installed_wheel):
    """`pip install` of a wheel built from the sources, used outside the repository: the examples are
    package data and `hookline dev` without --manifests starts from them."""
    site = installed_wheel
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    dev = Dev(run_dir, "--demo-receiver", f"127.0.0.1:{free_port()}", env=env)
    try:
        async with aiohttp.ClientSession() as http:
            await dev.all_ready(http, EXAMPLE_WEBHOOKS)
        assert str(site / "hookline" / "examples" / "events.json") in dev.stderr()
        assert await dev.stop() == 0
    finally:
        dev.kill()
