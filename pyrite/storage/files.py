"""Markdown files with YAML frontmatter: parse, render, and write atomically."""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyrite.errors import ValidationError

FRONT = "---"
RESERVED_KEYS = ("id", "title", "type", "tags", "created", "updated")


# libyaml's parser when present: several times faster, which index build of large KBs needs.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


if _BaseDumper is yaml.SafeDumper:  # pragma: no cover - only without libyaml
    # The pure-Python emitter folds NEL and Unicode line separators in plain scalars; quote them.
    def _str(dumper: Any, value: str) -> Any:
        style = '"' if any(c in value for c in "\x85\u2028\u2029") else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    class _QuotingDumper(yaml.SafeDumper):
        pass

    _QuotingDumper.add_representer(str, _str)
    _BaseDumper = _QuotingDumper


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader that keeps timestamps as the strings the user wrote (JSON-safe, verbatim)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Plain keys YAML 1.1 reads as something other than a string (booleans, null).
_NOT_STRINGS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}
_PLAIN_SPECIAL = re.compile(r"[:#{}\[\]&*!|>'\"%@`\t]")


def _simple_scalar(value: str) -> str | None:
    """The string a YAML plain or single-quoted scalar denotes, or None if it may be anything else."""
    if len(value) >= 2 and value[0] == "'" and value[-1] == "'":
        inner = value[1:-1]
        if "'" in inner.replace("''", ""):
            return None
        return inner.replace("''", "'")
    return value if _plain_string(value, _Loader.yaml_implicit_resolvers) else None


def _plain_string(value: str, resolvers: dict[Any, list[tuple[str, Any]]]) -> bool:
    """True if value, written as a plain scalar, is read back as exactly this string under resolvers."""
    if not value or not value[0].isalnum() or value[-1].isspace() or _PLAIN_SPECIAL.search(value):
        return False
    # No implicit type (int, float, bool, null, timestamp ...) claims it.
    return not any(rx.match(value) for _, rx in resolvers.get(value[0], []) + resolvers.get(None, []))


def _simple_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None and key.lower() not in _NOT_STRINGS


def _simple_front(header: str) -> dict[str, Any] | None:
    """Frontmatter of the simple shape pyrite writes (string keys and values, lists of strings), parsed
    without YAML's machinery, which costs ~0.3 ms a file; None when the header needs the real parser."""
    out: dict[str, Any] = {}
    current: list[str] | None = None
    opened: list[str] = []  # "key:" lines: a list if items follow, else null
    lines = header.split("\n")
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        if not line.isprintable():  # CR, tabs, NEL, BOM ...: YAML's own rules apply
            return None
        if line.startswith("- "):
            if current is None:
                return None
            item = _simple_scalar(line[2:])
            if item is None:
                return None
            current.append(item)
            continue
        key, sep, rest = line.partition(": ")
        if not sep:
            if line.endswith(":") and _simple_key(line[:-1]) and line[:-1] not in out:
                current = out[line[:-1]] = []
                opened.append(line[:-1])
                continue
            return None
        if not _simple_key(key) or key in out:
            return None
        if rest == "[]":
            out[key] = []
            current = None
            continue
        value = _simple_scalar(rest)
        if value is None:
            return None
        out[key] = value
        current = None
    for key in opened:
        if not out[key]:  # "key:" with no items is null in YAML
            out[key] = None
    return out


simple_front = _simple_front  # the frontmatter editor uses the same test of "pyrite's shape"


@dataclass(frozen=True)
class Header:
    """Where a file's frontmatter block lies in its text: text[start:end] is the YAML, text[body:] the rest."""

    start: int  # just after the opening '---' line (and a BOM before it)
    end: int  # where the closing '---' line begins
    body: int  # just after the closing '---' line
    newline: str  # the opening line's ending: "\n" or "\r\n"


