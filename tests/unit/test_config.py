"""Webhook spec and sender config: CRD defaults, every bad field named, config files, consumer names."""

from __future__ import annotations

import json

import pytest
import yaml

from hookline.api import SpecError, parse_webhook_spec
from hookline.sender.model.config import ConfigError, SenderConfig, consumer_name, load_sender_config

MINIMAL = {"url": "https://shop.example.com/hooks/copernica.php", "events": ["click"]}


def spec_errors(**changes) -> dict[str, str]:
    raw = {**MINIMAL, **changes}
    with pytest.raises(SpecError) as info:
        parse_webhook_spec(raw)
    assert str(info.value) == "; ".join(f"{e.field}: {e.message}" for e in info.value.errors)
    return {e.field: e.message for e in info.value.errors}


def test_defaults_follow_the_crd():
    spec = parse_webhook_spec(MINIMAL)
    assert spec.format == "form"
    assert spec.paused is False
    assert spec.signing is None and spec.headers == {}
    assert spec.database is None and spec.collection is None
    d = spec.delivery
    assert (d.timeout_seconds, d.max_attempts, d.max_requests_per_second, d.max_in_flight) == (10, 10, 50, 10)
    assert (spec.sender.replicas, spec.sender.resources) == (1, {})


def test_full_spec_in_camel_case():
    spec = parse_webhook_spec(
        {
            "url": "https://shop.example.com/hooks/",
            "events": ["open", "click", "bounce", "failure", "delivery", "create", "update", "delete"],
            "database": "newsletter",
            "collection": "orders",
            "format": "json",
            "signing": {"secretRef": {"name": "hook-secret", "key": "secret"}},
            "headers": {"X-Team": "crm"},
            "paused": True,
            "delivery": {
                "timeoutSeconds": 5,
                "maxAttempts": 3,
                "maxRequestsPerSecond": 0.5,
                "maxInFlight": 2,
            },
            "sender": {"replicas": 0, "resources": {"limits": {"cpu": "200m"}}},
        }
    )
    assert spec.signing is not None and spec.signing.secret_ref.name == "hook-secret"
    assert spec.delivery.max_requests_per_second == 0.5
    assert spec.sender.resources == {"limits": {"cpu": "200m"}}
    assert spec.collection == "orders"


def test_http_url_is_left_to_the_egress_policy():
    assert parse_webhook_spec({**MINIMAL, "url": "http://receiver.local:8090/hook"}).url.startswith("http://")


