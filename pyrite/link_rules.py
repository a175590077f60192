"""Link syntax and resolution rules, as Obsidian has them: find links in a body, pick their target, rewrite them.

Pure functions on strings (no database, no files), like names.py. A link's *key* is what resolution
compares, lowercased: the KB-relative path without `.md` when the link names a path, else the bare name.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Sequence
from urllib.parse import quote, unquote

WIKI = "wiki"
EMBED = "embed"
MARKDOWN = "md"

# [[target#fragment|alias]] and ![[...]]; no brackets or line breaks inside.
# (No optional "!" group in front: a pattern starting with a literal is scanned for by a fast search.)
_WIKI = re.compile(r"\[\[([^\[\]\n]+?)\]\]")
# [text](target "title"): target in <...>, or without spaces, with at most one level of balanced parentheses.
_MD = re.compile(
    r"\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]\(\s*"
    r"(<[^<>\n]*>|(?:[^\s()<>]|\([^\s()<>]*\))+)"
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_TICKS = re.compile(r"`+")
# What a markdown link path must percent-encode to stay one link (everything else is kept as typed).
_MD_UNSAFE = set(" %#<>()[]\\\"'\t")


@dataclass(frozen=True)
class Link:
    """One link found in a body."""

    kind: str  # WIKI, EMBED or MARKDOWN
    target: str  # the target as written (md: percent-decoded), without fragment, alias or `.md` (wiki)
    fragment: str  # "#Heading", "#^block", "^block", or ""
    alias: str | None  # the text after '|' (wiki) or the link text (md)
    start: int  # span of the target as written in the body: what a rewrite replaces
    end: int
    line: int  # 1-based line of the link in the body
    key: str  # lowercased lookup key
    by_path: bool  # True: key is a KB-relative path; False: a bare name

    @property
    def name_key(self) -> str:
        """The lowercased last segment of the key: what an entry's file name or alias must equal."""
        return self.key.rsplit("/", 1)[-1]


def _code_spans(body: str) -> list[tuple[int, int]]:
    """(start, end) of fenced code blocks and inline code spans, where links are not links."""
    spans: list[tuple[int, int]] = []
    if "```" in body or "~~~" in body:
        pos, fence_start, fence = 0, 0, ""
        for line in body.splitlines(keepends=True):
            m = _FENCE.match(line)
            if fence:
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end():].strip():
                    spans.append((fence_start, pos + len(line)))
                    fence = ""
            elif m and not (m.group(1)[0] == "`" and "`" in line[m.end():]):
                fence, fence_start = m.group(1), pos
            pos += len(line)
        if fence:  # an unclosed fence runs to the end of the document
            spans.append((fence_start, len(body)))
    if "`" in body:
        runs = [m for m in _TICKS.finditer(body) if not _inside(m.start(), spans)]
        i = 0
        while i < len(runs):
            n = len(runs[i].group())
            close = next((j for j in range(i + 1, len(runs)) if len(runs[j].group()) == n), None)
            if close is None:
                i += 1
                continue
            spans.append((runs[i].start(), runs[close].end()))
            i = close + 1
    return spans


def _inside(pos: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start <= pos < end for start, end in spans)


def _folder(entry_id: str) -> str:
    return entry_id.rsplit("/", 1)[0] if "/" in entry_id else ""


def _normal(path: str) -> str:
    """A '/'-separated path with '.' and '..' folded; a result starting with '..' escapes the KB."""
    out = posixpath.normpath(path) if path else ""
    return "" if out == "." else out


def body_line(data: bytes, body: str) -> int:
    """The file line (1-based) on which body starts, body being the end of the file data."""
    return data.count(b"\n", 0, max(0, len(data) - len(body.encode("utf-8")))) + 1


def parse_links(body: str, source_id: str, *, first_line: int = 1) -> list[Link]:
    """Every wiki, embed and relative markdown link in body (not inside code), in order of appearance;
    lines are counted from first_line, the file line the body starts on."""
    if "[" not in body:
        return []
    spans = _code_spans(body) if "`" in body or "~~~" in body else []
    found: list[Link] = []
    wiki_spans = []
    for m in _WIKI.finditer(body):
        wiki_spans.append((m.start(), m.end()))
        if spans and _inside(m.start(), spans):
            continue
        link = _wiki(m, source_id, body, first_line)
        if link is not None:
            found.append(link)
    if "](" in body:
        for m in _MD.finditer(body):
            if (spans and _inside(m.start(), spans)) or (wiki_spans and _inside(m.start(), wiki_spans)):
                continue
            link = _markdown(m, source_id, body, first_line)
            if link is not None:
                found.append(link)
        found.sort(key=lambda link: link.start)
    return found