def locate_header(text: str) -> Header | None:
    """The frontmatter block of text, or None when it has none (no '---' first line, or no closing one)."""
    offset = 1 if text.startswith("\ufeff") else 0
    first_end = text.find("\n", offset)
    if first_end < 0 or text[offset:first_end].rstrip("\r") != FRONT:
        return None
    newline = "\r\n" if text[first_end - 1:first_end] == "\r" else "\n"
    pos = first_end + 1
    while True:
        nl = text.find("\n", pos)
        line = text[pos:] if nl < 0 else text[pos:nl]
        if line.rstrip("\r") == FRONT:
            return Header(first_end + 1, pos, len(text) if nl < 0 else nl + 1, newline)
        if nl < 0:
            return None  # an opening '---' without a closing one is not frontmatter (a rule, in markdown)
        pos = nl + 1


@dataclass(frozen=True)
class FrontProblem:
    """Why a frontmatter block could not be read: the file's line number (1-based) and YAML's reason."""

    line: int
    reason: str


def read_markdown(text: str) -> tuple[dict[str, Any], str, FrontProblem | None]:
    """Split text into (frontmatter mapping, body, problem); a block that is not a valid YAML mapping gives
    an empty mapping, the text after it as body, and the problem (the caller decides how loud to be)."""
    where = locate_header(text)
    if where is None:
        return {}, text[1:] if text.startswith("\ufeff") else text, None
    front, problem = load_header(text[where.start:where.end])
    return front, _strip_blank_line(text[where.body:]), problem


def load_header(header: str) -> tuple[dict[str, Any], FrontProblem | None]:
    """The mapping a frontmatter block's YAML denotes (string keys), or ({}, the problem)."""
    simple = _simple_front(header)
    if simple is not None:
        return simple, None
    try:
        front = yaml.load(header, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        return {}, _problem(exc, header.count("\n"))
    except RecursionError:
        return {}, FrontProblem(2, "nested too deeply")
    if not isinstance(front, dict):
        return {}, FrontProblem(2, f"it is a {type(front).__name__}, not a mapping of key: value")
    return {str(k): v for k, v in front.items()}, None


def _problem(exc: yaml.YAMLError, lines: int) -> FrontProblem:
    """The file line (the block starts on line 2) and reason of a YAML error in a header of `lines` lines."""
    problem, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    # An unclosed bracket or quote is reported where parsing gave up (often the end of the block); the line
    # to fix is where it was opened.
    opened = any(word in str(getattr(exc, "context", "")) for word in ("flow", "quoted"))
    mark = context if context is not None and (opened or problem is None or problem.line >= lines) else problem
    line = min(mark.line, max(lines - 1, 0)) if mark is not None else 0
    reason = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]
    return FrontProblem(2 + line, reason)


def parse_markdown(text: str) -> tuple[dict[str, Any], str]:
    """Split text into (frontmatter mapping, body); a file without frontmatter is all body.

    Frontmatter that is not a valid YAML mapping is a ValidationError (read_markdown reports it instead).
    """
    front, body, problem = read_markdown(text)
    if problem is not None:
        raise ValidationError(f"invalid YAML frontmatter (line {problem.line}): {problem.reason}")
    return front, body


def _strip_blank_line(body: str) -> str:
    # render_markdown puts one blank line after the frontmatter for readability.
    if body.startswith("\r\n"):
        return body[2:]
    if body.startswith("\n"):
        return body[1:]
    return body


_DUMP_RESOLVERS = yaml.SafeDumper.yaml_implicit_resolvers  # what yaml.dump quotes (timestamps too)
_FAST_SCALAR_MAX = 1000  # far below the dump width, so YAML would not fold the line either


def _fast_scalar(value: str) -> str | None:
    """value as a YAML plain scalar if it reads back as itself, else single-quoted; None when only the
    YAML emitter knows (non-printable characters, very long strings)."""
    if len(value) > _FAST_SCALAR_MAX or not value.isprintable():
        return None
    if _plain_string(value, _DUMP_RESOLVERS):
        return value
    return "'" + value.replace("'", "''") + "'"


