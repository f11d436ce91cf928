"""The grant of a namespace (hookline/api/policy.py): union of policies, `*`, collections, event types,
a missing database, egress and ceilings; and the record the admission policy reads."""

from __future__ import annotations

import pytest

from hookline.api import SpecError, parse_webhook_spec
from hookline.api.policy import (
    NO_GRANT,
    capped_rate,
    effective_grant,
    grant_record,
    over_limit,
    parse_policy_spec,
    scope_problem,
)


def policy(**spec):
    return parse_policy_spec({"namespaces": ["shop"], **spec})


def webhook(**spec):
    return parse_webhook_spec({"url": "https://shop.example.com/h.php", "events": ["open"], **spec})


NEWSLETTER_ALL = {"name": "newsletter", "collections": ["*"]}
CRM_ORDERS = {"name": "crm", "collections": ["orders"]}


def problem(spec, *policies, labels=None, **kwargs):
    named = [(f"p{i}", p) for i, p in enumerate(policies)]
    found = scope_problem(spec, effective_grant("shop", labels or {}, named), "shop", **kwargs)
    return None if found is None else (found.field, found.message)


def test_a_namespace_no_policy_selects_gets_nothing():
    found = problem(
        webhook(database="newsletter"),
        parse_policy_spec({"namespaces": ["other"], "databases": [NEWSLETTER_ALL]}),
    )
    assert found[0] == "metadata.namespace"
    assert "no WebhookPolicy grants namespace 'shop'" in found[1]
    assert effective_grant("shop", {}, []) == NO_GRANT


def test_namespaces_are_selected_by_label_too():
    by_label = parse_policy_spec(
        {"namespaceSelector": {"matchLabels": {"team": "shop"}}, "databases": [NEWSLETTER_ALL]}
    )
    assert problem(webhook(database="newsletter"), by_label, labels={"team": "shop"}) is None
    assert (
        problem(webhook(database="newsletter"), by_label, labels={"team": "crm"})[0] == "metadata.namespace"
    )
    exists = parse_policy_spec(
        {
            "namespaceSelector": {"matchExpressions": [{"key": "hookline", "operator": "Exists"}]},
            "databases": [NEWSLETTER_ALL],
        }
    )
    assert problem(webhook(database="newsletter"), exists, labels={"hookline": ""}) is None


def test_database_is_required_unless_every_database_is_granted():
    field, message = problem(webhook(), policy(databases=[NEWSLETTER_ALL]))
    assert field == "spec.database" and "is required" in message and "'newsletter'" in message
    assert problem(webhook(), policy(databases=[{"name": "*", "collections": ["*"]}])) is None


def test_an_ungranted_database_names_the_missing_grant():
    field, message = problem(webhook(database="crm"), policy(databases=[NEWSLETTER_ALL]))
    assert field == "spec.database"
    assert "'crm' is not granted" in message and "databases[].name 'crm'" in message


def test_collections_are_exact_and_star_only_where_written():
    grant = policy(databases=[CRM_ORDERS])
    assert problem(webhook(database="crm", collection="orders"), grant) is None
    field, message = problem(webhook(database="crm", collection="invoices"), grant)
    assert field == "spec.collection" and "'invoices'" in message and "'orders'" in message
    field, message = problem(webhook(database="crm"), grant)  # every collection of crm: not granted
    assert field == "spec.collection" and "is required" in message
    assert problem(webhook(database="newsletter", collection="x"), policy(databases=[NEWSLETTER_ALL])) is None


def test_event_types_are_checked_per_database():
    profile = policy(databases=[CRM_ORDERS], eventTypes=["create", "update"])
    field, message = problem(webhook(database="crm", collection="orders", events=["create", "open"]), profile)
    assert (
        field == "spec.events" and message.startswith("open not granted") and "eventTypes [open]" in message
    )


def test_several_policies_combine_as_a_union_of_exact_scopes():
    engagement = policy(databases=[NEWSLETTER_ALL], eventTypes=["open", "click"])
    profiles = policy(databases=[CRM_ORDERS], eventTypes=["create"])
    assert problem(webhook(database="newsletter", events=["open", "click"]), engagement, profiles) is None
    assert (
        problem(webhook(database="crm", collection="orders", events=["create"]), engagement, profiles) is None
    )
    # The union is of (database, collection, type): engagement of crm is granted by neither.
    field, _ = problem(webhook(database="crm", collection="orders", events=["open"]), engagement, profiles)
    assert field == "spec.events"