def file_links(data: bytes, body: str, source_id: str) -> list[Link]:
    """parse_links for the body of a file whose bytes are data, with file line numbers."""
    return parse_links(body, source_id, first_line=body_line(data, body)) if "[" in body else []


def _wiki(m: re.Match[str], source_id: str, body: str, first_line: int) -> Link | None:
    inner, inner_start = m.group(1), m.start(1)
    target_part, bar, alias = inner.partition("|")
    if bar and target_part.endswith("\\"):  # [[Note\|alias]] inside a table
        target_part = target_part[:-1]
    cut = min((i for i in (target_part.find("#"), target_part.find("^")) if i >= 0), default=len(target_part))
    name, fragment = target_part[:cut], target_part[cut:]
    lead = len(name) - len(name.lstrip())
    name = name.strip()
    if name.lower().endswith(".md"):
        name = name[:-3]
    if not name:
        return None  # [[#Heading]]: a link inside the same note
    start = inner_start + lead
    key, by_path = _key(name, source_id, relative=name.startswith(("./", "../")))
    embed = m.start() > 0 and body[m.start() - 1] == "!"
    return Link(EMBED if embed else WIKI, name, fragment.strip(), alias.strip() if bar else None,
                start, start + len(name), body.count("\n", 0, start) + first_line, key, by_path)


def _markdown(m: re.Match[str], source_id: str, body: str, first_line: int) -> Link | None:
    raw, raw_start = m.group(2), m.start(2)
    angle = raw.startswith("<")
    if angle:
        raw, raw_start = raw[1:-1], raw_start + 1
    path_part, hash_, frag = raw.partition("#")
    if not path_part or _SCHEME.match(path_part) or path_part.startswith("//"):
        return None  # a URL, or a fragment of this note
    target = path_part if angle else unquote(path_part)
    if not target.lower().endswith(".md") or len(target) <= 3:
        return None  # images, PDFs and other attachments are not entries
    rooted = target.startswith("/")
    path = target.lstrip("/")[:-3]
    key, _ = _key(path, source_id, relative=not rooted)
    return Link(MARKDOWN, target, hash_ + (unquote(frag) if not angle else frag), m.group(1), raw_start,
                raw_start + len(path_part), body.count("\n", 0, raw_start) + first_line, key, True)


def _key(name: str, source_id: str, *, relative: bool) -> tuple[str, bool]:
    if relative:
        return _normal(posixpath.join(_folder(source_id), name)).lower(), True
    if "/" in name:
        return _normal(name).lower(), True
    return name.lower(), False


def choose(link: Link, candidates: Iterable[tuple[int, str, bool]]) -> int | None:
    """The entry link resolves to, among candidates (rowid, lowercased id, is an alias) sharing its name_key.

    A path matches exactly, else as the end of a longer path; a bare name matches a file name, else an
    alias. Several matches: the shortest path wins, then the alphabetically first.
    """
    files = [(len(path), path, rowid) for rowid, path, alias in candidates if not alias]
    if link.by_path:
        exact = [c for c in files if c[1] == link.key]
        pool = exact or [c for c in files if c[1].endswith("/" + link.key)]
    else:
        pool = files or [(len(path), path, rowid) for rowid, path, alias in candidates if alias]
    return min(pool)[2] if pool else None


def wiki_target(new_id: str, *, had_path: bool, bare_is_unique: bool) -> str:
    """The target text of a wiki link to new_id: its file name when that is unambiguous and the old link
    had no path, else its full path."""
    return new_id.rsplit("/", 1)[-1] if bare_is_unique and not had_path else new_id


def markdown_target(link: Link, body: str, source_id: str, new_id: str) -> str:
    """The path text of a markdown link to new_id written in the style of `link` (angle brackets or
    percent-encoding, ./ or a leading /)."""
    written = body[link.start:link.end]
    if link.target.startswith("/"):
        path = "/" + new_id + ".md"
    else:
        path = posixpath.relpath(new_id + ".md", _folder(source_id) or ".")
        if written.startswith("./") and not path.startswith("../"):
            path = "./" + path
    angle = link.start > 0 and body[link.start - 1] == "<"
    if angle:
        return path
    return "".join(quote(c) if c in _MD_UNSAFE or not c.isprintable() else c for c in path)


def rewrite(body: str, changes: Sequence[tuple[int, int, str]]) -> str:
    """body with each (start, end) span replaced by its text; spans must not overlap."""
    out: list[str] = []
    pos = 0
    for start, end, text in sorted(changes):
        out.append(body[pos:start])
        out.append(text)
        pos = end
    out.append(body[pos:])
    return "".join(out)
