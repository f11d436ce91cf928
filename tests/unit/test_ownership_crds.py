"""The ownership parts of the CRDs admitted offline as the API server would (tests/support/kubeschema.py):
spec.verification of a Webhook, and the WebhookDomain: defaults, refusals naming the field, and the same
refusals from the Python models."""

from __future__ import annotations

from typing import Any

import pytest
from kubeschema import admit, load_crd

from hookline.api import SpecError, parse_webhook_spec
from hookline.api.domain import parse_domain_spec

WEBHOOK_CRD = load_crd("webhooks.hookline.io")
DOMAIN_CRD = load_crd("webhookdomains.hookline.io")


def webhook(**spec: Any) -> dict[str, Any]:
    meta = {"name": "w", "namespace": "s"}
    return {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": meta,
            "spec": {"url": "https://shop.example/h", "events": ["open"], **spec}}  # fmt: skip


def domain(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "hookline.io/v1alpha1", "kind": "WebhookDomain",
            "metadata": {"name": "d", "namespace": "s"}, "spec": spec}  # fmt: skip


def test_verification_defaults_to_the_file_and_takes_dns_and_a_recheck_interval():
    stored, errors = admit(WEBHOOK_CRD, webhook())
    assert not errors and stored["spec"]["verification"] == {"method": "File"}
    assert parse_webhook_spec(stored["spec"]).verification.method == "File"
    stored, errors = admit(WEBHOOK_CRD, webhook(verification={"method": "DNS", "recheckInterval": "12h"}))
    assert not errors and parse_webhook_spec(stored["spec"]).verification.recheck_interval == "12h"


def test_the_lowercase_method_names_of_the_design_are_taken_as_the_same_methods():
    stored, errors = admit(WEBHOOK_CRD, webhook(verification={"method": "dns"}))
    assert not errors and parse_webhook_spec(stored["spec"]).verification.method == "DNS"
    stored, errors = admit(DOMAIN_CRD, domain(domain="shop.example", method="dns", includeSubdomains=True))
    assert not errors and parse_domain_spec(stored["spec"]).method == "DNS"
    stored, errors = admit(DOMAIN_CRD, domain(domain="shop.example", method="file", includeSubdomains=True))
    assert [where for where, _ in errors] == ["spec.includeSubdomains"], errors  # a file proves none below
    with pytest.raises(SpecError, match="includeSubdomains"):
        parse_domain_spec(domain(domain="shop.example", method="file", includeSubdomains=True)["spec"])


@pytest.mark.parametrize(
    ("verification", "field"),
    [
        ({"method": "TXT"}, "spec.verification.method"),
        ({"recheckInterval": "1 day"}, "spec.verification.recheckInterval"),
    ],
)
def test_bad_verification_is_refused_naming_the_field(verification, field):
    _, errors = admit(WEBHOOK_CRD, webhook(verification=verification))
    assert field in [where for where, _ in errors], errors
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_webhook_spec(webhook(verification=verification)["spec"])


def test_a_domain_defaults_to_dns_without_subdomains():
    stored, errors = admit(DOMAIN_CRD, domain(domain="shop.example"))
    assert not errors and stored["spec"] == {
        "domain": "shop.example",
        "method": "DNS",
        "includeSubdomains": False,
    }
    assert parse_domain_spec(stored["spec"]).method == "DNS"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"domain": "Shop.Example"}, "spec.domain"),
        ({"domain": "shop.example:443"}, "spec.domain"),
        ({"domain": "shop.example", "method": "File", "includeSubdomains": True}, "spec.includeSubdomains"),
        ({"domain": "shop.example", "method": "HTTP"}, "spec.method"),
        ({"domain": "shop.example", "recheckInterval": "soon"}, "spec.recheckInterval"),
    ],
)
def test_a_bad_domain_is_refused_by_the_crd_and_the_model_naming_the_field(spec, field):
    _, errors = admit(DOMAIN_CRD, domain(**spec))
    assert field in [where for where, _ in errors], errors
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_domain_spec(spec)
