"""Edit a markdown file's frontmatter in place: the keys asked for change, every other character stays.

Reading stays on the fast path in files.py (a hand parser, else libyaml). Only an edit uses ruamel.yaml's
round-trip parser, and only for where each top-level key's lines are: the lines of a changed key are
replaced by freshly rendered YAML for that key alone, new keys go at the end, a dropped key's lines go,
and everything else (comments, order, quoting, blank lines, BOM, CRLF) is copied through as it was. The
result is parsed again and refused unless exactly the intended keys changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RoundTripError

from pyrite.errors import ValidationError
from pyrite.storage import files

# The line breaks YAML readers count (ruamel's line numbers are in these lines).
_LINE = re.compile(r"[^\r\n\x85\u2028\u2029]*(?:\r\n|[\r\n\x85\u2028\u2029]|\Z)")


def _lines(text: str) -> list[str]:
    return [line for line in _LINE.findall(text) if line]


def _blank_or_comment(line: str) -> bool:
    # Only a comment at column 0 is surely not part of a block scalar (whose lines are indented).
    return not line.strip() or line.startswith("#")


def render_key(key: str, value: Any, *, flow: bool = False) -> str:
    """`key: value` as YAML lines ending in "\\n" (flow: a list of scalars on one line, `[a, b]`)."""
    flow = flow and isinstance(value, list) and bool(value) and all(not isinstance(v, (list, dict)) for v in value)
    return files.render_front({key: value}, flow=flow)


def _restyle(rendered: str, old_lines: list[str], old_value: Any, newline: str) -> str:
    """rendered in the file's line endings, with the old value's list indentation and end-of-line comment."""
    lines = rendered.split("\n")[:-1]
    if isinstance(old_value, CommentedSeq) and len(old_lines) > 1 and all(ln.startswith("- ") for ln in lines[1:]):
        indent = old_lines[1][:len(old_lines[1]) - len(old_lines[1].lstrip(" "))]
        if old_lines[1].lstrip(" ").startswith("- "):
            lines = lines[:1] + [indent + ln for ln in lines[1:]]
    out = [ln + newline for ln in lines]
    return "".join(out)


def _trailing_comment(line: str, column: int | None) -> str:
    """The `  # comment` ending a one-line key (with its line break), or ""."""
    if column is None or column >= len(line) or line[column] != "#":
        return ""
    return line[len(line[:column].rstrip()):]


def _comment_column(data: CommentedMap, key: Any, line: int) -> int | None:
    """The column of the comment ruamel attached after key's value on the key's own line, if any."""
    for token in (data.ca.items.get(key) or [])[2:3]:
        mark = getattr(token, "start_mark", None)
        if mark is not None and mark.line == line:
            return int(mark.column)
    return None


@dataclass
class _Key:
    """One top-level key of a header: its label, first line, and what its restyling needs."""

    label: str
    start: int
    value: Any = None  # ruamel's node: CommentedSeq tells a list's style and indentation
    flow: bool = False
    comment: int | None = None  # column of an end-of-line comment on the key's own line


def _simple_keys(header: str, lines: list[str]) -> list[_Key] | None:
    """The keys of a header of the shape pyrite writes (`key: value` and `- item` lines only), found
    without a YAML parser (~100x faster than ruamel); None for any other header."""
    if files.simple_front(header) is None:
        return None
    return [_Key(line.split(":", 1)[0], i) for i, line in enumerate(lines) if not line.startswith("- ")]


def _round_trip_keys(header: str, name: str) -> list[_Key]:
    """The keys of any block-mapping header, located by ruamel's round-trip parser."""
    try:
        data = YAML(typ="rt").load(header)
    except (RoundTripError, ValueError, RecursionError) as exc:
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]
        raise ValidationError(f"{name}: pyrite cannot edit this frontmatter ({reason}); the file was not "
                              "changed: fix the YAML in an editor and try again") from None
    if data is None:
        return []
    if not isinstance(data, CommentedMap) or data.fa.flow_style():
        raise ValidationError(f"{name}: the frontmatter is not a block mapping of key: value lines; the file "
                              "was not changed")
    keys = []
    for key in data:
        line = data.lc.key(key)[0]
        value = data[key]
        keys.append(_Key(str(key), line, value, isinstance(value, CommentedSeq) and value.fa.flow_style(),
                         _comment_column(data, key, line)))
    if any(b.start <= a.start for a, b in zip(keys, keys[1:])):
        raise ValidationError(f"{name}: several frontmatter keys share a line; pyrite edits only one key a "
                              "line, the file was not changed")
    return keys


