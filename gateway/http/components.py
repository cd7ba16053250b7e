"""What the published documents share: the JSON Schemas of the wire models under
`components/schemas`, and the route that serves a document.

`/openapi.json` and `/asyncapi.json` both take their schemas from here, so a model has
the same schema under the same name in both, generated from the class the handlers use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

__all__ = ["REF_TEMPLATE", "Components", "ModelUse", "components", "document_routes"]

REF_TEMPLATE = "#/components/schemas/{model}"

# A model and the direction it travels in: "validation" for what the gateway parses,
# "serialization" for what it writes (their schemas differ where defaults are filled in).
ModelUse = tuple[type[BaseModel], JsonSchemaMode]


@dataclass(frozen=True, slots=True)
class Components:
    """The schemas of some models, and each model's `{"$ref": ...}` into them."""

    refs: Mapping[tuple[type[Any], JsonSchemaMode], Mapping[str, Any]]  # pydantic's own key
    schemas: dict[str, Any]  # components/schemas: name -> JSON Schema

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(self.refs[model, mode])

    def name(self, model: type[BaseModel], mode: JsonSchemaMode) -> str:
        return str(self.refs[model, mode]["$ref"]).rsplit("/", 1)[1]


def components(uses: Iterable[ModelUse]) -> Components:
    """The schemas of `uses` and of every model they contain, named as pydantic names them."""
    refs, defs = models_json_schema(list(dict.fromkeys(uses)), ref_template=REF_TEMPLATE)
    return Components(refs, defs.get("$defs", {}))


def document_routes(path: str, build: Callable[[], dict[str, Any]]) -> web.RouteTableDef:
    """A public `GET path` answering `build()`'s document, built and encoded once."""
    text = functools.cache(lambda: json.dumps(build(), indent=1))
    routes = web.RouteTableDef()

    @routes.get(path)
    async def document(request: web.Request) -> web.Response:
        del request
        return web.json_response(text=text())

    return routes
