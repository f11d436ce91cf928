"""WebhookTest against the running operator: sent once, signed, recorded; refused when not verified."""

from __future__ import annotations

import base64

from operator_helpers import (
    SECRETS,
    TESTS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    wait_for,
)

from hookline.sender.model.signing import verify
from hookline.sender.model.wire import decode_form

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def verification_of(cluster, name):
    return ((cluster.get(WEBHOOKS, name) or {}).get("status") or {}).get("verification") or {}


async def verified_webhook(cluster, site, name, **spec):
    await create_webhook(cluster, name, url=site.url(f"/hooks/{name}.php"), events=["click"], **spec)
    token = await wait_for(lambda: verification_of(cluster, name).get("content"), "a token")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: condition(cluster.get(WEBHOOKS, name), "Verified").get("status") == "True", "Verified"
    )


async def create_test(cluster, name, webhook, event="click", **data):
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"webhook": webhook, "event": event, "data": data},
    }
    await cluster.call("POST", api_path(TESTS), body)


def finished(cluster, name):
    status = (cluster.get(TESTS, name) or {}).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


async def test_webhooktest_posts_signed_data_once_and_records_the_answer(cluster, site, start_operator):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-secret", "namespace": "shop"}}
    secret["data"] = {"secret": base64.b64encode(SECRET.encode()).decode()}
    await cluster.call("POST", api_path(SECRETS), secret)
    await start_operator()
    await verified_webhook(
        cluster, site, "signed", signing={"secretRef": {"name": "hook-secret", "key": "secret"}}
    )
    site.post_body = "x" * 5000
    await create_test(cluster, "t1", "signed", recipient="a@b.example", original="https://x.example/")
    status = await wait_for(lambda: finished(cluster, "t1"), "the test to finish")

    assert status["phase"] == "Succeeded" and status["signed"] is True, status
    assert "sample values were used for" in status["message"] and "ip" in status["message"]
    assert status["response"]["statusCode"] == 200
    assert status["response"]["body"] == "x" * 1024  # the first KiB only
    assert status["response"]["durationMs"] >= 0
    (post,) = site.posts()
    assert post["path"] == "/hooks/signed.php"
    form = decode_form(post["body"])
    assert (form["type"], form["recipient"], form["original"]) == (
        "click",
        "a@b.example",
        "https://x.example/",
    )
    assert form["id"] == status["eventId"] == post["headers"]["webhook-id"]
    verify(SECRET, post["headers"], post["body"])  # raises when the signature is wrong
    secret_text = SECRET.removeprefix("whsec_")
    assert secret_text not in str(cluster.get(TESTS, "t1"))
    assert all(secret_text not in str(e) for e in cluster.events_for("t1"))


async def test_webhooktest_records_a_failing_receiver(cluster, site, start_operator):
    await start_operator()
    await verified_webhook(cluster, site, "broken", format="json")
    site.post_status, site.post_body = 500, "database down"
    await create_test(cluster, "t2", "broken", recipient="a@b.example", original="https://x.example/")
    status = await wait_for(lambda: finished(cluster, "t2"), "the test to finish")
    assert (status["phase"], status["reason"]) == ("Failed", "HTTPError")
    assert status["response"] == {
        "statusCode": 500,
        "durationMs": status["response"]["durationMs"],
        "body": "database down",
    }
    assert site.posts()[0]["headers"]["Content-Type"] == "application/json"


async def test_webhooktest_is_refused_for_an_unverified_webhook(cluster, site, start_operator):
    await start_operator()
    await create_webhook(cluster, "unverified", url=site.url("/hooks/u.php"), events=["click"])
    await wait_for(lambda: verification_of(cluster, "unverified").get("content"), "a token")
    await create_test(cluster, "t3", "unverified", recipient="a@b.example", original="https://x.example/")
    status = await wait_for(lambda: finished(cluster, "t3"), "the test to finish")
    assert (status["phase"], status["reason"]) == ("Failed", "NotVerified")
    assert "kubectl describe webhook unverified" in status["message"]
    await create_test(cluster, "t4", "absent", recipient="a@b.example", original="https://x.example/")
    status = await wait_for(lambda: finished(cluster, "t4"), "the test to finish")
    assert status["reason"] == "WebhookNotFound"
    assert site.posts() == []


async def test_webhooktest_with_bad_data_names_the_field(cluster, site, start_operator):
    await start_operator()
    await verified_webhook(cluster, site, "strict")
    await create_test(cluster, "t5", "strict", recipient="a@b.example", reason="spam")
    status = await wait_for(lambda: finished(cluster, "t5"), "the test to finish")
    assert status["reason"] == "InvalidData" and "reason: unknown field" in status["message"]
    assert site.posts() == []


async def test_finished_webhooktests_are_deleted_after_the_ttl(cluster, site, start_operator):
    await start_operator(test_ttl=2.0)
    await create_test(cluster, "t6", "absent", recipient="a@b.example", original="https://x.example/")
    await wait_for(lambda: finished(cluster, "t6"), "the test to finish")
    await wait_for(lambda: cluster.get(TESTS, "t6") is None, "the test to be deleted after its TTL")