def test_limits_and_ceilings_take_the_highest_and_egress_adds_up():
    one = policy(
        databases=[NEWSLETTER_ALL],
        maxWebhooks=2,
        maxRequestsPerSecond=10,
        egress={"allowNetworks": ["10.1.0.0/16"]},
    )
    two = policy(
        databases=[NEWSLETTER_ALL],
        maxWebhooks=5,
        maxRequestsPerSecond=20,
        egress={"allowNetworks": ["10.2.0.0/16"], "allowHttp": True},
    )
    grant = effective_grant("shop", {}, [("one", one), ("two", two)])
    assert (grant.max_webhooks, grant.max_requests_per_second) == (5, 20)
    assert grant.allow_networks == ("10.1.0.0/16", "10.2.0.0/16") and grant.allow_http
    unlimited = effective_grant("shop", {}, [("one", one), ("three", policy(databases=[NEWSLETTER_ALL]))])
    assert unlimited.max_webhooks is None and unlimited.max_requests_per_second is None


def test_rate_above_the_ceiling_is_refused_at_admission_and_capped_by_the_operator():
    grant = policy(databases=[NEWSLETTER_ALL], maxRequestsPerSecond=10)
    fast = webhook(database="newsletter", delivery={"maxRequestsPerSecond": 50})
    field, message = problem(fast, grant)
    assert field == "spec.delivery.maxRequestsPerSecond" and "ceiling 10" in message
    assert problem(fast, grant, check_rate=False) is None
    assert capped_rate(fast, effective_grant("shop", {}, [("p", grant)])) == 10


def test_plain_http_needs_the_floor_or_a_grant():
    plain = webhook(database="newsletter", url="http://shop.example.com/h.php")
    field, message = problem(plain, policy(databases=[NEWSLETTER_ALL]))
    assert field == "spec.url" and "egress.allowHttp" in message
    assert problem(plain, policy(databases=[NEWSLETTER_ALL]), floor_http=True) is None
    assert problem(plain, policy(databases=[NEWSLETTER_ALL], egress={"allowHttp": True})) is None


def test_the_newest_webhooks_beyond_the_limit_are_over_it():
    grant = effective_grant("shop", {}, [("p", policy(databases=[NEWSLETTER_ALL], maxWebhooks=2))])
    by_age = ["first", "second", "third"]
    assert [over_limit(by_age, n, grant) for n in by_age] == [None, None, 2]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"databases": [{"name": "a b", "collections": ["*"]}]}, "spec.databases[0].name"),
        ({"databases": [{"name": "a", "collections": []}]}, "spec.databases[0].collections"),
        (
            {"databases": [NEWSLETTER_ALL], "egress": {"allowNetworks": ["10.0.0.0/33x"]}},
            "spec.egress.allowNetworks[0]",
        ),
        ({"databases": [NEWSLETTER_ALL], "eventTypes": ["opens"]}, "spec.eventTypes[0]"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(spec, field):
    with pytest.raises(SpecError) as caught:
        parse_policy_spec({"namespaces": ["shop"], **spec})
    assert caught.value.errors[0].field == field


def test_the_admission_record_holds_the_union_as_tokens():
    grant = effective_grant(
        "shop", {}, [("p", policy(databases=[CRM_ORDERS], eventTypes=["create"], maxRequestsPerSecond=5))]
    )
    assert grant_record("shop", grant) == {
        "shop.scopes": ";crm/orders/create;",
        "shop.http": "false",
        "shop.policies": "p",
        "shop.rate": "5",
    }
    assert grant_record("shop", NO_GRANT) == {}


def test_the_kind_examples_policy_is_admitted_and_grants_its_webhook():
    import yaml
    from kubeschema import admit, load_crd

    from hookline.manifests import EXAMPLES

    doc = yaml.safe_load((EXAMPLES / "kind" / "policy.yaml").read_text())
    stored, errors = admit(load_crd("webhookpolicies.hookline.io"), doc)
    assert errors == []
    (webhook_doc,) = [d for d in yaml.safe_load_all((EXAMPLES / "kind" / "webhook.yaml").read_text()) if d]
    grant = effective_grant("shop", {}, [("shop", parse_policy_spec(stored["spec"]))])
    spec = parse_webhook_spec(webhook_doc["spec"])
    assert scope_problem(spec, grant, "shop", floor_http=True) is None


def test_a_policy_selecting_no_namespace_is_refused_by_the_crd():
    from kubeschema import admit, load_crd

    doc = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookPolicy",
        "metadata": {"name": "nobody"},
        "spec": {"databases": [NEWSLETTER_ALL]},
    }
    _, errors = admit(load_crd("webhookpolicies.hookline.io"), doc)
    assert any("spec.namespaces" in str(e) for e in errors), errors
