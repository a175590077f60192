"""The OpenAPI 3.1 document served at /api/openapi.json; it lists exactly the routes of app.ROUTES."""

from __future__ import annotations

from typing import Any

from pyrite import __version__
from pyrite.services.search_service import LIMIT_MAX, MODES

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_STR = {"type": "string"}
_KB_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


def _ok(schema_ref: str, code: str = "200") -> dict[str, Any]:
    return {code: {"description": "ok", "content": {"application/json": {"schema": {"$ref": schema_ref}}}},
            "400": _ERROR, "404": _ERROR, "422": _ERROR}


def _json_body(schema_ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False, doc: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": doc}


_ENTRY_PATH = [_param("kb", "path", _KB_NAME, True, "KB name"), _param("entry_id", "path", _STR, True, "entry id")]


def openapi_document() -> dict[str, Any]:
    """The API description, generated from the same constants the handlers use."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "pyrite", "version": __version__,
                 "description": "A local-first knowledge base: markdown entries, keyword and semantic search."},
        "paths": {
            "/api/health": {"get": {"summary": "Server, worker and model status", "responses": _ok("#/components/schemas/Any")}},
            "/api/kbs": {
                "get": {"summary": "List KBs", "responses": _ok("#/components/schemas/Any")},
                "post": {"summary": "Create a KB", "requestBody": _json_body("#/components/schemas/NewKB"),
                         "responses": {**_ok("#/components/schemas/Any", "201"), "409": _ERROR}},
            },
            "/api/entries": {
                "get": {"summary": "List a KB's entries",
                        "parameters": [_param("kb", "query", _KB_NAME, True),
                                       _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10000}),
                                       _param("offset", "query", {"type": "integer", "minimum": 0})],
                        "responses": _ok("#/components/schemas/Any")},
                "post": {"summary": "Create an entry; answers as soon as it is written and indexed",
                         "requestBody": _json_body("#/components/schemas/NewEntry"),
                         "responses": _ok("#/components/schemas/Entry", "201")},
            },
            "/api/entries/{kb}/{entry_id}": {
                "get": {"summary": "Get an entry", "parameters": _ENTRY_PATH, "responses": _ok("#/components/schemas/Entry")},
                "patch": {"summary": "Update an entry", "parameters": _ENTRY_PATH,
                          "requestBody": _json_body("#/components/schemas/EntryPatch"),
                          "responses": _ok("#/components/schemas/Entry")},
                "delete": {"summary": "Delete an entry", "parameters": _ENTRY_PATH,
                           "responses": _ok("#/components/schemas/Any")},
            },
            "/api/entries/{kb}/{entry_id}/links": {"get": {
                "summary": "An entry's outgoing links, backlinks and unresolved links", "parameters": _ENTRY_PATH,
                "responses": _ok("#/components/schemas/Links")}},
            "/api/entries/{kb}/{entry_id}/move": {"post": {
                "summary": "Rename an entry and rewrite the links to it; its vectors stay",
                "parameters": _ENTRY_PATH, "requestBody": _json_body("#/components/schemas/Move"),
                "responses": {**_ok("#/components/schemas/Any"), "409": _ERROR}}},
            "/api/search": {"get": {
                "summary": "Search by keyword, meaning or both",
                "parameters": [_param("q", "query", _STR, True, "query text"),
                               _param("kb", "query", _KB_NAME),
                               _param("mode", "query", {"type": "string", "enum": list(MODES)}),
                               _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}),
                               _param("wait", "query", {"type": "number", "minimum": 0, "maximum": 300},
                                      doc="seconds to wait for pending embeddings first (read-your-writes)")],
                "responses": _ok("#/components/schemas/SearchResults")}},
            "/api/index/embed-status": {"get": {
                "summary": "Embedding queue status", "parameters": [_param("kb", "query", _KB_NAME)],
                "responses": _ok("#/components/schemas/Any")}},
            "/api/index/embed/requeue": {"post": {
                "summary": "Queue failed or done entries again, or backfill missing vectors",
                "requestBody": _json_body("#/components/schemas/Requeue"),
                "responses": _ok("#/components/schemas/Any")}},
            "/api/index/embed/failed": {"get": {
                "summary": "Failed entries with their errors",
                "parameters": [_param("kb", "query", _KB_NAME),
                               _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10000})],
                "responses": _ok("#/components/schemas/Any")}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": _ok("#/components/schemas/Any")}},
        },
        "components": {"schemas": {
            "Any": {"type": "object"},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": _STR}},
            "NewKB": {"type": "object", "required": ["name"], "additionalProperties": False,
                      "properties": {"name": _KB_NAME, "path": _STR}},
            "NewEntry": {"type": "object", "required": ["kb", "title"], "additionalProperties": False,
                         "properties": {"kb": _KB_NAME, "title": _STR, "body": _STR,
                                        "tags": {"type": "array", "items": _STR}, "type": _STR,
                                        "meta": {"type": "object"}}},
            "EntryPatch": {"type": "object", "additionalProperties": False,
                           "properties": {"title": _STR, "body": _STR, "tags": {"type": "array", "items": _STR},
                                          "type": _STR, "meta": {"type": "object"}}},
            "Entry": {"type": "object", "required": ["id", "kb", "title", "type", "tags"],
                      "properties": {"id": _STR, "kb": _STR, "title": _STR, "body": _STR, "type": _STR,
                                     "tags": {"type": "array", "items": _STR},
                                     "embedding_status": {"type": ["string", "null"]}}},
            "SearchResults": {"type": "object", "required": ["results"],
                              "properties": {"results": {"type": "array", "items": {"type": "object"}},
                                             "pending": {"type": "integer"}, "mode": _STR}},
            "Links": {"type": "object", "required": ["outgoing", "backlinks", "unresolved"],
                      "properties": {k: {"type": "array", "items": {"type": "object"}}
                                     for k in ("outgoing", "backlinks", "unresolved")}},
            "Move": {"type": "object", "required": ["to"], "additionalProperties": False,
                     "properties": {"to": {**_STR, "description": "the new id"}}},
            "Requeue": {"type": "object", "additionalProperties": False,
                        "properties": {"kb": _KB_NAME, "status": {"type": "string", "enum": ["failed", "done", "skipped"]},
                                       "only_missing": {"type": "boolean"}, "limit": {"type": "integer", "minimum": 1}}},
        }},
    }
