"""The OpenAPI 3.1 document served at /api/openapi.json; it lists exactly the routes of app.ROUTES and says
exactly what each accepts, from the same constants the handlers and the core check against."""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

from pyrite import __version__

from pyrite.server.inputs import INT64_MAX, LIST_LIMIT_MAX, QUERY_PARAM_MAX, REQUEUE_LIMIT_MAX, REQUEUE_STATUSES, WAIT_MAX
from pyrite.field_rules import TAG_MAX, TITLE_MAX, TYPE_MAX
from pyrite.field_rules import SEARCH_LIMIT_MAX, SEARCH_MODES
from pyrite.storage.files import RESERVED_KEYS

# Every character str.strip() removes: a title, tag or query made only of these is blank.
_SPACES = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
_LINE_BREAKS = "\\r\\n\\u0000"


def _one_line(max_length: int) -> dict[str, Any]:
    """One line of text with a non-blank character, no NUL (titles, tags)."""
    return {"type": "string", "minLength": 1, "maxLength": max_length,
            "pattern": f"^[^{_LINE_BREAKS}]*[^{_SPACES}\\u0000][^{_LINE_BREAKS}]*$"}




def _word_class() -> str:
    """names._is_word as a regex class body: every letter, mark and digit by this Python's Unicode tables,
    spelled as literal characters (\\p{..} is not read alike by Python, the validator and generators)."""
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code))[0] in "LMN":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges)


