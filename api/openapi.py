"""The API definition: FastAPI's OpenAPI document, made accurate and served as OpenAPI 3.0 at ``/api``
(OGC API – Features conformance class *oas30*) and at ``/openapi.json``.

Decisions recorded here:
- **OpenAPI 3.0.3, not 3.1**: OGC API – Features Part 1 declares OpenAPI 3.0, and 3.0 is what most clients
  and test tools read best. FastAPI writes 3.1 (JSON Schema 2020-12); the few 3.1-only constructs it uses are
  rewritten to their 3.0 equivalents (``anyOf [X, null]`` → ``nullable``, ``const`` → ``enum``, numeric
  ``exclusiveMinimum`` → boolean, schema ``examples`` → ``example``).
- **Errors as they really are**: FastAPI documents a 422 for every endpoint with parameters, but the error
  contract (`api.errors`) answers 400 with the ``Exception`` shape; the 422s are replaced by that 400.
- The document is built once per process and cached.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from api.errors import single_valued
from api.ogc_features import OPENAPI_JSON
from api.ogc_params import check_known
from api.ogc_schemas import SCHEMAS, error


def _nullable(schema: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """3.0 form of ``anyOf: [other, {type: null}]`` keeping the sibling keywords of ``schema``."""
    out = {k: v for k, v in schema.items() if k != "anyOf"}
    if "$ref" in other:
        out["allOf"] = [other]
    else:
        out.update(other)
    out["nullable"] = True
    return out


def to_openapi30(node: Any) -> Any:
    """Rewrite the JSON Schema 2020-12 constructs FastAPI emits into their OpenAPI 3.0 forms."""
    if isinstance(node, list):
        return [to_openapi30(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: to_openapi30(v) for k, v in node.items()}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [s for s in any_of if s != {"type": "null"}]
        node = _nullable(node, rest[0]) if len(rest) == 1 else {**node, "anyOf": rest, "nullable": True}
    if isinstance(node.get("type"), list):
        types = [t for t in node["type"] if t != "null"]
        if len(types) < len(node["type"]):
            node["nullable"] = True
        node["type"] = types[0] if len(types) == 1 else types
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[plain] = node[bound]
            node[bound] = True
    if isinstance(node.get("examples"), list) and ("type" in node or "$ref" in node or "allOf" in node):
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node


def _errors_as_they_are(doc: dict[str, Any]) -> None:
    for path in doc.get("paths", {}).values():
        for op in path.values():
            responses = op.get("responses", {}) if isinstance(op, dict) else {}
            if "422" in responses:
                del responses["422"]
                responses.setdefault("400", error("A query parameter is wrong; `parameter` names it"))
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI 3.0 document (cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
    )
    doc.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    _errors_as_they_are(doc)
    doc = to_openapi30(doc)
    doc["openapi"] = "3.0.3"
    app.openapi_schema = doc
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the 3.0 document at ``/openapi.json`` (FastAPI's route) and at ``/api`` (OGC's)."""

    def openapi() -> dict[str, Any]:
        return build_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(
        "/api",
        tags=["OGC API – Features"],
        summary="The API definition (OpenAPI 3.0, JSON)",
        operation_id="getApiDefinition",
        response_class=JSONResponse,
        dependencies=[Depends(single_valued)],
        responses={
            200: {"description": "The OpenAPI document", "content": {OPENAPI_JSON: {"schema": {"type": "object"}}}}
        },
    )
    def api_definition(request: Request, f: Literal["json"] | None = None) -> JSONResponse:
        check_known(request.query_params, {"f"})
        return JSONResponse(build_openapi(app), media_type=OPENAPI_JSON)
