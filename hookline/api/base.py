"""The base models every kind of hookline's API builds on (camelCase outside, snake_case inside).

A module of its own so that the kinds' submodules (hookline.api.credentials, ...) and hookline.api itself
can share them without importing each other in a circle.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """camelCase on the outside (CRD, YAML), snake_case in Python; unknown keys are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )


PROOF_METHOD_SPELLINGS = {"file": "File", "dns": "DNS"}


def _proof_method(value: str) -> str:
    """DESIGN.md names the methods `file` and `dns`; the CRDs' CamelCase `File`/`DNS` mean the same."""
    return PROOF_METHOD_SPELLINGS.get(value, value)


# ``spec.verification.method`` / a WebhookDomain's ``spec.method``: either spelling is admitted (the CRDs
# list all four), and the model holds the CamelCase one, so code compares with "File" and "DNS" only.
ProofMethodSpec = Annotated[Literal["File", "DNS", "file", "dns"], AfterValidator(_proof_method)]


class SecretRef(CamelModel):
    """One key of a Secret in the Webhook's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    key: Annotated[str, Field(min_length=1, max_length=253)]


class StatusModel(CamelModel):
    """A part of a status: ``patch()`` is the merge patch that writes the fields that were set.

    A field set to None deletes it (merge-patch semantics); a field never set is left alone.
    """

    def patch(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