_WORD = _word_class()
# names.is_slug (the rule of `type`): letters, marks, digits (any script), '-', '_', '.' inside; never '..'
# nor a final '.'. The big class appears once (generating from it is slow); the rules on '.', '-' and '_'
# are a `not`.
_SLUG = {"type": "string", "pattern": f"^[{_WORD}_.-]+$", "not": {"pattern": "^[_.-]|\\.\\.|\\.$"}}
_KB_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64}
# names.entry_id_problem: '/'-separated names of any characters but control ones, NUL and '\\'; no name
# empty, starting with '.', or ending with '.' or ' '. maxLength counts characters where the rule counts
# bytes: 4 bytes a character at most keeps every id the schema allows one the server takes.
_NAME_CHAR = "[^/\\\\\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]"
_NAME_EDGE = "[^/\\\\\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029. ]"
_NAME_FIRST = "[^/\\\\\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029.]"
# A name of at most 63 characters: 252 bytes even at 4 a character, with '.md' within the 255 a name may have.
_SEGMENT = f"(?:{_NAME_EDGE}|{_NAME_FIRST}{_NAME_CHAR}{{0,61}}{_NAME_EDGE})"
# Up to 4 names: at most 255 characters, within ID_MAX_BYTES at 4 bytes a character. The pattern bounds the
# length itself; a maxLength beside it makes generators filter out most of what they draw.
_PATH = f"{_SEGMENT}(?:/{_SEGMENT}){{0,3}}"
_ENTRY_ID = {"type": "string", "pattern": f"^{_PATH}$"}
_FOLDER = {"type": "string", "pattern": f"^(?:{_PATH})?$"}
_TYPE = _SLUG | {"minLength": 1, "maxLength": TYPE_MAX}
_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
_TAGS = {"type": "array", "items": _one_line(TAG_MAX)}
_NOT_BLANK = f"^[^\\u0000]*[^{_SPACES}\\u0000][^\\u0000]*$"
_QUERY = {"type": "string", "minLength": 1, "maxLength": QUERY_PARAM_MAX, "pattern": _NOT_BLANK}
_META = {"$ref": "#/components/schemas/Meta"}
_STR = {"type": "string"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": _ref("Error")}}}
    if headers:
        out["headers"] = headers
    return out


# Answers any route can give: a foreign Host (400), a token (401), a foreign Origin (403), a method not served
# (405), a bug (500); and the core's own refusals of a value the schema cannot express (400).
_COMMON = {
    "400": _error("malformed request, an invalid name or id, a Host that is not a loopback name"),
    "401": _error("PYRITE_API_TOKEN is set and the bearer token is missing or wrong",
                  {"WWW-Authenticate": {"required": True, "schema": _STR}}),
    "403": _error("a browser request from a foreign Origin"),
    "405": _error("method not served on this path", {"Allow": {"required": True, "schema": _STR}}),
    "500": _error("an unexpected error; the server log has the details"),
}
_BODY_ERRORS = {
    "413": _error("the body is over PYRITE_MAX_BODY bytes"),
    "415": _error("the Content-Type is not application/json"),
    "422": _error("a field has the wrong type or value, or is unknown"),
}


def _op(op_id: str, summary: str, ok: str, schema: str, *, params: list[dict[str, Any]] | None = None,
        body: str | None = None, errors: tuple[str, ...] = (), links: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
    """One operation: its parameters, JSON body, success answer and every error it may give."""
    success: dict[str, Any] = {"description": "ok", "content": {"application/json": {"schema": _ref(schema)}}}
    if links:
        success["links"] = links
    responses: dict[str, Any] = {ok: success, **_COMMON}
    extra = {"404": _error("no such KB, entry or folder"), "409": _error("it exists already, or the KB folder refuses the write"),
             "422": _error("a query parameter has the wrong type or value"),
             "502": _error("the embedding provider failed"),
             "503": _error("semantic search or the embedding model is not available"),
             }
    for code in errors:
        responses[code] = extra[code]
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = list(params)
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        op["responses"].update(_BODY_ERRORS)
    return op


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False, doc: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": doc}


def _query_kb(required: bool = False) -> dict[str, Any]:
    return _param("kb", "query", _KB_NAME, required, "KB name")


_ENTRY_PATH = [_param("kb", "path", _KB_NAME, True, "KB name"),
               _param("entry_id", "path", _ENTRY_ID, True, "entry id (percent-encoded)")]
_ENTRY_LINKS = {
    "GetEntry": {"operationId": "getEntry", "parameters": {"kb": "$response.body#/kb", "entry_id": "$response.body#/id"}},
    "UpdateEntry": {"operationId": "updateEntry",
                    "parameters": {"kb": "$response.body#/kb", "entry_id": "$response.body#/id"}},
    "DeleteEntry": {"operationId": "deleteEntry",
                    "parameters": {"kb": "$response.body#/kb", "entry_id": "$response.body#/id"}},
}
_MOVED_LINKS = {  # given, so the stateful phase does not guess links from the answer's field names
    "GetMovedEntry": {"operationId": "getEntry",
                      "parameters": {"kb": "$response.body#/entry/kb", "entry_id": "$response.body#/entry/id"}},
    "MovedLinks": {"operationId": "entryLinks",
                   "parameters": {"kb": "$response.body#/entry/kb", "entry_id": "$response.body#/entry/id"}},
}
_KB_LINKS = {
    "CreateEntry": {"operationId": "createEntry",
                    "requestBody": {"kb": "$response.body#/name", "title": "A linked entry", "body": "linked"}},
    "ListEntries": {"operationId": "listEntries", "parameters": {"kb": "$response.body#/name"}},
    "EmbedStatus": {"operationId": "embedStatus", "parameters": {"kb": "$response.body#/name"}},
}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX}


def _paths() -> dict[str, Any]:
    return {
        "/api/health": {"get": _op("health", "Server, worker and model status", "200", "Health")},
        "/api/kbs": {
            "get": _op("listKbs", "List KBs", "200", "KBList"),
            "post": _op("createKb", "Register a KB folder", "201", "KB", body="NewKB", errors=("404", "409"),
                        links=_KB_LINKS),
        },
        "/api/entries": {
            "get": _op("listEntries", "List a KB's entries, newest first", "200", "EntryList", errors=("404", "422"),
                       params=[_query_kb(True), _param("limit", "query", _LIMIT),
                               _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": INT64_MAX})]),
            "post": _op("createEntry", "Create an entry; answers as soon as it is written and indexed", "201",
                        "Entry", body="NewEntry", errors=("404", "409", "502", "503"), links=_ENTRY_LINKS),
        },
        "/api/entries/{kb}/{entry_id}": {
            "get": _op("getEntry", "Get an entry", "200", "Entry", params=_ENTRY_PATH, errors=("404",)),
            "patch": _op("updateEntry", "Update an entry; only the given fields change", "200", "Entry",
                         params=_ENTRY_PATH, body="EntryPatch", errors=("404", "409", "502", "503"), links=_ENTRY_LINKS),
            "delete": _op("deleteEntry", "Delete an entry, its vectors and its queue row", "200", "Deleted",
                          params=_ENTRY_PATH, errors=("404", "409")),
        },
        "/api/links/{kb}/{entry_id}": {
            "get": _op("entryLinks", "An entry's outgoing links, backlinks and unresolved links", "200", "Links",
                       params=_ENTRY_PATH, errors=("404",))},
        "/api/move/{kb}/{entry_id}": {
            "post": _op("moveEntry", "Rename an entry and rewrite the links to it; its vectors stay", "200",
                        "Moved", params=_ENTRY_PATH, body="Move", errors=("404", "409"), links=_MOVED_LINKS)},
        "/api/search": {"get": _search()},
        "/api/index/embed-status": {"get": _op(
            "embedStatus", "Embedding queue status", "200", "Status", params=[_query_kb()], errors=("404", "422"))},
        "/api/index/embed/requeue": {"post": _op(
            "requeue", "Queue failed or done entries again, or backfill missing vectors", "200", "Queued",
            body="Requeue", errors=("404",))},
        "/api/index/embed/failed": {"get": _op(
            "failedEntries", "Failed entries with their errors", "200", "FailedList", errors=("404", "422"),
            params=[_query_kb(), _param("limit", "query", _LIMIT)])},
        "/api/openapi.json": {"get": _op("openapi", "This document", "200", "Any")},
    }


def _search() -> dict[str, Any]:
    op = _op("search", "Search by keyword, meaning or both", "200", "SearchResults", errors=("404", "422", "502"),
             params=[_param("q", "query", _QUERY, True, "query text"),
                     _query_kb(),
                     _param("mode", "query", {"type": "string", "enum": list(SEARCH_MODES)}),
                     _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": SEARCH_LIMIT_MAX}),
                     _param("wait", "query", {"type": "number", "minimum": 0, "maximum": WAIT_MAX},
                            doc="seconds to wait for pending embeddings first (read-your-writes)")])
    op["responses"]["503"] = _error("the search ran over its time budget, or semantic search is not available",
                                    {"Retry-After": {"required": False, "schema": {"type": "integer", "minimum": 0}}})
    return op


def _schemas() -> dict[str, Any]:
    statuses = {"type": "string", "enum": list(REQUEUE_STATUSES)}
    return {
        "Any": {"type": "object"},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string", "minLength": 1}}},
        "Health": {"type": "object", "required": ["status", "version", "worker", "model"]},
        "KB": {"type": "object", "required": ["name", "path", "created"],
               "properties": {"name": _STR, "path": _STR, "created": _STR, "entries": {"type": "integer"}}},
        "KBList": {"type": "object", "required": ["kbs"], "properties": {"kbs": {"type": "array", "items": _ref("KB")}}},
        "NewKB": {"type": "object", "required": ["name"], "additionalProperties": False,
                  "properties": {"name": _KB_NAME,
                                 "path": _nullable({"type": "string", "pattern": "^/[^\\u0000]*$",
                                                    "description": "an absolute folder path; default "
                                                                   "$PYRITE_HOME/kbs/NAME"}),
                                 "create": _nullable({"type": "boolean", "description":
                                                      "create the folder if it is missing (default false)"}),
                                 "names": _nullable({"type": "string", "enum": ["title", "slug"], "description":
                                                     "how new entries' files are named (default the kb_names "
                                                     "setting, 'title')"})}},
        "NewEntry": {"type": "object", "required": ["kb", "title"], "additionalProperties": False,
                     "properties": {"kb": _KB_NAME, "title": _one_line(TITLE_MAX), "body": _nullable(_TEXT),
                                    "folder": _nullable(_FOLDER | {"description": "folder inside the KB, made "
                                                                                  "as needed ('' the top)"}),
                                    "tags": _nullable(_TAGS), "type": _nullable(_TYPE), "meta": _nullable(_META)}},
        "EntryPatch": {"type": "object", "additionalProperties": False,
                       "properties": {"title": _nullable(_one_line(TITLE_MAX)), "body": _nullable(_TEXT),
                                      "tags": _nullable(_TAGS), "type": _nullable(_TYPE), "meta": _nullable(_META)}},
        # Frontmatter keys the user owns: not blank, not one pyrite writes itself; no NUL anywhere.
        "Meta": {"type": "object", "additionalProperties": _ref("MetaValue"),
                 "propertyNames": {"pattern": _NOT_BLANK,
                                   "not": {"enum": list(RESERVED_KEYS)}}},
        "MetaValue": {"anyOf": [_TEXT, {"type": ["number", "boolean", "null"]},
                                {"type": "array", "items": _ref("MetaValue")},
                                {"type": "object", "additionalProperties": _ref("MetaValue"),
                                 "propertyNames": {"pattern": "^[^\\u0000]*$"}}]},
        "Entry": {"type": "object", "required": ["id", "kb", "title", "type", "tags", "embedding_status"],
                  "properties": {"id": _STR, "kb": _STR, "title": _STR, "body": _STR, "type": _STR,
                                 "tags": {"type": "array", "items": _STR}, "meta": {"type": "object"},
                                 "created": _STR, "updated": _STR, "path": _STR,
                                 "embedding_status": {"type": ["string", "null"]},
                                 "embedding_error": {"type": ["string", "null"]}}},
        "EntryList": {"type": "object", "required": ["entries"],
                      "properties": {"entries": {"type": "array", "items": _ref("Entry")}}},
        "Links": {"type": "object", "required": ["outgoing", "backlinks", "unresolved"],
                  "properties": {k: {"type": "array", "items": {"type": "object"}}
                                 for k in ("outgoing", "backlinks", "unresolved")}},
        "Moved": {"type": "object", "required": ["entry", "old_id", "rewritten", "skipped"],
                  "properties": {"entry": _ref("Entry"), "old_id": _STR,
                                 "rewritten": {"type": "array", "items": _STR},
                                 "skipped": {"type": "array", "items": _STR}}},
        "Move": {"type": "object", "required": ["to"], "additionalProperties": False,
                 "properties": {"to": _ENTRY_ID | {"description": "the new id"}}},
        "Deleted": {"type": "object", "required": ["deleted"],
                    "properties": {"deleted": {"type": "object", "required": ["kb", "id"]}}},
        "SearchResults": {"type": "object", "required": ["results"],
                          "properties": {"results": {"type": "array", "items": {"type": "object"}},
                                         "pending": {"type": "integer"}, "mode": _STR}},
        "Status": {"type": "object"},
        "Requeue": {"type": "object", "additionalProperties": False,
                    "properties": {"kb": _nullable(_KB_NAME),
                                   "status": {"anyOf": [statuses, {"type": "array", "items": statuses},
                                                        {"type": "null"}],
                                              "description": "default failed"},
                                   "only_missing": {"type": ["boolean", "null"]},
                                   "limit": {"type": ["integer", "null"], "minimum": 1,
                                             "maximum": REQUEUE_LIMIT_MAX}}},
        "Queued": {"type": "object", "required": ["queued"], "properties": {"queued": {"type": "integer"}}},
        "FailedList": {"type": "object", "required": ["failed"],
                       "properties": {"failed": {"type": "array", "items": {"type": "object"}}}},
    }


def openapi_document(token: bool = False) -> dict[str, Any]:
    """The API description; with token=True (PYRITE_API_TOKEN set) every route requires the bearer token."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "pyrite", "version": __version__,
                 "description": "A local-first knowledge base: markdown entries, keyword and semantic search. "
                                "JSON bodies need Content-Type: application/json."},
        "paths": _paths(),
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "the value of PYRITE_API_TOKEN"}}},
    }
    if token:
        doc["security"] = [{"bearer": []}]
    return doc

