"""The base models every kind of hookline's API builds on (camelCase outside, snake_case inside).

A module of its own so that the kinds' submodules (hookline.api.credentials, ...) and hookline.api itself
can share them without importing each other in a circle.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
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
