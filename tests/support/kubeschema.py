"""A CustomResourceDefinition's admission, done the way kube-apiserver does it, offline.

One implementation for two users: tests/unit/test_crds.py admits manifests with it, and the strict API
emulator (strict_api.py) runs it on every write to a hookline custom resource. What kube-apiserver
does with a write to a structural-schema CRD, in its order:

1. prune: fields the schema does not declare are dropped silently (unless the request asked for
   ``fieldValidation=Strict``, then they are a 400), except under ``x-kubernetes-preserve-unknown-fields``
   and inside ``x-kubernetes-int-or-string``/``additionalProperties`` schemas; ``metadata`` is cut down
   to ObjectMeta's fields;
2. default: ``default`` values are filled in, a defaulted object getting its own defaults too;
3. validate: the OpenAPI v3 schema (types, enums, bounds, lengths, patterns, required, items,
   ``format: date-time``), then the ``x-kubernetes-validations`` CEL rules (transition rules that
   read ``oldSelf`` only on an update, where the old value exists), each error a *cause* naming its
   field, answered as one 422 ``Invalid`` Status.

The schema is checked with jsonschema (Draft 4 is what OpenAPI v3.0 schemas build on: a boolean
``exclusiveMinimum``) and the CEL rules with cel-python.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"

# ObjectMeta's fields: anything else under metadata is dropped by the API server's decoder.
OBJECT_META = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
# strfmt's date-time: RFC 3339 with optional fraction; a missing zone is accepted as local time.
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


@dataclass(frozen=True)
class Cause:
    """One field error, as a cause in the API server's 422 Status."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


@dataclass(frozen=True)
class CustomResource:
    """What the API server knows of a CRD's one served version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    schema: dict[str, Any]
    subresources: frozenset[str] = field(default_factory=frozenset)

    @property
    def resource(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def qualified(self) -> str:
        """``webhooks.hookline.io``, as error messages name the resource."""
        return f"{self.plural}.{self.group}"


def load_crd(name: str, crds: Path = CRDS) -> dict[str, Any]:
    return yaml.safe_load((crds / f"{name}.yaml").read_text())


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version


def custom_resources(crds: Path = CRDS) -> dict[str, CustomResource]:
    """Every CRD in ``crds`` (read now, so an edited CRD takes effect), by "group/version/plural"."""
    out: dict[str, CustomResource] = {}
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            cr = CustomResource(
                group=spec["group"],
                version=version["name"],
                plural=spec["names"]["plural"],
                kind=spec["names"]["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                schema=version["schema"]["openAPIV3Schema"],
                subresources=frozenset(version.get("subresources") or {}),
            )
            out[cr.resource] = cr
    return out


# --- 1. pruning ------------------------------------------------------------------------------------------


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def prune(schema: dict[str, Any], value: Any, path: str = "", *, root: bool = True) -> list[str]:
    """Drop, in place, what ``schema`` does not declare; return the dropped fields' paths."""
    dropped: list[str] = []
    if root and isinstance(value, dict):
        meta = value.get("metadata")
        if isinstance(meta, dict):
            for name in [n for n in meta if n not in OBJECT_META]:
                del meta[name]
                dropped.append(f"metadata.{name}")
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        # Declared fields under a preserving node are still pruned below their own schemas.
        if isinstance(value, dict):
            for name, prop in (schema.get("properties") or {}).items():
                if name in value:
                    dropped += prune(prop, value[name], _join(path, name), root=False)
        return dropped
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name in list(value):
            if root and name in ROOT_FIELDS:
                continue
            if name in props:
                dropped += prune(props[name], value[name], _join(path, name), root=False)
            elif isinstance(extra, dict):
                dropped += prune(extra, value[name], _join(path, name), root=False)
            elif extra is True:
                continue
            else:
                del value[name]
                dropped.append(_join(path, name))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            dropped += prune(schema["items"], item, _join(path, index), root=False)
    return dropped


