"""Ownership that stays proven: a verified Webhook whose file is removed keeps delivering through the grace
period, then pauses (Verified=False, OwnershipLapsed, the sender Deployment at 0 replicas, Events on the
way) and resumes when the file is back, with nothing published meanwhile lost.

Parts are real: the operator against the strict API emulator, nats-server, the customer's site (an
aiohttp server), and `hookline sender` run from the config the operator rendered. The test plays the
Deployment controller: it stops the sender process when the operator scales the Deployment to 0 and
starts it again when it is scaled back up. The schedule is seconds instead of days.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from operator_helpers import CONFIGMAPS, DEPLOYMENTS, WEBHOOKS, condition, create_webhook, token_of, wait_for

from hookline.operator.rules.recheck import RecheckSchedule
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port, terminate
from hookline.sender.model.events import parse_event

SCHEDULE = RecheckSchedule(
    interval=1.0, grace=4.0, grace_retry=0.5, checks_per_second=20, burst=20, jitter=0, tick=0.2
)


class SenderProcess:
    """`hookline sender` from the rendered config, started and stopped as its Deployment's replicas say."""

    def __init__(self, rendered: str, tmp_path: Path) -> None:
        document = yaml.safe_load(rendered)
        self.port = free_port()
        document["listen"] = f"127.0.0.1:{self.port}"
        self.config = tmp_path / "sender.yaml"
        self.config.write_text(yaml.safe_dump(document))
        self.log = tmp_path / "sender.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
        command = [str(Path(sys.executable).with_name("hookline")), "sender", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    async def start(self) -> None:
        self._spawn()

        async def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{self.port}/readyz") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        deadline = asyncio.get_running_loop().time() + 60
        while not await ready():
            assert asyncio.get_running_loop().time() < deadline, self.log.read_text()
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=30)
            self.proc = None


def open_event(event_id: str) -> Any:
    return parse_event({"id": event_id, "type": "open", "recipient": "a@shop.example", "ip": "192.0.2.1"})


@pytest.mark.slow
async def test_a_removed_file_pauses_deliveries_after_the_grace_and_its_return_resumes_them(
    cluster, site, start_operator, nats_server, tmp_path
):
    operator = await start_operator(recheck=SCHEDULE)
    await create_webhook(cluster, "orders", url=site.url("/hooks/orders.php"), events=["open"], format="json")
    token = await wait_for(lambda: token_of(cluster, "orders"), "a token")
    proof = f"/hooks/hookline-{token}.txt"
    site.files[proof] = token
    config_map = await wait_for(lambda: cluster.get(CONFIGMAPS, "orders-sender"), "the sender ConfigMap")
    sender = SenderProcess(config_map["data"]["sender.yaml"], tmp_path)
    await sender.start()

    def webhook() -> dict[str, Any]:
        return cluster.get(WEBHOOKS, "orders") or {}

    def replicas() -> int | None:
        return ((cluster.get(DEPLOYMENTS, "orders-sender") or {}).get("spec") or {}).get("replicas")

    def delivered() -> list[str]:
        return [json.loads(r["body"])["id"] for r in site.posts()]

    def reasons() -> set[str]:
        return {e["reason"] for e in cluster.events_for("orders")}

    nc = await bus.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await wait_for(lambda: condition(webhook(), "Verified").get("status") == "True", "Verified=True")
        await bus.publish_events(nc, js, [open_event("before")])
        await wait_for(lambda: "before" in delivered(), "the first event delivered")
        rechecks = len(site.gets())

        # The file goes; re-checks fail; the grace period starts and deliveries go on.
        del site.files[proof]
        await wait_for(lambda: "OwnershipRecheckFailed" in reasons(), "an OwnershipRecheckFailed Event")
        assert len(site.gets()) > rechecks  # re-checked on the schedule, not once
        verification = webhook()["status"]["verification"]
        assert verification["failingSince"] and verification["lastResult"] == "FileNotFound"
        if condition(webhook(), "Verified").get("status") == "True":  # still in the grace period
            await bus.publish_events(nc, js, [open_event("in-grace")])
        failures = operator.runtime.metrics.recheck_failures.labels(kind="Webhook")._value.get()
        assert failures >= 1

        # Past the grace: Verified=False/OwnershipLapsed, the sender scaled to 0, an Event.
        lapsed = await wait_for(
            lambda: (
                condition(webhook(), "Verified").get("reason") == "OwnershipLapsed"
                and condition(webhook(), "Verified")
            ),
            "Verified=False/OwnershipLapsed",
        )
        assert lapsed["status"] == "False" and "paused" in lapsed["message"]
        assert webhook()["status"]["verification"]["lapsedAt"]
        await wait_for(lambda: replicas() == 0, "the sender Deployment scaled to 0")
        await wait_for(lambda: "OwnershipLapsed" in reasons(), "an OwnershipLapsed Event")
        assert condition(webhook(), "Ready")["status"] == "False"
        paused = condition(webhook(), "Delivering")
        assert (paused["status"], paused["reason"]) == ("False", "Paused") and "lapsed" in paused["message"]
        sender.stop()  # as the Deployment controller does at 0 replicas
        seen = set(delivered())

        meanwhile = [f"meanwhile-{i}" for i in range(20)]
        await bus.publish_events(nc, js, [open_event(i) for i in meanwhile])
        assert set(delivered()) == seen  # nothing goes out while lapsed

        # The file is back: verified again, the sender scaled up, everything delivered.
        site.files[proof] = token
        back = await wait_for(
            lambda: (
                condition(webhook(), "Verified").get("status") == "True" and condition(webhook(), "Verified")
            ),
            "Verified=True again",
        )
        assert back["reason"] == "FileMatched"
        assert not webhook()["status"]["verification"].get("lapsedAt")
        assert not webhook()["status"]["verification"].get("failingSince")
        await wait_for(lambda: replicas() == 1, "the sender Deployment scaled back to 1")
        await sender.start()
        await wait_for(lambda: set(meanwhile) <= set(delivered()), "the events published meanwhile delivered")
        await wait_for(lambda: condition(webhook(), "Delivering").get("status") == "True", "Delivering=True")
        expected = {"before", *meanwhile} | ({"in-grace"} if "in-grace" in delivered() else set())
        assert set(delivered()) == expected and len(delivered()) >= len(expected)
    finally:
        sender.stop()
        await nc.close()