BAD_SPECS = [
    pytest.param({"url": "not a url"}, "spec.url", "whitespace", id="url-spaces"),
    pytest.param({"url": "shop.example.com/hook"}, "spec.url", "https://", id="url-no-scheme"),
    pytest.param({"url": "ftp://shop.example.com/x"}, "spec.url", "https://", id="url-ftp"),
    pytest.param({"url": "https:///path"}, "spec.url", "host", id="url-no-host"),
    pytest.param({"url": "https://u:p@shop.example.com/"}, "spec.url", "user:password", id="url-userinfo"),
    pytest.param({"url": "https://h:99999/"}, "spec.url", "valid URL", id="url-port"),
    pytest.param({"url": 5}, "spec.url", "string", id="url-type"),
    pytest.param({"events": []}, "spec.events", "at least 1", id="events-empty"),
    pytest.param({"events": ["click", "click"]}, "spec.events", "more than once", id="events-duplicate"),
    pytest.param(
        {"events": ["click", "clicks"]}, "spec.events[1]", "unknown event type 'clicks'", id="events-unknown"
    ),
    pytest.param(
        {"collection": "orders"}, "spec.collection", "requires database", id="collection-without-db"
    ),
    pytest.param({"database": ""}, "spec.database", "at least 1", id="database-empty"),
    pytest.param({"paused": "yes"}, "spec.paused", "boolean", id="paused-not-boolean"),
    pytest.param({"database": "news letter"}, "spec.database", "label value", id="database-not-label-safe"),
    pytest.param({"database": "n" * 64}, "spec.database", "at most 63", id="database-too-long"),
    pytest.param({"format": "xml"}, "spec.format", "'form' or 'json'", id="format"),
    pytest.param({"paused": "maybe"}, "spec.paused", "boolean", id="paused"),
    pytest.param(
        {"delivery": {"timeoutSeconds": 0}}, "spec.delivery.timeoutSeconds", "greater than or equal to 1"
    ),
    pytest.param(
        {"delivery": {"timeoutSeconds": 61}}, "spec.delivery.timeoutSeconds", "less than or equal to 60"
    ),
    pytest.param({"delivery": {"maxAttempts": 0}}, "spec.delivery.maxAttempts", "greater than or equal to 1"),
    pytest.param({"delivery": {"maxAttempts": 51}}, "spec.delivery.maxAttempts", "less than or equal to 50"),
    pytest.param(
        {"delivery": {"maxRequestsPerSecond": 0}}, "spec.delivery.maxRequestsPerSecond", "greater than 0"
    ),
    pytest.param(
        {"delivery": {"maxRequestsPerSecond": 100_001}}, "spec.delivery.maxRequestsPerSecond", "100000"
    ),
    pytest.param({"delivery": {"maxInFlight": 1001}}, "spec.delivery.maxInFlight", "1000"),
    pytest.param({"delivery": {"maxInFlight": 1.5}}, "spec.delivery.maxInFlight", "integer"),
    pytest.param(
        {"delivery": {"maxAttemps": 3}}, "spec.delivery.maxAttemps", "unknown field", id="typo-nested"
    ),
    pytest.param({"sender": {"replicas": 21}}, "spec.sender.replicas", "less than or equal to 20"),
    pytest.param({"sender": {"replicas": -1}}, "spec.sender.replicas", "greater than or equal to 0"),
    pytest.param({"signing": {"secretRef": {"name": "s"}}}, "spec.signing.secretRef.key", "required"),
    pytest.param(
        {"signing": {"secret": "whsec_x"}}, "spec.signing.secret", "unknown field", id="inline-secret"
    ),
    pytest.param({"headers": {"Host": "evil"}}, "spec.headers", "'Host'", id="header-host"),
    pytest.param(
        {"headers": {"Content-Type": "text/plain"}}, "spec.headers", "'Content-Type'", id="header-content"
    ),
    pytest.param({"headers": {"Connection": "close"}}, "spec.headers", "hop-by-hop", id="header-hop"),
    pytest.param({"headers": {"webhook-id": "x"}}, "spec.headers", "'webhook-id'", id="header-webhook"),
    pytest.param({"headers": {"User-Agent": "x"}}, "spec.headers", "'User-Agent'", id="header-ua"),
    pytest.param(
        {"headers": {"X Team": "x"}}, "spec.headers", "not a valid HTTP header name", id="header-name"
    ),
    pytest.param({"headers": {"X-Team": "a\r\nHost: evil"}}, "spec.headers", "line breaks", id="header-crlf"),
    pytest.param({"headers": {"X-A": "1", "x-a": "2"}}, "spec.headers", "twice", id="header-twice"),
    pytest.param({"headers": {"X-A": 1}}, "spec.headers.X-A", "string", id="header-value-type"),
    pytest.param({"colour": "red"}, "spec.colour", "unknown field", id="typo-top"),
]


@pytest.mark.parametrize(("changes", "field", "words"), BAD_SPECS)
def test_bad_spec_field_is_named(changes, field, words):
    errs = spec_errors(**changes)
    assert field in errs, errs
    assert words in errs[field]


def test_every_bad_field_is_reported_together():
    with pytest.raises(SpecError) as info:
        parse_webhook_spec({"events": ["nope"], "delivery": {"maxAttempts": 99}, "format": "xml"})
    fields = {e.field for e in info.value.errors}
    assert fields == {"spec.url", "spec.events[0]", "spec.delivery.maxAttempts", "spec.format"}
    assert "spec.url: is required" in str(info.value)


def test_spec_that_is_not_a_mapping():
    with pytest.raises(SpecError, match="spec: must be an object"):
        parse_webhook_spec(["url"])  # type: ignore[arg-type]


def test_error_prefix_is_configurable_for_other_callers():
    with pytest.raises(SpecError, match=r"^webhooks\[2\]\.spec\.url: is required"):
        parse_webhook_spec({"events": ["open"]}, prefix="webhooks[2].spec")


# ---------------------------------------------------------------------------------------------------------
# Sender config files