# --- 2. defaults -----------------------------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in defaults the way the API server does: a defaulted object gets its own defaults too."""
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(prop, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in (schema.get("properties") or {}):
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


# --- 3. validation ---------------------------------------------------------------------------------------


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(lambda v: not isinstance(v, str) or bool(DATE_TIME.match(v)))
    return checker


FORMATS = _format_checker()


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields as errors (``fieldValidation=Strict``), except where preserved."""
    schema = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        preserved = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        if "properties" in node and not preserved:
            node.setdefault("additionalProperties", False)
        for prop in (node.get("properties") or {}).values():
            walk(prop)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(schema)
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out = _join(out, part)
    return out


_REASONS = {
    "required": "FieldValueRequired",
    "enum": "FieldValueNotSupported",
    "type": "FieldValueTypeInvalid",
    "maxItems": "FieldValueTooMany",
    "maxProperties": "FieldValueTooMany",
    "maxLength": "FieldValueTooLong",
    "additionalProperties": "FieldValueInvalid",
}


def schema_errors(schema: dict[str, Any], obj: Any, *, unknown_fields: bool = False) -> list[Cause]:
    """The OpenAPI schema's errors; with ``unknown_fields`` undeclared fields are errors too."""
    checked = strict(schema) if unknown_fields else _with_free_metadata(schema)
    validator = jsonschema.Draft4Validator(checked, format_checker=FORMATS)
    causes = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        where = _path(err.absolute_path)
        if err.validator == "required":
            missing = re.match(r"'([^']+)'", err.message)
            where = _join(where, missing.group(1)) if missing else where
            causes.append(Cause(where, "Required value", "FieldValueRequired"))
            continue
        if err.validator == "additionalProperties":
            unknown = re.findall(r"'([^']+)'", err.message)
            where = _join(where, unknown[0]) if unknown else where
            causes.append(Cause(where, "field not declared in schema", "FieldValueInvalid"))
            continue
        causes.append(
            Cause(where, _message(err, where), _REASONS.get(str(err.validator), "FieldValueInvalid"))
        )
    return causes


def _with_free_metadata(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    schema["properties"] = {**schema.get("properties", {}), "metadata": {"type": "object"}}
    return schema


def _message(err: jsonschema.ValidationError, where: str) -> str:
    """The API server's wording for the common cases, jsonschema's for the rest."""
    value = err.instance
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    match err.validator:
        case "enum":
            allowed = ", ".join(f'"{v}"' for v in err.validator_value)
            return f"Unsupported value: {shown}: supported values: {allowed}"
        case "pattern":
            return f"Invalid value: {shown}: {where} in body should match '{err.validator_value}'"
        case "type":
            return f"Invalid value: {shown}: {where} in body must be of type {err.validator_value}"
        case "minimum" | "maximum":
            word = "greater than or equal to" if err.validator == "minimum" else "less than or equal to"
            if err.schema.get("exclusiveMinimum" if err.validator == "minimum" else "exclusiveMaximum"):
                word = word.replace(" or equal to", "")
            return f"Invalid value: {shown}: {where} in body should be {word} {err.validator_value}"
        case "minLength":
            return (
                f"Invalid value: {shown}: {where} in body should be at least {err.validator_value} chars long"
            )
        case "maxLength":
            return f"Too long: may not be more than {err.validator_value} bytes"
        case "minItems":
            least = err.validator_value
            return f"Invalid value: {len(value)}: {where} in body should have at least {least} items"
        case "maxItems":
            return f"Too many: {len(value)}: must have at most {err.validator_value} items"
        case "format":
            return f"Invalid value: {shown}: {where} in body must be of type {err.validator_value}"
    return f"Invalid value: {shown}: {err.message}"


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


@functools.lru_cache(maxsize=1 << 16)
def _rule_holds(rule: str, value_json: str, old_json: str | None) -> bool:
    """One CEL rule on one value (JSON text, so results can be kept: a status write re-validates an
    unchanged spec, and evaluating CEL is the emulator's main cost at thousands of objects)."""
    activation = {"self": celpy.json_to_cel(json.loads(value_json))}
    if old_json is not None:
        activation["oldSelf"] = celpy.json_to_cel(json.loads(old_json))
    try:
        result = _program(rule).evaluate(activation)
    except Exception:  # an evaluation error is a refusal too
        return False
    return isinstance(result, bool | celpy.celtypes.BoolType) and bool(result)


def cel_errors(schema: dict[str, Any], value: Any, old: Any, path: str = "") -> list[Cause]:
    """The ``x-kubernetes-validations`` rules that ``value`` fails (``old``: the stored value, or None)."""
    errors: list[Cause] = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = re.search(r"\boldSelf\b", rule["rule"]) is not None
        if uses_old and old is None:
            continue  # transition rules are only evaluated on update, where the old value exists
        old_json = json.dumps(old, sort_keys=True) if uses_old else None
        if not _rule_holds(rule["rule"], json.dumps(value, sort_keys=True), old_json):
            where = path + rule.get("fieldPath", "")
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            errors.append(Cause(where, f"Invalid value: {_cel_type(value)}: {message}"))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, prop in props.items():
            if name in value:
                old_value = old.get(name) if isinstance(old, dict) else None
                errors += cel_errors(prop, value[name], old_value, _join(path, name))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in props:
                    old_value = old.get(name) if isinstance(old, dict) else None
                    errors += cel_errors(extra, item, old_value, _join(path, name))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += cel_errors(schema["items"], item, None, _join(path, index))
    return errors


def _cel_type(value: Any) -> str:
    return {dict: '"object"', list: '"array"', str: '"string"', bool: '"boolean"'}.get(
        type(value), '"number"'
    )


def _field_message(cause: Cause) -> str:
    return f"{cause.field}: {cause.message}" if cause.field else cause.message


def validate(schema: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[Cause]:
    """Schema, then (on a schema-valid object, as the API server does) the CEL rules."""
    causes = schema_errors(schema, obj)
    if not causes:
        causes = cel_errors(schema, obj, old)
    return causes


def invalid_message(kind_group: str, name: str, causes: list[Cause]) -> str:
    """``Webhook.hookline.io "x" is invalid: spec.url: ...`` (several causes as a bracketed list)."""
    parts = [_field_message(c) for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return f'{kind_group} "{name}" is invalid: {joined}'


def admit(
    crd: dict[str, Any],
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    *,
    field_validation: str = "Strict",
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Admit ``obj`` as kubectl sends it (Strict field validation by default: unknown fields are
    errors; "Ignore" prunes them silently as the API server does for a plain request); return the
    stored object and (field path, message) for each error."""
    schema = version_of(crd)["schema"]["openAPIV3Schema"]
    obj = copy.deepcopy(obj)
    errors: list[Cause] = []
    if field_validation == "Strict":
        errors += [
            c for c in schema_errors(schema, obj, unknown_fields=True) if c.message.startswith("field not")
        ]
    prune(schema, obj)
    obj = apply_defaults(schema, obj)
    errors += validate(schema, obj, old)
    return obj, [(c.field, c.message) for c in errors]


def iter_fields(value: Any, path: str = "") -> Iterator[str]:
    """Every leaf path in ``value`` (for tests that compare what was sent with what was kept)."""
    if isinstance(value, dict) and value:
        for name, item in value.items():
            yield from iter_fields(item, _join(path, name))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from iter_fields(item, _join(path, index))
    else:
        yield path