def _fast_front(front: dict[str, Any]) -> str | None:
    """YAML for a mapping of the simple shape pyrite writes (plain keys; string or list-of-string values),
    without YAML's machinery (~75 us a write); None for any other mapping. Both loaders read it back."""
    lines: list[str] = []
    for key, value in front.items():
        if not isinstance(key, str) or not _simple_key(key):
            return None
        if isinstance(value, str):
            text = _fast_scalar(value)
            if text is None:
                return None
            lines.append(f"{key}: {text}\n")
        elif isinstance(value, list):
            lines.append(f"{key}: []\n" if not value else f"{key}:\n")
            for item in value:
                text = _fast_scalar(item) if isinstance(item, str) else None
                if text is None:
                    return None
                lines.append(f"- {text}\n")
        else:
            return None
    return "".join(lines) if lines else None


def render_front(front: dict[str, Any], *, flow: bool = False) -> str:
    """The YAML lines of a mapping (keys in the given order), in the style pyrite writes; with flow, lists
    and mappings of scalars go on one line (`[a, b]`)."""
    header = None if flow else _fast_front(front)
    if header is None:
        try:
            header = yaml.dump(front, Dumper=_BaseDumper, sort_keys=False, allow_unicode=True,
                               default_flow_style=None if flow else False, width=10_000)
        except RecursionError:  # frontmatter nested hundreds of levels deep (written by hand elsewhere)
            raise ValidationError("the frontmatter is nested too deeply to write") from None
    return header if front else ""


def render_markdown(front: dict[str, Any], body: str) -> str:
    """Frontmatter (keys in the given order) and body; parse_markdown returns both exactly."""
    return f"{FRONT}\n{render_front(front)}{FRONT}\n\n{body}"


def content_hash(data: bytes) -> str:
    """The sha256 hex digest that identifies a file's or a text's exact content."""
    return hashlib.sha256(data).hexdigest()


# fsync runs here while the caller does its SQLite work: a write waits for the slower of the two, not both.
_FLUSHER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pyrite-fsync")


@dataclass
class Staged:
    """A temp file holding the next content of an entry file, being flushed to disk."""

    tmp: str
    stat: os.stat_result  # size and mtime the installed file will have (link and rename keep them)
    flushed: Future[None] | None


def _flush_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temp(folder: Path) -> tuple[int, str]:
    """An empty, uniquely named temp file in folder, mode 0666 less the umask (as an editor makes one)."""
    for _ in range(100):
        # A short name: the final one may already be near the 255-byte limit.
        tmp = os.path.join(folder, f".pyrite-{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name in {folder}")


def stage(folder: Path, data: bytes, *, durable: bool = True, mode: int | None = None) -> Staged:
    """Write data to a temp file in folder (permission bits `mode` if given) and start flushing it to disk."""
    fd, tmp = _new_temp(folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if mode is not None:
            os.fchmod(fd, mode)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    if not durable:
        os.close(fd)
        return Staged(tmp, st, None)
    return Staged(tmp, st, _FLUSHER.submit(_flush_and_close, fd))


def install(staged: Staged, path: Path, *, exclusive: bool = False) -> os.stat_result:
    """Wait until the staged content is on disk, then move it to path (exclusive: fail if path exists)."""
    if staged.flushed is not None:
        staged.flushed.result()
    if exclusive:
        _link_exclusive(staged.tmp, path)
    else:
        os.replace(staged.tmp, path)
    return staged.stat


def discard(staged: Staged) -> None:
    """Remove a staged file that will not be installed."""
    if staged.flushed is not None:
        try:
            staged.flushed.result()
        except OSError:
            pass
    try:
        os.unlink(staged.tmp)
    except FileNotFoundError:
        pass


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False, durable: bool = True) -> os.stat_result:
    """Write data to path via a temp file and rename; with exclusive, fail if path exists. Return its stat."""
    staged = stage(path.parent, data, durable=durable)
    try:
        return install(staged, path, exclusive=exclusive)
    except BaseException:
        discard(staged)
        raise


def _link_exclusive(tmp: str, path: Path) -> None:
    """Move tmp to path, failing with FileExistsError if path exists (never replacing it)."""
    try:
        # link() never replaces an existing file, so a clash can never overwrite an entry.
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        # No hard links on this file system: reserve the name atomically, then fill it.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(tmp, path)
        return
    os.unlink(tmp)
