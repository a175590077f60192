"""Markdown files with YAML frontmatter: parse, render, and write atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def parse_markdown(text: str) -> tuple[dict[str, Any], str]:
    """Split text into (frontmatter mapping, body); a file without frontmatter is all body."""
    if text.startswith("\ufeff"):
        text = text[1:]
    first_end = text.find("\n")
    if first_end < 0 or text[:first_end].rstrip("\r") != FRONT:
        return {}, text
    pos = first_end + 1
    while True:
        nl = text.find("\n", pos)
        line = text[pos:] if nl < 0 else text[pos:nl]
        if line.rstrip("\r") == FRONT:
            header = text[first_end + 1:pos]
            body = "" if nl < 0 else text[nl + 1:]
            break
        if nl < 0:
            return {}, text  # an opening '---' without a closing one is not frontmatter
        pos = nl + 1
    try:
        front = yaml.load(header, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML frontmatter: {exc}") from None
    if not isinstance(front, dict):
        raise ValidationError("frontmatter must be a mapping of key: value")
    # render_markdown puts one blank line after the frontmatter for readability.
    if body.startswith("\r\n"):
        body = body[2:]
    elif body.startswith("\n"):
        body = body[1:]
    return {str(k): v for k, v in front.items()}, body


def render_markdown(front: dict[str, Any], body: str) -> str:
    """Frontmatter (keys in the given order) and body; parse_markdown returns body exactly."""
    header = yaml.dump(front, Dumper=_BaseDumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                       width=10_000)
    return f"{FRONT}\n{header}{FRONT}\n\n{body}"


def content_hash(data: bytes) -> str:
    """The sha256 hex digest that identifies a file's or a text's exact content."""
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False, durable: bool = True) -> os.stat_result:
    """Write data to path via a temp file and rename; with exclusive, fail if path exists. Return its stat."""
    # A short temp name: the final name may already be near the 255-byte limit.
    fd, tmp = tempfile.mkstemp(prefix=".pyrite-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if exclusive:
            _link_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path.stat()


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


def is_entry_file(path: Path) -> bool:
    """True for the markdown files a KB indexes: visible *.md files at its top level."""
    name = path.name
    return name.endswith(".md") and not name.startswith(".") and path.is_file()
