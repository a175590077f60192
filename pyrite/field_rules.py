"""What an entry's fields and a query may hold: the input rules every front end shares (names: names.py)."""

from __future__ import annotations

import json
import re
from typing import Any

from pyrite.errors import ValidationError
from pyrite.names import is_slug
from pyrite.storage import files

TITLE_MAX = 500
TAG_MAX = 100
TYPE_MAX = 64
# Deeper meta is refused: YAML's emitter recurses several frames a level and hit the recursion limit at ~330.
META_DEPTH_MAX = 32
SEARCH_MODES = ("keyword", "semantic", "hybrid")
SEARCH_LIMIT_MAX = 1000
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # a NUL escape in JSON text, not an escaped backslash


def check_text(value: str, what: str) -> str:
    """value if it is valid Unicode text (no lone surrogates, no NUL), else ValidationError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid UTF-8 text") from None
    if "\x00" in value:
        raise ValidationError(f"{what} must not contain NUL characters")
    return value


def check_title(title: Any) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ValidationError("title must be a non-empty string")
    check_text(title, "title")
    if len(title) > TITLE_MAX or "\n" in title or "\r" in title or "\x00" in title:
        raise ValidationError(f"title must be one line of at most {TITLE_MAX} characters")
    return title.strip()


def check_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ValidationError("body must be a string")
    return check_text(body, "body")


def check_tags(tags: Any) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise ValidationError("tags must be a list of strings")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValidationError("each tag must be a non-empty string")
        tag = check_text(tag, "a tag").strip()
        if len(tag) > TAG_MAX or any(c in tag for c in "\n\r\x00"):
            raise ValidationError(f"tag {tag[:40]!r} must be one line of at most {TAG_MAX} characters")
        if tag not in out:
            out.append(tag)
    return out


def check_type(kind: Any) -> str:
    if not isinstance(kind, str) or not kind or len(kind) > TYPE_MAX or not is_slug(kind):
        raise ValidationError(f"type must be 1 to {TYPE_MAX} letters, digits, '-' or '_'")
    return kind


def depth(value: Any) -> int:
    """How deeply lists and mappings nest in value (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, level + 1)
            if deepest > META_DEPTH_MAX:
                return deepest
            todo.extend((child, level + 1) for child in item)
    return deepest


def check_meta(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValidationError("meta must be a mapping of key: value")
    if depth(meta) > META_DEPTH_MAX:
        raise ValidationError(f"meta is nested more than {META_DEPTH_MAX} levels deep")
    for key in meta:
        if not isinstance(key, str) or not key.strip() or key in files.RESERVED_KEYS:
            raise ValidationError(f"meta key {key!r} is empty or reserved ({', '.join(files.RESERVED_KEYS)})")
    try:
        text = check_text(json.dumps(meta, ensure_ascii=False, allow_nan=False), "meta")
    except (TypeError, ValueError, RecursionError):
        raise ValidationError("meta values must be strings, numbers, booleans, lists or mappings") from None
    if _JSON_NUL.search(text):  # json.dumps escapes NUL, so check_text cannot see one at any depth
        raise ValidationError("meta must not contain NUL characters, in keys or values")
    # As the index stores it (tuples become lists), so the entry a write returns is the one it indexed.
    return json.loads(text)
