"""What a markdown file says about its entry: the title, tags, dates and meta rules for any file, pyrite's or not."""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pyrite.errors import ValidationError
from pyrite.field_rules import TITLE_MAX
from pyrite.names import is_slug
from pyrite.storage import files

# Keys that are entry fields, not meta (`id` is read and ignored: the path is the id).
FIELD_KEYS = ("id", "title", "type", "tags", "created", "updated")

# An inline tag (Obsidian's rule): '#' at the start of a line or after whitespace, then letters, digits,
# '_', '-' or '/' (nested tags), at least one of them not a digit. '# Heading' has a space: never a tag.
_INLINE_TAG = re.compile(r"(?<!\S)#([\w/-]+)")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_TAG_SPLIT = re.compile(r"[,\s]+")


@dataclass
class FileFields:
    """An entry's fields as one file gives them."""

    title: str
    body: str
    type: str
    tags: list[str]  # frontmatter tags, then the body's inline #tags: what the index keeps
    front_tags: list[str]  # frontmatter tags only: what an update compares with and writes
    created: str
    updated: str
    meta: dict[str, Any]
    keys: tuple[str, ...]  # the frontmatter's top-level keys, in file order
    problem: files.FrontProblem | None  # the frontmatter is not valid YAML: indexed by its body only


def scalar_text(value: Any) -> str | None:
    """A YAML scalar as text (42 -> "42", true -> "true"); None for null, lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def tag_list(value: Any) -> list[str]:
    """Tags from a frontmatter value: a list (of any scalars), or one string of tags split at commas or spaces."""
    if isinstance(value, (list, tuple)):
        items = [scalar_text(v) for v in value]
    else:
        text = scalar_text(value)
        items = _TAG_SPLIT.split(text) if isinstance(value, str) else [text]
    return _dedupe(t.strip().lstrip("#").strip() for t in items if t is not None)


def _dedupe(tags: Any) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        if tag and tag.casefold() not in seen:  # tags differ by case only are one tag, as in Obsidian
            seen.add(tag.casefold())
            out.append(tag)
    return out


def _outside_code(body: str) -> str:
    """body without fenced code blocks and inline code spans (where '#' is never a tag)."""
    if "```" in body or "~~~" in body:
        kept: list[str] = []
        fence: str | None = None
        for line in body.splitlines():
            match = _FENCE.match(line)
            if fence is None and match:
                fence = match.group(1)
            elif fence is not None and match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            elif fence is None:
                kept.append(line)
        body = "\n".join(kept)
    return _CODE_SPAN.sub(" ", body) if "`" in body else body


def inline_tags(body: str) -> list[str]:
    """The #tags written in the body (nested `#a/b` kept whole), outside code, not pure numbers like #123."""
    if "#" not in body:
        return []
    found = (m.group(1).strip("/") for m in _INLINE_TAG.finditer(_outside_code(body)))
    return _dedupe(t for t in found if t and not t.replace("/", "").isdigit())


def _heading(body: str) -> str:
    """The text of the body's first `# heading` outside code, or ""."""
    if "# " not in body:
        return ""
    for line in _outside_code(body).splitlines():
        if line.startswith("# "):
            text = line[2:].strip().rstrip("#").strip()
            if text:
                return text
    return ""


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(title: str) -> str:
    """A title read from a file, as written there; only line breaks (one line is required) are folded."""
    title = title.strip()
    if "\n" in title or "\r" in title:
        title = " ".join(line.strip() for line in title.splitlines() if line.strip())
    return title[:TITLE_MAX]


def decode(data: bytes) -> str:
    """A file's bytes as text; ValidationError naming the first bad byte when they are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"it is not UTF-8 text (byte 0x{data[exc.start]:02X} at offset {exc.start}); "
                              "save it as UTF-8 to index it") from None


def read_fields(data: bytes, name: str, st: os.stat_result) -> FileFields:
    """The fields of the file `name` (its path in the KB) with content data and stat st."""
    front, body, problem = files.read_markdown(decode(data))
    keys = tuple(front)
    mtime = _stamp(st.st_mtime)
    title = one_line(scalar_text(front.pop("title", None)) or "")
    if not title:
        stem = posixpath.basename(name)
        title = one_line(_heading(body)) or (stem[:-3] if stem.endswith(".md") else stem)
    front_tags = tag_list(front.pop("tags", None))
    kind = front.pop("type", None)
    front.pop("id", None)  # the path is the id
    created = scalar_text(front.pop("created", None)) or scalar_text(front.get("date"))
    if not created:
        # A file pyrite did not write: when it was made (where the OS knows), else last changed. Never "now".
        birth = getattr(st, "st_birthtime", None)
        created = _stamp(birth) if birth else mtime
    updated = scalar_text(front.pop("updated", None)) or mtime
    return FileFields(
        title=title, body=body, type=kind if isinstance(kind, str) and is_slug(kind) else "note",
        tags=_dedupe([*front_tags, *inline_tags(body)]), front_tags=front_tags, created=created,
        updated=updated, meta=json.loads(json.dumps(front, default=str)), keys=keys, problem=problem)


def problem_line(name: str, problem: files.FrontProblem) -> str:
    """The warning for a file whose frontmatter is not valid YAML."""
    return (f"{name}: line {problem.line}: the frontmatter is not valid YAML ({problem.reason}); "
            "indexed by its body")
