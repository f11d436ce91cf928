"""hookline.api against crds/: the typed model and the CRD schemas describe the same fields.

A field the code writes but the CRD does not declare is pruned by the API server without an error
(status.verification.checkedFor was, and the verification schedule broke on a real cluster); a field
the CRD declares but the model lacks cannot be read or written through the model. Both directions,
with types, enums and bounds, for spec and status of both kinds. The status parts that the
operator's pure decisions produce are read back through the models, which refuse unknown keys.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hookline import api
from hookline.api import domain as domain_api
from hookline.api import policy as policy_api
from hookline.operator.rules import delivery, status, verification
from hookline.operator.rules.webhooktest import failed, outcome_of_response
from hookline.sender.model.outcomes import GoneState
from hookline.sender.transport.ownership import OwnershipResult

CRDS = Path(__file__).resolve().parents[2] / "crds"


def schema_of(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{name}.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    assert version["name"] == api.VERSION and crd["spec"]["group"] == api.GROUP
    return version["schema"]["openAPIV3Schema"]


WEBHOOK = schema_of("webhooks.hookline.io")
WEBHOOKTEST = schema_of("webhooktests.hookline.io")
DOMAIN = schema_of("webhookdomains.hookline.io")
POLICY = schema_of("webhookpolicies.hookline.io")

PAIRS = [
    ("Webhook.spec", api.WebhookSpec, WEBHOOK["properties"]["spec"]),
    ("Webhook.status", api.WebhookStatus, WEBHOOK["properties"]["status"]),
    ("WebhookTest.spec", api.WebhookTestSpec, WEBHOOKTEST["properties"]["spec"]),
    ("WebhookTest.status", api.WebhookTestStatus, WEBHOOKTEST["properties"]["status"]),
    ("WebhookDomain.spec", domain_api.WebhookDomainSpec, DOMAIN["properties"]["spec"]),
    ("WebhookDomain.status", domain_api.DomainStatus, DOMAIN["properties"]["status"]),
    ("WebhookPolicy.spec", policy_api.WebhookPolicySpec, POLICY["properties"]["spec"]),
    ("WebhookPolicy.status", policy_api.WebhookPolicyStatus, POLICY["properties"]["status"]),
]
OPENAPI_TYPE = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}


def unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside Optional/Annotated, and the Annotated metadata found on the way."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            assert len(args) == 1, f"unions other than Optional are not modelled: {annotation}"
            annotation = args[0]
        else:
            return annotation, metadata


def differences(where: str, model: type[BaseModel], schema: dict[str, Any]) -> list[str]:
    """Every way ``model`` and the structural ``schema`` disagree, as readable lines."""
    problems: list[str] = []
    declared = schema.get("properties", {})
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    problems += [
        f"{where}.{n}: in the model, not declared in the CRD" for n in sorted(set(fields) - set(declared))
    ]
    problems += [
        f"{where}.{n}: declared in the CRD, not in the model" for n in sorted(set(declared) - set(fields))
    ]
    for name in sorted(set(fields) & set(declared)):
        info, prop, path = fields[name], declared[name], f"{where}.{name}"
        kind, metadata = unwrap(info.annotation)
        problems += compare(path, kind, metadata + list(info.metadata), prop)
    return problems


def compare(path: str, kind: Any, metadata: list[Any], prop: dict[str, Any]) -> list[str]:
    problems = []
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        if prop.get("type") != "object":
            return [f"{path}: a {kind.__name__} in the model, {prop.get('type')} in the CRD"]
        return differences(path, kind, prop)
    if origin is Literal:
        if prop.get("type") != "string" or sorted(typing.get_args(kind)) != sorted(prop.get("enum", [])):
            problems.append(f"{path}: enum {sorted(typing.get_args(kind))} vs CRD {prop.get('enum')}")
    elif origin is list:
        if prop.get("type") != "array":
            problems.append(f"{path}: a list in the model, {prop.get('type')} in the CRD")
        (item,) = typing.get_args(kind)
        item_kind, item_meta = unwrap(item)
        problems += compare(f"{path}[]", item_kind, item_meta, prop.get("items", {}))
    else:
        base = origin or kind
        expected = OPENAPI_TYPE.get(base)
        if expected and prop.get("type") != expected and not prop.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: {base.__name__} in the model, {prop.get('type')} in the CRD")
    problems += bound_differences(path, origin, metadata, prop)
    return problems


def bound_differences(path: str, origin: Any, metadata: list[Any], prop: dict[str, Any]) -> list[str]:
    model: dict[str, Any] = {}
    expanded = [m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    for item in expanded:
        if isinstance(item, Ge):
            model["minimum"] = item.ge
        elif isinstance(item, Gt):
            model["minimum"], model["exclusiveMinimum"] = item.gt, True
        elif isinstance(item, Le):
            model["maximum"] = item.le
        elif isinstance(item, MinLen):
            model["minItems" if origin is list else "minLength"] = item.min_length
        elif isinstance(item, MaxLen):
            model["maxItems" if origin is list else "maxLength"] = item.max_length
    crd = {k: prop[k] for k in model if k in prop}
    return [f"{path}: bounds {model} in the model, {crd} in the CRD"] if model != crd else []


@pytest.mark.parametrize(("where", "model", "schema"), PAIRS, ids=[p[0] for p in PAIRS])
def test_the_model_and_the_crd_declare_the_same_fields_types_enums_and_bounds(where, model, schema):
    assert differences(where, model, schema) == []


def test_the_comparison_finds_an_undeclared_field_a_missing_field_and_a_wrong_bound():
    """The checker itself: a CRD without checkedFor, with an extra field and another bound."""
    status_schema = yaml.safe_load(yaml.safe_dump(WEBHOOK["properties"]["status"]))
    verification_props = status_schema["properties"]["verification"]["properties"]
    del verification_props["checkedFor"]
    verification_props["surprise"] = {"type": "string"}
    verification_props["checks"]["minimum"] = 1
    found = differences("Webhook.status", api.WebhookStatus, status_schema)
    assert "Webhook.status.verification.checkedFor: in the model, not declared in the CRD" in found
    assert "Webhook.status.verification.surprise: declared in the CRD, not in the model" in found
    assert any(p.startswith("Webhook.status.verification.checks: bounds") for p in found)


def test_condition_types_and_reasons_are_those_the_printer_columns_and_design_name():
    columns = {
        c["name"]: c["jsonPath"]
        for c in yaml.safe_load((CRDS / "webhooks.hookline.io.yaml").read_text())["spec"]["versions"][0][
            "additionalPrinterColumns"
        ]
    }
    for condition in api.ConditionType:
        assert f'@.type=="{condition}"' in columns[str(condition)]
    design = {"Delivering", "Failing", "Backlogged", "ReceiverGone", "Paused", "ConsumerMissing", "Disabled"}
    design.add("EventsLost")  # issue 17: a deleted consumer's events past the recovery window
    assert {str(r) for r in api.DeliveringReason} == design
    assert set(api.OwnershipReason.__args__) < {str(r) for r in api.VerifiedReason}
    enum = WEBHOOK["properties"]["spec"]["properties"]["events"]["items"]["enum"]
    assert tuple(enum) == api.EVENT_TYPES
    assert tuple(WEBHOOKTEST["properties"]["spec"]["properties"]["event"]["enum"]) == api.EVENT_TYPES


# --- what the operator's decisions write is declared ------------------------------------------------------

URL = "https://shop.example.com/hooks/copernica.php"
TOKEN = "0123456789abcdef0123456789abcdef"
NOW = "2026-12-01T10:00:00Z"


def written_statuses() -> list[dict[str, Any]]:
    """One status per kind of write the decisions make, as the handlers assemble them."""
    found = OwnershipResult("FileNotFound", None, "no file at either location")
    matched = OwnershipResult("FileMatched", f"{URL[:-13]}hookline-{TOKEN}.txt", "verified")
    conditions = status.merge_conditions(
        None,
        [
            verification.verified_condition(found, 5.0),
            status.ready_condition(
                verified=True,
                paused=False,
                desired_replicas=1,
                sender=None,
                bus=status.BusProblem("full", permanent=True),
            ),
            delivery.delivering_condition({"gone": True, "goneSince": NOW}, "shop", "orders"),
        ],
        generation=3,
        now=NOW,
    )
    gone = GoneState(gone=True, since=1_700_000_000.0, event_id="e1", url_sha256="x")
    return [
        {"observedGeneration": 3, "conditions": conditions},
        {"verification": verification.instructions(TOKEN, URL)},
        {"verification": verification.result_fields(found, url=URL, now=NOW, checks=2, next_check_at=NOW)},
        {"verification": verification.result_fields(matched, url=URL, now=NOW, checks=3, next_check_at=None)},
        {"sender": {"deployment": "orders-sender", "replicas": 1, "configHash": "abc"}},
        {"sender": status.deployment_sender_status({"status": {"readyReplicas": 1, "availableReplicas": 1}})},
        {"delivery": delivery.delivery_status({}, gone, request="1", resumed=None, now=NOW)},
        {
            "delivery": delivery.delivery_status(
                {"gone": True}, GoneState(), request=None, resumed="x", now=NOW
            )
        },
    ]


@pytest.mark.parametrize("written", written_statuses(), ids=lambda w: next(iter(w)))
def test_every_status_part_the_operator_writes_is_in_the_model(written):
    assert api.checked_status(api.WebhookStatus, written) == written


def test_an_undeclared_status_field_is_refused_by_the_model():
    with pytest.raises(ValueError, match="checkedFour"):
        api.checked_status(api.WebhookStatus, {"verification": {"checkedFour": URL}})


def test_every_webhooktest_outcome_is_in_the_model():
    outcomes = [
        failed("NotVerified", "the Webhook is not verified"),
        outcome_of_response(200, 0.041, b"ok", sent_at=NOW, event_id="e1", signed=True),
        outcome_of_response(500, 0.2, b"x" * 5000, sent_at=NOW, event_id="e2", signed=False),
    ]
    for outcome in outcomes:
        assert api.checked_status(api.WebhookTestStatus, outcome.status) == outcome.status
