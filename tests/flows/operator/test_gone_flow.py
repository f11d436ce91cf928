"""410 Gone: a real sender process stops on the receiver's 410, the operator shows it on the Webhook
(condition Delivering, an Event) and lifts the stop when the user annotates the Webhook.

Parts are real: the operator against the API emulator, nats-server, the customer's site, and
`hookline sender` run from the very config the operator rendered into the sender's ConfigMap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from operator_helpers import CONFIGMAPS, WEBHOOKS, api_path, condition, create_webhook, wait_for

from hookline.operator.rules.delivery import RESUME_ANNOTATION
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port, terminate
from hookline.sender.model.config import consumer_name
from hookline.sender.model.events import parse_event


def open_event(event_id: str) -> Any:
    return parse_event({"id": event_id, "type": "open", "recipient": "a@shop.example", "ip": "192.0.2.1"})


def posted_ids(site: Any) -> list[str]:
    return [json.loads(r["body"])["id"] for r in site.posts()]


def spawn_sender(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    # The venv's script, not `python -m` (from the project root, operator/ would shadow the stdlib).
    command = [str(Path(sys.executable).with_name("hookline")), "sender", "--config", str(config)]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
async def run_sender(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    """Start `hookline sender` with a config (YAML text) as the operator rendered it, on a free port."""
    started: list[subprocess.Popen[bytes]] = []

    async def start(rendered: str) -> str:
        document = yaml.safe_load(rendered)
        port = free_port()
        document["listen"] = f"127.0.0.1:{port}"  # the pod listens on 0.0.0.0:8081
        config = tmp_path / "sender.yaml"
        config.write_text(yaml.safe_dump(document))
        log = tmp_path / "sender.log"
        started.append(spawn_sender(config, log))

        async def ready() -> bool:
            assert started[-1].poll() is None, f"the sender exited:\n{log.read_text()[-3000:]}"
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        deadline = asyncio.get_running_loop().time() + 60
        while not await ready():
            assert asyncio.get_running_loop().time() < deadline, f"sender not ready:\n{log.read_text()}"
            await asyncio.sleep(0.2)
        return str(log)

    yield start
    for proc in started:
        terminate(proc, timeout=30)


async def test_receiver_gone_shows_on_the_webhook_and_an_annotation_resumes(
    cluster, site, start_operator, nats_server, run_sender
):
    await start_operator(delivery_check_interval=0.5)
    await create_webhook(
        cluster, "retired", url=site.url("/hooks/retired.php"), events=["open"], format="json"
    )
    token = await wait_for(
        lambda: (
            ((cluster.get(WEBHOOKS, "retired") or {}).get("status") or {})
            .get("verification", {})
            .get("content")
        ),
        "a token",
    )
    site.files[f"/hooks/hookline-{token}.txt"] = token
    config_map = await wait_for(lambda: cluster.get(CONFIGMAPS, "retired-sender"), "the sender ConfigMap")
    await run_sender(config_map["data"]["sender.yaml"])

    def webhook() -> dict[str, Any]:
        return cluster.get(WEBHOOKS, "retired") or {}

    delivering = await wait_for(lambda: condition(webhook(), "Delivering"), "condition Delivering")
    assert (delivering["status"], delivering["reason"]) == ("True", "Delivering")
    assert "ReceiverGone" not in {e["reason"] for e in cluster.events_for("retired")}

    nc = await bus.connect(nats_server.url)
    try:
        js = nc.jetstream()
        site.post_status = 410
        await bus.publish_events(nc, js, [open_event("first")])
        stopped = await wait_for(
            lambda: (
                condition(webhook(), "Delivering").get("status") == "False"
                and condition(webhook(), "Delivering")
            ),
            "Delivering=False after the 410",
        )
        assert stopped["reason"] == "ReceiverGone"
        resume = f"kubectl -n shop annotate wh retired {RESUME_ANNOTATION}="
        assert resume in stopped["message"] and "hookline redrive retired -n shop" in stopped["message"]
        assert webhook()["status"]["delivery"]["gone"] is True
        # Kopf posts Events in the background, after the status patch: wait for it.
        (event,) = await wait_for(
            lambda: [e for e in cluster.events_for("retired") if e["reason"] == "ReceiverGone"],
            "a ReceiverGone Event",
        )
        assert event["type"] == "Warning" and resume in event["message"]
        assert posted_ids(site) == ["first"]
        # Nothing in the Webhook's URL or the event ids reaches the condition or the Event.
        assert site.base not in stopped["message"] and "first" not in event["message"].split()

        # The receiver is fixed; a new event waits in the stopped consumer until the user resumes.
        site.post_status = 200
        await bus.publish_events(nc, js, [open_event("second")])
        patch = {"metadata": {"annotations": {RESUME_ANNOTATION: "1"}}}
        await cluster.call("PATCH", api_path(WEBHOOKS, name="retired"), patch)
        await wait_for(lambda: "second" in posted_ids(site), "the waiting event delivered after the resume")
        resumed = await wait_for(
            lambda: (
                condition(webhook(), "Delivering").get("status") == "True"
                and condition(webhook(), "Delivering")
            ),
            "Delivering=True after the resume",
        )
        assert RESUME_ANNOTATION in resumed["message"]
        assert not (await bus.read_gone(js, consumer_name("shop", "retired"))).gone
        await wait_for(
            lambda: "DeliveryResumed" in {e["reason"] for e in cluster.events_for("retired")},
            "a DeliveryResumed Event",
        )
        # The same annotation value again is not a new request.
        assert webhook()["status"]["delivery"]["resumeHandled"] == "1"
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
