"""What a real kube-apiserver showed that the emulator hid, one flow test per finding (issue 8).

Each runs the operator against the API emulator, a real nats-server and a real customer site on
loopback, and fails on the operator as it was before the fix.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from operator_helpers import (
    DEPLOYMENTS,
    NS,
    TESTS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    serve_on_loopback,
    wait_for,
)

from hookline import api
from hookline.operator.rules.verification import url_fingerprint
from hookline.operator.settings import VerificationSchedule
from hookline.sender import bus


def webhook_of(cluster, name):
    return cluster.get(WEBHOOKS, name) or {}


def verification_of(cluster, name):
    return (webhook_of(cluster, name).get("status") or {}).get("verification") or {}


@dataclass
class TimedSite:
    """A customer site that records when each GET arrived; ``files`` maps paths to content."""

    files: dict[str, str] = field(default_factory=dict)
    gets: list[tuple[float, str]] = field(default_factory=list)
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            self.gets.append((asyncio.get_running_loop().time(), request.path))
        if request.path in self.files:
            return web.Response(text=self.files[request.path])
        return web.Response(status=404 if request.method == "GET" else 200, text="")


@pytest.fixture
async def timed_site() -> AsyncIterator[TimedSite]:
    site = TimedSite()
    runner, site.base = await serve_on_loopback(site.handle)
    yield site
    await runner.cleanup()


async def test_checks_follow_the_documented_schedule_and_are_counted(cluster, timed_site, start_operator):
    """checkedFor was pruned by the API server: `checks` stayed 1 and every check came after the first
    delay (36 checks in 3 minutes where the schedule gives 6)."""
    schedule = VerificationSchedule(first_delay=0.4, factor=2.0, max_delay=30.0)
    await start_operator(verification=schedule)
    await create_webhook(cluster, "waiting", url=f"{timed_site.base}/hooks/w.php", events=["open"])
    await wait_for(
        lambda: verification_of(cluster, "waiting").get("checks", 0) >= 4, "four checks", within=30
    )
    verification = verification_of(cluster, "waiting")
    assert verification["checkedFor"] == url_fingerprint(f"{timed_site.base}/hooks/w.php")
    assert verification["lastResult"] == "FileNotFound"
    # Each check asks both locations; the check after the fourth is 3.2 s away.
    starts = [t for t, path in timed_site.gets if path.startswith("/hooks/")]
    assert len(starts) == 4 == len(timed_site.gets) // 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    for gap, planned in zip(gaps, (0.4, 0.8, 1.6), strict=True):
        assert gap >= planned * 0.95, f"checks {gaps} came sooner than the schedule 0.4, 0.8, 1.6 s"


async def test_failed_checks_are_not_errors_in_the_log_nor_warning_events(
    cluster, timed_site, start_operator, caplog
):
    """An unverified Webhook is an expected state: Kopf logged each retry at ERROR (18,700 lines for
    1,100 Webhooks) and posted it as an Event."""
    caplog.set_level(logging.INFO)
    schedule = VerificationSchedule(first_delay=0.3, factor=1.0, max_delay=0.3)
    await start_operator(verification=schedule)
    await create_webhook(cluster, "quiet", url=f"{timed_site.base}/hooks/q.php", events=["open"])
    await wait_for(lambda: verification_of(cluster, "quiet").get("checks", 0) >= 4, "four checks")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert not [e for e in cluster.events_for("quiet") if "failed temporarily" in e.get("message", "")]


async def test_a_nats_consumer_limit_is_a_permanent_reason_that_does_not_flap(
    cluster, site, start_operator, nats_server
):
    """`maximum consumers limit reached` was an outage retried every 10 s, and the Ready reason
    flipped between BusUnavailable and SenderPending with an Event each time."""
    nc = await bus.connect(nats_server.url)
    try:
        # Room for the recovery stream's reader (bus/recovery.py) and one Webhook's consumer.
        await nc.jetstream().add_stream(bus.stream_config().evolve(max_consumers=2))
    finally:
        await nc.close()
    await start_operator()
    for name in ("first", "second"):
        await create_webhook(cluster, name, url=site.url(f"/hooks/{name}.php"), events=["open"])
        token = await wait_for(lambda n=name: verification_of(cluster, n).get("content"), "a token")
        site.files[f"/hooks/hookline-{token}.txt"] = token
        await wait_for(
            lambda n=name: condition(cluster.get(WEBHOOKS, n), "Verified").get("status") == "True", name
        )
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "first-sender"), "the first sender")
    ready = await wait_for(
        lambda: (
            condition(cluster.get(WEBHOOKS, "second"), "Ready").get("reason") == "BusRefused"
            and condition(cluster.get(WEBHOOKS, "second"), "Ready")
        ),
        "Ready=False/BusRefused on the second Webhook",
    )
    assert ready["status"] == "False"
    assert "err_code 10026" in ready["message"] and "nats.streamMaxConsumers" in ready["message"]
    assert cluster.get(DEPLOYMENTS, "second-sender") is None
    # Status and Deployment changes of the first Webhook do not move the second's reason. (Kopf posts
    # Events in the background: count once the BusRefused one is there.)
    await wait_for(
        lambda: [e for e in cluster.events_for("second") if "err_code 10026" in e.get("message", "")],
        "the BusRefused Event",
    )
    before = len(cluster.events_for("second"))
    status = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    await cluster.call("PATCH", api_path(DEPLOYMENTS, name="first-sender", sub="status"), {"status": status})
    await cluster.call("PATCH", api_path(WEBHOOKS, name="second"), {"metadata": {"labels": {"team": "crm"}}})
    await wait_for(
        lambda: condition(cluster.get(WEBHOOKS, "first"), "Ready").get("status") == "True", "first Ready"
    )
    await asyncio.sleep(1.0)  # give a wrong handler the chance to flip the reason (it used to, at once)
    assert condition(cluster.get(WEBHOOKS, "second"), "Ready")["reason"] == "BusRefused"
    assert len(cluster.events_for("second")) == before


async def test_a_url_change_to_an_unverified_url_says_zero_replicas(cluster, site, start_operator):
    """The Deployment went to 0 replicas while status.sender.replicas still said 1."""
    await start_operator()
    await create_webhook(cluster, "moving", url=site.url("/hooks/moving.php"), events=["open"])
    token = await wait_for(lambda: verification_of(cluster, "moving").get("content"), "a token")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "moving-sender"), "the sender")
    await cluster.call("PATCH", api_path(WEBHOOKS, name="moving"), {"spec": {"url": site.url("/v2/h.php")}})
    await wait_for(
        lambda: (cluster.get(DEPLOYMENTS, "moving-sender") or {}).get("spec", {}).get("replicas") == 0, "held"
    )
    await wait_for(
        lambda: (webhook_of(cluster, "moving").get("status") or {}).get("sender", {}).get("replicas") == 0,
        "status.sender.replicas 0",
    )
    ready = condition(cluster.get(WEBHOOKS, "moving"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotVerified")


async def test_webhooktests_carry_no_finalizer_and_still_expire(cluster, site, start_operator):
    """The expiry timer put the operator's finalizer on every WebhookTest: without the operator they
    and their namespace could not be deleted."""
    await start_operator(test_ttl=1.0)
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.WEBHOOKTEST_KIND,
        "metadata": {"name": "t1", "namespace": NS},
        "spec": {"webhook": "absent", "event": "open", "data": {"recipient": "a@b.example"}},
    }
    await cluster.call("POST", api_path(TESTS), body)
    await wait_for(lambda: ((cluster.get(TESTS, "t1") or {}).get("status") or {}).get("phase"), "finished")
    assert api.FINALIZER not in (cluster.get(TESTS, "t1") or {}).get("metadata", {}).get("finalizers", [])
    await wait_for(lambda: cluster.get(TESTS, "t1") is None, "deleted after its TTL")
