"""Default sender resources (issue 19, item 7): the chart's defaults fill what a Webhook leaves out,
key by key, and never contradict the Webhook's own values (a request above its limit)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hookline.operator.rules.senderpod import SenderPodTemplate, quantity

DEFAULTS = SenderPodTemplate(
    resources={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi", "cpu": "1"}}
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("50m", "0.05"), ("1", "1"), ("64Mi", str(64 * 2**20)), ("1G", "1000000000"), ("1.5Gi", str(3 * 2**29))],
)
def test_quantities_read_as_kubernetes_reads_them(text: str, value: str) -> None:
    assert quantity(text) == Decimal(value)


def test_an_unreadable_quantity_is_left_to_the_api_server() -> None:
    assert quantity("lots") is None
    assert DEFAULTS.container_resources({"limits": {"memory": "lots"}})["requests"]["memory"] == "64Mi"


def test_an_empty_spec_gets_every_default() -> None:
    assert DEFAULTS.container_resources({}) == DEFAULTS.resources


def test_the_webhook_wins_and_no_default_contradicts_it() -> None:
    own = {"limits": {"memory": "32Mi"}, "requests": {"cpu": "2"}}
    assert DEFAULTS.container_resources(own) == {
        # memory request 64Mi > own limit 32Mi: left out (Kubernetes takes the limit as the request)
        "requests": {"cpu": "2"},
        # cpu limit 1 < own request 2: left out
        "limits": {"memory": "32Mi"},
    }
    roomy = {"limits": {"memory": "1Gi"}}
    assert DEFAULTS.container_resources(roomy) == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "1Gi", "cpu": "1"},
    }
