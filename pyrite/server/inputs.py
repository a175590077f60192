"""Request parsing for the REST API: JSON bodies and query parameters, with clear 400/422 errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from pyrite.errors import ValidationError


class InputError(ValidationError):
    """The request is well-formed but a field has the wrong type or value (422)."""


class MalformedError(ValidationError):
    """The request body is not JSON, or not a JSON object (400)."""


async def json_object(request: Request, allowed: dict[str, tuple[type, ...]], required: tuple[str, ...] = ()
                      ) -> dict[str, Any]:
    """The request's JSON object, checked against {field: allowed types}; unknown fields are refused."""
    raw = await request.body()
    if not raw.strip():
        data: Any = {}
    else:
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
    for name, value in data.items():
        types = allowed[name]
        if value is None and type(None) in types:
            continue
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
    """An integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"query parameter {name!r} must be an integer") from None
    if not low <= value <= high:
        raise InputError(f"query parameter {name!r} must be from {low} to {high}")
    return value


def query_float(request: Request, name: str, *, low: float, high: float) -> float | None:
    """A number query parameter within [low, high], or None."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"query parameter {name!r} must be a number") from None
    if not low <= value <= high:
        raise InputError(f"query parameter {name!r} must be from {low} to {high}")
    return value


def query_bool(request: Request, name: str) -> bool:
    """A true/false query parameter (1/0, true/false, yes/no)."""
    raw = (request.query_params.get(name) or "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise InputError(f"query parameter {name!r} must be true or false")
