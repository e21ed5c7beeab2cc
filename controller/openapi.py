"""The controller's OpenAPI document, true to what it answers (Schemathesis checks it).

FastAPI documents a 422 it never sends (validation errors are our 400 ``BAD_REQUEST``) and
none of the platform's error answers. :func:`install` replaces its generator with one that
drops the 422 and documents, on every operation, the one error shape with the statuses
the platform uses, the bearer scheme (401/403, docs/security.md), and the 304 of the long
polls.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["ERROR_STATUSES", "install"]

ERROR_STATUSES = {
    "400": "BAD_REQUEST and its kinds (INVALID_SCHEMA, ...): fix the request",
    "401": "UNAUTHORIZED: no bearer token, or one not known here",
    "403": "FORBIDDEN: the token's role or store does not allow it",
    "404": "NOT_FOUND, STORE_NOT_FOUND, VERSION_NOT_FOUND",
    "408": "REQUEST_TIMEOUT: the request head or body came too slowly",
    "409": "CONFLICT, STORE_EXISTS, PUSH_IN_PROGRESS",
    "410": "VERSION_RETIRED",
    "413": "BODY_TOO_LARGE",
    "414": "URL_TOO_LONG",
    "431": "HEADERS_TOO_LARGE",
    "503": "UNAVAILABLE, NOT_ENOUGH_SERVERS, PUBSUB, TOO_MANY_CONNECTIONS: retry later",
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
        }
    },
}
_NOT_MODIFIED = {"/routing", "/auth/tokens"}
_TWO_OK = {("/stores/{name}/value-schemas", "post"): ("200", "201")}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = document.setdefault("components", {})
        components.setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{}, {"bearer": []}]  # optional: public paths take none
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in ERROR_STATUSES.items():
                    responses[status] = {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    }
                if path in _NOT_MODIFIED:
                    responses["304"] = {"description": "unchanged since the generation asked about"}
                for status in _TWO_OK.get((path, method), ()):
                    responses.setdefault(status, {"description": "the schema's id", "content": {"application/json": {"schema": {"type": "object"}}}})
        components["schemas"].pop("HTTPValidationError", None)
        components["schemas"].pop("ValidationError", None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