SENDER = {
    "webhook": {"namespace": "shop", "name": "orders-clicks"},
    "spec": {**MINIMAL, "database": "newsletter"},
    "nats": {"url": "nats://nats.hookline:4222", "consumer": "hookline_shop_orders-clicks"},
    "signingSecretFile": "/var/run/secrets/hookline/signing/secret",
    "allowNetworks": ["10.0.0.0/8", "fd00::/8"],
    "replicas": 2,
}


def test_sender_config_from_yaml(tmp_path):
    path = tmp_path / "sender.yaml"
    path.write_text(yaml.safe_dump(SENDER))
    cfg = load_sender_config(path)
    assert cfg.webhook.namespace == "shop" and cfg.webhook.name == "orders-clicks"
    assert cfg.nats.stream == "HOOKLINE_EVENTS"
    assert cfg.spec.database == "newsletter"
    assert cfg.replicas == 2
    assert cfg.allow_http is False and cfg.listen == "0.0.0.0:8081"
    assert cfg.max_age_seconds == 70 * 3600  # inside the stream retention of 72 h


def test_sender_config_from_json_and_document_round_trip(tmp_path):
    path = tmp_path / "sender.json"
    path.write_text(json.dumps({**SENDER, "maxAgeSeconds": 3600}))
    cfg = load_sender_config(path)
    assert cfg.max_age_seconds == 3600
    document = cfg.to_document()
    assert document["spec"]["delivery"]["maxInFlight"] == 10
    assert document["signingSecretFile"] == SENDER["signingSecretFile"]
    assert SenderConfig.model_validate(document) == cfg


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"spec": {**MINIMAL, "delivery": {"maxAttempts": 0}}}, "spec.delivery.maxAttempts: "),
        ({"nats": {"url": "nats://x"}}, "nats.consumer: is required"),
        ({"allowNetworks": ["10.0.0.0/33"]}, "allowNetworks: '10.0.0.0/33' is not a CIDR"),
        ({"listen": "8081"}, "listen: '8081' is not host:port"),
        ({"maxAgeSeconds": 0}, "maxAgeSeconds: "),
        ({"replicas": 0}, "replicas: "),
        ({"webhook": {"namespace": "shop"}}, "webhook.name: is required"),
        ({"signingSecret": "whsec_abc"}, "signingSecret: unknown field"),
    ],
)
def test_bad_sender_config_names_file_and_field(tmp_path, changes, words):
    path = tmp_path / "sender.yaml"
    path.write_text(yaml.safe_dump({**SENDER, **changes}))
    with pytest.raises(ConfigError) as info:
        load_sender_config(path)
    assert str(info.value).startswith(f"sender config {path}: ")
    assert words in str(info.value)
    assert "whsec_abc" not in str(info.value)


def test_unreadable_or_malformed_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read sender config .*missing\.yaml: No such file"):
        load_sender_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("webhook: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML/JSON"):
        load_sender_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_sender_config(scalar)


# ---------------------------------------------------------------------------------------------------------
# Consumer names


def test_consumer_name_is_readable_stable_and_has_no_dots():
    name = consumer_name("shop", "orders.clicks")
    assert name == "hookline_shop_orders_clicks" == consumer_name("shop", "orders.clicks")
    assert not set(name) & set(".*> /\\\t")


def test_consumer_names_are_unique_across_namespace_and_name_splits():
    pairs = [("a", "b-c"), ("a-b", "c"), ("a", "b.c"), ("a", "b-c.d"), ("a-b", "c.d"), ("ab", "c")]
    names = {consumer_name(ns, n) for ns, n in pairs}
    assert len(names) == len(pairs)


def test_long_names_are_cut_with_a_hash_and_stay_unique():
    long_a, long_b = "x" * 250 + "a", "x" * 250 + "b"
    a, b = consumer_name("ns", long_a), consumer_name("ns", long_b)
    assert a != b and len(a) <= 200 and len(b) <= 200
    assert a == consumer_name("ns", long_a)


@pytest.mark.parametrize(
    ("namespace", "name"), [("Shop", "x"), ("shop", "a_b"), ("shop", ""), ("", "x"), ("a.b", "x")]
)
def test_consumer_name_refuses_non_kubernetes_names(namespace, name):
    with pytest.raises(ValueError, match="Kubernetes"):
        consumer_name(namespace, name)
