"""The OpenAPI document of the router's public paths (docs/api.md, "Router").

Written by hand (the router is a raw ASGI app, not a framework that could derive it) and
kept true by the Schemathesis run in ``tests/fuzz/test_fuzz_router.py``, which fuzzes a
real router with it and checks every answer's status, content type and body against it.
``GET /changes/{store}`` (a Server-Sent Events stream that does not end) is described in
docs/api.md only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DOCUMENT"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: str) -> dict[str, Any]:
    descriptions = {
        "400": "BAD_REQUEST, INVALID_KEY, NO_CURRENT_VERSION, ...: fix the request",
        "401": "UNAUTHORIZED: a private store, no or an unknown bearer token",
        "403": "FORBIDDEN: the token may not read this store",
        "404": "STORE_NOT_FOUND, KEY_NOT_FOUND, VERSION_NOT_FOUND, NOT_FOUND",
        "405": "a method the path does not take",
        "410": "VERSION_RETIRED",
        "408": "REQUEST_TIMEOUT: the request head or body came too slowly",
        "413": "BODY_TOO_LARGE, ANSWER_TOO_LARGE",
        "414": "URL_TOO_LONG",
        "431": "HEADERS_TOO_LARGE",
        "429": "QUOTA_EXCEEDED: the store's read quota at this router; see Retry-After",
        "503": "UNAVAILABLE, NO_REPLICA, UNKNOWN_SCHEMA: retry",
        "504": "DEADLINE_EXCEEDED",
    }
    return {s: {"description": descriptions[s], "content": {"application/json": {"schema": _ERROR}}} for s in statuses}


_READ_ERRORS = ("400", "401", "403", "404", "405", "408", "410", "413", "414", "429", "431", "503", "504")
_VERSION = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "Read this version instead of the current one.",
    "schema": {"type": "integer", "minimum": 1},
}
_STORE = {"name": "store", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}, "example": "members"}
_RESULTS = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "found"],
                "properties": {"key": {}, "found": {"type": "boolean"}, "value": {}},
            },
        }
    },
}
_KEYS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["keys"],
                "properties": {"keys": {"type": "array", "maxItems": 10000, "items": {}}},
            }
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "venice router", "version": "1"},
    "components": {
        "schemas": {
            "Error": {
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
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/health": {
            "get": {
                "responses": {"200": {"description": "up", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }
        },
        "/storage/{store}/{key}": {
            "get": {
                "summary": "The value of one key, as JSON in the store's newest value schema.",
                "parameters": [
                    _STORE,
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}, "example": "7919"},
                    _VERSION,
                ],
                "responses": {"200": {"description": "the value", "content": {"application/json": {"schema": {}}}}, **_errors(*_READ_ERRORS)},
            }
        },
        "/storage/{store}": {
            "post": {
                "summary": "Batch get: the values of up to 10,000 keys, in their order, from one version.",
                "parameters": [_STORE, _VERSION],
                "requestBody": _KEYS_BODY,
                "responses": {"200": {"description": "one result per key", "content": {"application/json": {"schema": _RESULTS}}}, **_errors(*_READ_ERRORS)},
            }
        },
        "/compute/{store}": {
            "post": {
                "summary": "Read compute (docs/clients.md): projections and vector functions, run on the storage servers.",
                "parameters": [_STORE, _VERSION],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["keys"],
                                "properties": {
                                    "keys": {"type": "array", "maxItems": 10000, "items": {}},
                                    "project": {"type": "array", "items": {"type": "string"}},
                                    "compute": {"type": "array", "items": {"type": "object"}},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "one result per key", "content": {"application/json": {"schema": _RESULTS}}}, **_errors(*_READ_ERRORS)},
            }
        },
        "/routing": {
            "get": {
                "summary": "The router's routing table (for direct clients); a long poll with generation and wait_s.",
                "parameters": [
                    {"name": "generation", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "wait_s", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0, "maximum": 30}},
                ],
                "responses": {
                    "200": {"description": "the table", "content": {"application/json": {"schema": {"type": "object", "required": ["generation", "stores"]}}}},
                    "304": {"description": "unchanged"},
                    **_errors("400", "401", "408", "414", "431", "503"),
                },
            }
        },
    },
}
