"""WebhookTest batches (handlers/webhooktests.py, `hookline test --batch N`): the test data as a batch
in the batch wire format, signed like a delivery, to a real aiohttp receiver on 127.0.0.1; the API
server is a dict (the operator flows in tests/operator cover the handler around run_test)."""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

import pytest
from dataplane_helpers import SECRET, Receiver
from standardwebhooks.webhooks import Webhook

from hookline.kubecli.testing import add_arguments, webhook_test
from hookline.operator.adapters import kubeapi
from hookline.operator.handlers.webhooktests import run_test
from hookline.operator.rules.verification import url_fingerprint
from hookline.sender.model.request import batch_id
from hookline.sender.model.wire import decode_form
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy


class FakeAPI:
    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    async def get(self, url: str) -> dict[str, Any] | None:
        return self.objects.get(url)


def cluster(url: str, **spec: Any) -> FakeAPI:
    status = {
        "conditions": [{"type": "Verified", "status": "True", "reason": "FileMatched"}],
        "verification": {"verifiedURL": url, "verifiedFor": url_fingerprint(url)},
    }
    hook = {"spec": {"url": url, "events": ["click"], **spec}, "status": status}
    secret = {"data": {"secret": base64.b64encode(SECRET.encode()).decode()}}
    return FakeAPI({kubeapi.webhook("shop", "hook"): hook, kubeapi.secret("shop", "hook-secret"): secret})


SIGNING = {"secretRef": {"name": "hook-secret", "key": "secret"}}
DATA = {"recipient": "a@b.example", "original": "https://x.example/"}


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def send(api: FakeAPI, **test: Any) -> dict[str, Any]:
    async with SafeHTTPClient(EgressPolicy.for_dev()) as http:
        outcome = await run_test(
            api, http, "shop", {"webhook": "hook", "event": "click", "data": DATA, **test}, max_timeout=10
        )  # type: ignore[arg-type]
    return outcome.status


@pytest.mark.parametrize("fmt", ["form", "json"])
async def test_a_batch_test_sends_n_events_as_one_signed_batch(receiver, fmt):
    url = f"{receiver.url}/hooks/shop.php"
    status = await send(cluster(url, format=fmt, signing=SIGNING), batch=3)  # not batching yet
    assert status["phase"] == "Succeeded" and status["events"] == 3, status
    assert "a batch of 3 events" in status["message"]
    (request,) = receiver.requests
    items = json.loads(request.body) if fmt == "json" else decode_form(request.body)["events"]
    assert [(i["type"], i["recipient"], i["original"]) for i in items] == [("click", *DATA.values())] * 3
    assert len({i["id"] for i in items}) == 3  # each event its own id
    assert request.headers["webhook-id"] == status["eventId"] == batch_id([i["id"] for i in items])
    Webhook(SECRET).verify(request.body, request.headers, json_parse=False)


async def test_a_batching_webhook_gets_a_batch_of_one_by_default(receiver):
    url = f"{receiver.url}/hooks/shop.php"
    status = await send(cluster(url, format="json", delivery={"batch": {"maxEvents": 50}}))
    assert status["phase"] == "Succeeded" and status["events"] == 1
    (request,) = receiver.requests
    (item,) = json.loads(request.body)
    assert status["eventId"] == batch_id([item["id"]])


async def test_without_batching_the_test_is_a_single_event_as_before(receiver):
    url = f"{receiver.url}/hooks/shop.php"
    status = await send(cluster(url, format="json"))
    assert status["phase"] == "Succeeded" and "events" not in status
    (request,) = receiver.requests
    assert json.loads(request.body)["id"] == status["eventId"] == request.headers["webhook-id"]


def test_hookline_test_batch_flag_goes_into_the_webhooktest_spec():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["hook", "--batch", "5"])
    assert args.batch == 5
    assert webhook_test("hook", "click", {}, args.batch)["spec"]["batch"] == 5
    assert "batch" not in webhook_test("hook", "click", {})["spec"]
