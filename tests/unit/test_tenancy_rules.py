"""The operator's tenancy decisions (operator/rules/tenancy.py) and what they put in a sender's config."""

from __future__ import annotations

from hookline.api import ReadyReason, parse_webhook_spec
from hookline.api.policy import effective_grant, parse_policy_spec
from hookline.operator.rules import desired, tenancy
from hookline.operator.rules.status import ready_condition
from hookline.operator.settings import OperatorConfig
from hookline.sender.transport.egress import EgressPolicy

SPEC = parse_webhook_spec(
    {
        "url": "https://shop.example.com/h.php",
        "events": ["open"],
        "database": "newsletter",
        "delivery": {"maxRequestsPerSecond": 200},
    }
)


def grant(**spec):
    policy = parse_policy_spec(
        {"namespaces": ["shop"], "databases": [{"name": "newsletter", "collections": ["*"]}], **spec}
    )
    return effective_grant("shop", {}, [("p", policy)])


def test_a_granted_webhook_runs_with_its_grants_egress_and_rate_ceiling():
    config = OperatorConfig(egress=EgressPolicy(["192.0.2.0/24"]))
    g = grant(egress={"allowNetworks": ["10.1.0.0/16"], "allowHttp": True}, maxRequestsPerSecond=20)
    cfg = desired.sender_config("shop", "news", SPEC, config, g)
    assert cfg.allow_networks == ["192.0.2.0/24", "10.1.0.0/16"] and cfg.allow_http
    assert cfg.spec.delivery.max_requests_per_second == 20  # capped, not refused
    plain = desired.sender_config("shop", "news", SPEC, config)
    assert plain.allow_networks == ["192.0.2.0/24"] and not plain.allow_http
    assert plain.spec.delivery.max_requests_per_second == 200


def test_outside_its_grant_or_over_the_limit_it_stops_and_ready_says_why():
    outside = tenancy.verdict(
        SPEC, "shop", "news", effective_grant("shop", {}, []), ["news"], floor_http=False
    )
    assert outside.problem.startswith("metadata.namespace: no WebhookPolicy grants namespace 'shop'")
    ready = ready_condition(
        verified=True, paused=False, desired_replicas=1, sender={}, stopped=outside.problem
    )
    assert (ready.status, ready.reason) == ("False", ReadyReason.SCOPE_NOT_ALLOWED)
    limited = grant(maxWebhooks=1)
    assert tenancy.verdict(SPEC, "shop", "old", limited, ["old", "news"], floor_http=False).problem is None
    newest = tenancy.verdict(SPEC, "shop", "news", limited, ["old", "news"], floor_http=False)
    assert "may have 1 Webhooks" in newest.problem and "maxWebhooks" in newest.problem


def test_the_digest_moves_when_the_grant_or_the_place_under_the_limit_does():
    one, two = grant(maxWebhooks=1), grant(maxWebhooks=2)
    assert tenancy.standing(one, ["a", "b"], "b") != tenancy.standing(two, ["a", "b"], "b")
    assert tenancy.standing(one, ["a", "b"], "b") != tenancy.standing(one, ["b"], "b")  # a deleted: b runs
    assert tenancy.standing(two, ["a", "b"], "a") == tenancy.standing(two, ["a", "b", "c"], "a")


def test_a_policy_counts_the_namespaces_with_webhooks_it_selects():
    policy = parse_policy_spec(
        {
            "namespaceSelector": {"matchLabels": {"team": "x"}},
            "databases": [{"name": "*", "collections": ["*"]}],
        }
    )
    counts = tenancy.policy_counts([("p", policy)], {"a": {"team": "x"}, "b": {}}, {"a": 3, "b": 2})
    assert counts == {"p": (1, 3)}