def edit_header(header: str, changes: dict[str, Any], drop: Iterable[str], *, newline: str, name: str) -> str:
    """header (the YAML between the '---' lines) with changes set and drop removed, all else kept verbatim."""
    drop = [k for k in drop if k not in changes]
    lines = _lines(header)
    keys = _simple_keys(header, lines)
    if keys is None:
        keys = _round_trip_keys(header, name)
    out: list[str] = lines[:keys[0].start] if keys else list(lines)
    for i, key in enumerate(keys):
        start, end = key.start, keys[i + 1].start if i + 1 < len(keys) else len(lines)
        tail = end
        while tail - 1 > start and _blank_or_comment(lines[tail - 1]):
            tail -= 1  # comments and blank lines before the next key are not this key's
        if key.label in changes:
            old_lines = lines[start:tail]
            new = _restyle(render_key(key.label, changes[key.label], flow=key.flow), old_lines, key.value, newline)
            if len(old_lines) == 1 and new.count(newline) == 1:
                comment = _trailing_comment(old_lines[0], key.comment)
                if comment:
                    new = new[:-len(newline)] + comment
            out.append(new)
        elif key.label not in drop:
            out.extend(lines[start:tail])
        out.extend(lines[tail:end])
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += newline
    present = {key.label for key in keys}
    for label, value in changes.items():
        if label not in present:
            out.append(_restyle(render_key(label, value), [], None, newline))
    edited = "".join(out)
    _check(header, edited, changes, drop, name)
    return edited


def _check(old: str, new: str, changes: dict[str, Any], drop: list[str], name: str) -> None:
    """Refuse the edit unless new reads as old with exactly changes set and drop removed, order kept."""
    before, problem = files.load_header(old)
    after, problem_after = files.load_header(new)
    expected = dict(before)
    for key in drop:
        expected.pop(key, None)
    expected.update(changes)

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)

    if problem is None and (problem_after is not None or dump(after) != dump(expected)):
        keys = ", ".join(sorted(set(changes) | set(drop)))
        raise ValidationError(f"{name}: changing {keys} would change other frontmatter too (YAML anchors or "
                              "unusual syntax); the file was not changed: edit it in an editor")


def edit_text(text: str, changes: dict[str, Any], drop: Iterable[str] = (), body: str | None = None, *,
              name: str) -> str:
    """The file text with frontmatter keys changed (others kept byte for byte) and, if given, a new body."""
    drop = list(drop)
    where = files.locate_header(text)
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    if where is None:
        rest = text[len(bom):] if body is None else body
        if not changes:
            return bom + rest
        first = text.split("\n", 1)[0]
        newline = "\r\n" if first.endswith("\r") else "\n"
        header = "".join(_restyle(render_key(k, v), [], None, newline) for k, v in changes.items())
        return f"{bom}---{newline}{header}---{newline}{newline}{rest}"
    header = text[where.start:where.end]
    if changes or drop:
        header = edit_header(header, changes, drop, newline=where.newline, name=name)
    closing, rest = text[where.end:where.body], text[where.body:]
    if body and not closing.endswith("\n"):
        closing += where.newline  # the block ended the file: the body goes on the next line
    if body is not None:
        # Keep the one blank line the reader strips after the block; add one when the new body starts blank.
        sep = rest[:2] if rest.startswith("\r\n") else rest[:1] if rest.startswith("\n") else ""
        if not sep and body.startswith(("\n", "\r\n")):
            sep = where.newline
        rest = sep + body
    return text[:where.start] + header + closing + rest
