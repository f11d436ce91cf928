"""The one duration grammar (hookline/durations.py): what a user may write in the CRD, the CLI and flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hookline import api
from hookline.durations import DURATION_PATTERN, DurationError, format_duration, parse_duration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("3d", 259200), ("1d12h30m5s", 131405)],
)
def test_go_style_durations_are_read(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "text", ["", "30", "0s", "1h0m", "1s1m", "2h 3m", "1.5h", "-5m", "1w", "01m", "1234567s"]
)
def test_anything_else_is_refused_with_the_grammar_and_examples(text):
    with pytest.raises(DurationError) as err:
        parse_duration(text)
    assert repr(text) in str(err.value)
    assert "1h30m" in str(err.value)


def test_the_crd_declares_the_same_grammar_as_the_model():
    for path in (
        ROOT / "crds" / "webhooks.hookline.io.yaml",
        ROOT / "charts/hookline/files/crds/webhooks.hookline.io.yaml",
    ):
        crd = yaml.safe_load(path.read_text())
        delivery = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "properties"
        ]["delivery"]
        assert delivery["properties"]["disableAfter"]["pattern"] == DURATION_PATTERN


def test_the_spec_reads_a_circuit_breaker_span_in_the_same_grammar():
    spec = api.parse_webhook_spec(
        {"url": "https://shop.example.com/h", "events": ["open"], "delivery": {"disableAfter": "1h30m"}}
    )
    assert spec.delivery.disable_after_seconds == 5400
    with pytest.raises(api.SpecError, match="disableAfter"):
        api.parse_webhook_spec(
            {"url": "https://shop.example.com/h", "events": ["open"], "delivery": {"disableAfter": "90"}}
        )
