"""Request parsing for the REST API: JSON bodies and query parameters, with clear 400/422 errors."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from pyrite.errors import ValidationError
from pyrite.names import check_kb_name

INT64_MAX = 2**63 - 1
LIST_LIMIT_MAX = 10_000
REQUEUE_LIMIT_MAX = 10**9
REQUEUE_STATUSES = ("failed", "done", "skipped")
WAIT_MAX = 300.0
# A search query, percent-encoded (up to 12 bytes a character), must fit in uvicorn's 16 KB request head.
QUERY_PARAM_MAX = 1000
# A JSON number, as the OpenAPI document's integer and number parameters are written in a query string.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class InputError(ValidationError):
    """The request is well-formed but a field has the wrong type or value (422)."""


class MalformedError(ValidationError):
    """The request body is not JSON, or not a JSON object (400)."""


class MediaTypeError(ValidationError):
    """The request body is not declared `Content-Type: application/json` (415)."""


def require_json(request: Request) -> None:
    """MediaTypeError unless the request says its body is JSON.

    Web pages can send text/plain and form bodies to any address without asking; a JSON body they cannot.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise MediaTypeError(f"Content-Type must be application/json, not {media[:60] or 'missing'!r}")


async def json_object(request: Request, allowed: dict[str, tuple[type, ...]], required: tuple[str, ...] = ()
                      ) -> dict[str, Any]:
    """The request's JSON object, checked against {field: allowed types}; unknown fields are refused."""
    require_json(request)
    raw = await request.body()
    if not raw.strip():
        raise MalformedError("a JSON object body is required (send {} for none of the fields)")
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedError("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise MalformedError("the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InputError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    for name in required:
        if data.get(name) is None:
            raise InputError(f"field {name!r} is required")
    for name, value in list(data.items()):
        types = allowed[name]
        if value is None and type(None) in types:
            continue
        # JSON Schema counts 3.0 as an integer; so does the OpenAPI document, so the server does too.
        if isinstance(value, float) and int in types and float not in types and value.is_integer():
            data[name] = value = int(value)
        # bool is an int subclass in Python; JSON true must not pass as a number.
        if isinstance(value, bool) and bool not in types:
            raise InputError(f"field {name!r} must be {_names(types)}")
        if not isinstance(value, types):
            raise InputError(f"field {name!r} must be {_names(types)}")
        if list in types and isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise InputError(f"field {name!r} must be a list of strings")
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list of strings",
             dict: "an object", float: "a number", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def query_int(request: Request, name: str, default: int | None, *, low: int, high: int) -> int | None:
    """An integer query parameter within [low, high] (an integral JSON number: 5, 5.0, 5e0); absent: default."""
    value = _query_number(request, name, "an integer")
    if value is None:
        return default
    if isinstance(value, float) and not value.is_integer():
        raise InputError(f"query parameter {name!r} must be an integer")
    number = int(value)
    if not low <= number <= high:
        raise InputError(f"query parameter {name!r} must be from {low} to {high}")
    return number


def query_float(request: Request, name: str, *, low: float, high: float) -> float | None:
    """A number query parameter within [low, high], or None when absent."""
    value = _query_number(request, name, "a number")
    if value is None:
        return None
    number = float(value)
    if not low <= number <= high:
        raise InputError(f"query parameter {name!r} must be from {low} to {high}")
    return number


def _query_number(request: Request, name: str, what: str) -> int | float | None:
    # Present but empty (`limit=`) is a bad value, not an absent one.
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _NUMBER.fullmatch(raw):
        raise InputError(f"query parameter {name!r} must be {what}")
    # Integers stay exact (float() would round 2**63 to a value that passes the bound check).
    if re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    number = float(raw)
    if number in (float("inf"), float("-inf")):
        raise InputError(f"query parameter {name!r} is out of range")
    return number


def query_text(request: Request, name: str, max_length: int) -> str:
    """A required text query parameter of at most max_length characters."""
    raw = request.query_params.get(name)
    if raw is None:
        raise InputError(f"query parameter {name!r} is required")
    if len(raw) > max_length:
        raise ValidationError(f"query parameter {name!r} is longer than {max_length} characters")
    return raw


def query_kb(request: Request, *, required: bool = False) -> str | None:
    """The `kb` query parameter, a valid KB name; None only when absent and not required."""
    raw = request.query_params.get("kb")
    if raw is None:
        if required:
            raise InputError("query parameter 'kb' is required")
        return None
    return check_kb_name(raw)


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of choices; None when absent."""
    raw = request.query_params.get(name)
    if raw is not None and raw not in choices:
        raise InputError(f"query parameter {name!r} must be one of {', '.join(choices)}")
    return raw
