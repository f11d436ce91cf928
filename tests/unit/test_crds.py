"""The CRDs are the contract: examples validate, bad Webhooks are rejected naming the field.

An API server does three things with a custom resource that these tests redo offline: fill in the
schema's defaults, validate the structural OpenAPI schema (unknown fields rejected, as kubectl's
default strict field validation does), and evaluate the `x-kubernetes-validations` CEL rules. The
admission is tests/support/kubeschema.py's, the same one the strict API emulator runs on every write.
Every bad case is also fed to `parse_webhook_spec`, so the CRD and the Python model cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeschema import admit, load_crd, version_of

from hookline.api import SpecError, parse_webhook_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

WEBHOOK_CRD = load_crd("webhooks.hookline.io")
TEST_CRD = load_crd("webhooktests.hookline.io")


def webhook(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "url": "https://shop.example.com/hooks/copernica.php",
        "events": ["open", "click"],
    }
    base.update(spec)
    return {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "orders-clicks", "namespace": "shop"},
        "spec": {k: v for k, v in base.items() if v is not ...},
    }


# --- names and shape --------------------------------------------------------------------------------------


def test_crd_names_match_the_design():
    assert WEBHOOK_CRD["metadata"]["name"] == "webhooks.hookline.io"
    names = WEBHOOK_CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("Webhook", "webhooks", ["wh"])
    assert "hookline" in names["categories"] and "hookline" in TEST_CRD["spec"]["names"]["categories"]
    assert TEST_CRD["spec"]["names"]["plural"] == "webhooktests"
    for crd in (WEBHOOK_CRD, TEST_CRD):
        assert crd["spec"]["group"] == "hookline.io" and crd["spec"]["scope"] == "Namespaced"
        assert version_of(crd)["name"] == "v1alpha1"
        assert version_of(crd)["subresources"] == {"status": {}}


def test_webhook_printer_columns_are_the_designed_ones():
    columns = version_of(WEBHOOK_CRD)["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["URL", "Events", "Database", "Collection", "Verified", "Ready", "Age"]
    # `kubectl get wh -o wide` also shows how deliveries go: the Delivering reason, backlog, last 2xx,
    # and which sender pool serves the Webhook.
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority")}
    assert wide == {
        "Delivering": '.status.conditions[?(@.type=="Delivering")].reason',
        "Sender": ".status.sender.pool",
        "Pending": ".status.delivery.pending",
        "Last-Success": ".status.delivery.lastSuccessAt",
    }


def test_webhooktest_printer_columns_show_the_outcome():
    columns = {c["name"]: c["jsonPath"] for c in version_of(TEST_CRD)["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Code"] == ".status.response.statusCode"


def test_crd_defaults_equal_the_python_model_defaults():
    stored, errors = admit(WEBHOOK_CRD, webhook())
    assert errors == []
    model = parse_webhook_spec(webhook()["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored["spec"] == model


# --- examples ---------------------------------------------------------------------------------------------


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("Webhook", "WebhookTest"):
                docs.append((f"{path.relative_to(ROOT)}:{doc['metadata']['name']}", doc))
    return docs


def test_every_example_manifest_is_admitted():
    checked = 0
    for where, doc in example_documents():
        crd = WEBHOOK_CRD if doc["kind"] == "Webhook" else TEST_CRD
        assert doc["apiVersion"] == "hookline.io/v1alpha1", where
        stored, errors = admit(crd, doc)
        assert errors == [], f"{where}: {errors}"
        if doc["kind"] == "Webhook":
            parse_webhook_spec(stored["spec"])  # and the operator can read what the API server stored
        checked += 1
    assert checked >= 1, "examples/ holds no Webhook or WebhookTest manifest"


def test_a_full_featured_webhook_is_admitted():
    full = webhook(
        url="https://shop.example.com:8443/hooks/copernica.php?src=crm",
        events=["open", "click", "bounce", "failure", "delivery", "create", "update", "delete"],
        database="newsletter",
        collection="orders",
        format="json",
        signing={"secretRef": {"name": "hook-secret", "key": "secret"}},
        headers={"X-Team": "crm", "Authorization": "Bearer abc"},
        paused=True,
        delivery={
            "timeoutSeconds": 2.5,
            "maxAttempts": 50,
            "maxRequestsPerSecond": 0.5,
            "maxInFlight": 1,
            "batch": {"maxEvents": 1000, "maxWaitMilliseconds": 10000, "maxBytes": 8388608},
        },
        sender={"replicas": 0, "resources": {"limits": {"memory": "128Mi", "cpu": 1}}},
    )
    stored, errors = admit(WEBHOOK_CRD, full)
    assert errors == []
    delivery = parse_webhook_spec(stored["spec"]).delivery
    assert delivery.max_attempts == 50
    assert delivery.batch is not None and delivery.batch.byte_limit == 8388608


def test_batch_is_absent_by_default_and_its_wait_defaults_when_present():
    stored, errors = admit(WEBHOOK_CRD, webhook())
    assert errors == [] and "batch" not in stored["spec"]["delivery"]
    assert parse_webhook_spec(stored["spec"]).delivery.batch is None
    stored, errors = admit(WEBHOOK_CRD, webhook(delivery={"batch": {"maxEvents": 2}}))
    assert errors == [] and stored["spec"]["delivery"]["batch"] == {
        "maxEvents": 2,
        "maxWaitMilliseconds": 1000,
    }
    batch = parse_webhook_spec(stored["spec"]).delivery.batch
    assert batch is not None and (batch.max_events, batch.max_wait_milliseconds) == (2, 1000)
    assert batch.max_bytes is None and batch.byte_limit == 1024 * 1024


# --- rejected Webhooks: each names its field ---------------------------------------------------------------

BAD_WEBHOOKS = {
    "url-ftp-scheme": ({"url": "ftp://shop.example.com/x"}, "spec.url"),
    "url-no-scheme": ({"url": "shop.example.com/hooks"}, "spec.url"),
    "url-with-space": ({"url": "https://shop.example.com/my hook.php"}, "spec.url"),
    "url-with-credentials": ({"url": "https://user:pw@shop.example.com/x"}, "spec.url"),
    "url-missing": ({"url": ...}, "spec.url"),
    "events-empty": ({"events": []}, "spec.events"),
    "events-unknown": ({"events": ["open", "unsubscribe"]}, "spec.events[1]"),
    "events-duplicate": ({"events": ["open", "click", "open"]}, "spec.events"),
    "events-missing": ({"events": ...}, "spec.events"),
    "collection-without-database": ({"collection": "orders"}, "spec.collection"),
    "database-bad-name": ({"database": "news letter"}, "spec.database"),
    "format-unknown": ({"format": "xml"}, "spec.format"),
    "timeout-negative": ({"delivery": {"timeoutSeconds": -1}}, "spec.delivery.timeoutSeconds"),
    "timeout-too-long": ({"delivery": {"timeoutSeconds": 61}}, "spec.delivery.timeoutSeconds"),
    "rate-zero": ({"delivery": {"maxRequestsPerSecond": 0}}, "spec.delivery.maxRequestsPerSecond"),
    "attempts-too-many": ({"delivery": {"maxAttempts": 51}}, "spec.delivery.maxAttempts"),
    "attempts-zero": ({"delivery": {"maxAttempts": 0}}, "spec.delivery.maxAttempts"),
    "in-flight-zero": ({"delivery": {"maxInFlight": 0}}, "spec.delivery.maxInFlight"),
    "batch-one-event": ({"delivery": {"batch": {"maxEvents": 1}}}, "spec.delivery.batch.maxEvents"),
    "batch-too-many-events": (
        {"delivery": {"batch": {"maxEvents": 1001}}},
        "spec.delivery.batch.maxEvents",
    ),
    "batch-without-max-events": (
        {"delivery": {"batch": {"maxWaitMilliseconds": 100}}},
        "spec.delivery.batch.maxEvents",
    ),
    "batch-wait-negative": (
        {"delivery": {"batch": {"maxEvents": 10, "maxWaitMilliseconds": -1}}},
        "spec.delivery.batch.maxWaitMilliseconds",
    ),
    "batch-wait-too-long": (
        {"delivery": {"batch": {"maxEvents": 10, "maxWaitMilliseconds": 10001}}},
        "spec.delivery.batch.maxWaitMilliseconds",
    ),
    "batch-bytes-too-small": (
        {"delivery": {"batch": {"maxEvents": 10, "maxBytes": 1023}}},
        "spec.delivery.batch.maxBytes",
    ),
    "batch-bytes-too-large": (
        {"delivery": {"batch": {"maxEvents": 10, "maxBytes": 8388609}}},
        "spec.delivery.batch.maxBytes",
    ),
    "batch-unknown-field": (
        {"delivery": {"batch": {"maxEvents": 10, "size": 3}}},
        "spec.delivery.batch.size",
    ),
    "header-content-type": ({"headers": {"Content-Type": "text/plain"}}, "spec.headers"),
    "header-host": ({"headers": {"host": "evil.example"}}, "spec.headers"),
    "header-signature": ({"headers": {"Webhook-Signature": "v1,x"}}, "spec.headers"),
    "header-bad-name": ({"headers": {"X Team": "crm"}}, "spec.headers"),
    "header-value-newline": ({"headers": {"X-Team": "crm\r\nHost: x"}}, "spec.headers"),
    "replicas-negative": ({"sender": {"replicas": -1}}, "spec.sender.replicas"),
    "replicas-too-many": ({"sender": {"replicas": 21}}, "spec.sender.replicas"),
    "signing-without-key": ({"signing": {"secretRef": {"name": "s"}}}, "spec.signing.secretRef.key"),
    "paused-not-bool": ({"paused": "yes"}, "spec.paused"),
    "unknown-field": ({"retries": 3}, "spec.retries"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEBHOOKS))
def test_bad_webhook_is_rejected_naming_the_field(case):
    change, field = BAD_WEBHOOKS[case]
    _, errors = admit(WEBHOOK_CRD, webhook(**change))
    assert errors, f"{case} was admitted"
    assert field in [where for where, _ in errors], errors


@pytest.mark.parametrize("case", sorted(BAD_WEBHOOKS))
def test_bad_webhook_is_also_refused_by_the_python_model(case):
    change, field = BAD_WEBHOOKS[case]
    with pytest.raises(SpecError) as caught:
        parse_webhook_spec(webhook(**change)["spec"])
    named = [e.field for e in caught.value.errors]
    assert any(n == field or n.startswith(field + ".") or n.startswith(field + "[") for n in named), named


def test_cel_messages_tell_what_to_do():
    _, errors = admit(WEBHOOK_CRD, webhook(collection="orders"))
    assert errors == [("spec.collection", errors[0][1])]
    assert "set spec.database" in errors[0][1]


# --- WebhookTest ------------------------------------------------------------------------------------------


def webhook_test(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "webhook": "orders-clicks",
        "event": "click",
        "data": {"recipient": "a@b.example"},
    }
    base.update(spec)
    return {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": "t1", "namespace": "shop"},
        "spec": {k: v for k, v in base.items() if v is not ...},
    }


def test_webhooktest_keeps_arbitrary_data_and_defaults_it():
    stored, errors = admit(TEST_CRD, webhook_test(data={"fields": {"email": "a@b"}, "interests": ["x"]}))
    assert errors == [] and stored["spec"]["data"]["fields"] == {"email": "a@b"}
    stored, errors = admit(TEST_CRD, webhook_test(data=...))
    assert errors == [] and stored["spec"]["data"] == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"webhook": ...}, "spec.webhook"),
        ({"webhook": "Not_A_Name"}, "spec.webhook"),
        ({"event": "unsubscribe"}, "spec.event"),
        ({"event": ...}, "spec.event"),
        ({"batch": 0}, "spec.batch"),
        ({"batch": 1001}, "spec.batch"),
    ],
)
def test_bad_webhooktest_is_rejected_naming_the_field(change, field):
    _, errors = admit(TEST_CRD, webhook_test(**change))
    assert field in [where for where, _ in errors], errors


def test_webhooktest_spec_cannot_be_changed_after_creation():
    old = webhook_test()
    _, errors = admit(TEST_CRD, webhook_test(event="open"), old=old)
    assert errors and errors[0][0] == "spec" and "create a new WebhookTest" in errors[0][1]
    _, errors = admit(TEST_CRD, webhook_test(), old=old)
    assert errors == []
