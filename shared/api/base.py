"""The base of every API model, JSON answers made from models, and OpenAPI schemas made from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

SCHEMA_REF = "#/components/schemas/{model}"


class ApiModel(BaseModel):
    """An answer of an obsflow API: immutable; fields a newer server adds are ignored by an older client."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def component_schemas(models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """The JSON schemas of `models` (as they are serialised) and of the models they contain, by class name, for an
    OpenAPI document's `components.schemas` (references point there)."""
    _, document = models_json_schema([(model, "serialization") for model in models], ref_template=SCHEMA_REF)
    return dict(document.get("$defs", {}))
