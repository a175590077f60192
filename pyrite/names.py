"""Allow-lists for KB names and entry ids, and the slug that turns a title into an id."""

from __future__ import annotations

import re
import unicodedata

from pyrite.errors import ValidationError

_KB_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ASCII_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ID_MAX = 128
SLUG_MAX = 80
# File names are limited to 255 bytes; leave room for ".md" and suffixes like "-10".
SLUG_MAX_BYTES = 200


def _is_word(ch: str) -> bool:
    # Letters, marks (Devanagari vowel signs, combining accents) and digits of any script.
    return unicodedata.category(ch)[0] in "LMN"


def check_kb_name(name: str) -> str:
    """Return name if it is a valid KB name (letters, digits, '-', '_', 1-64 chars), else raise."""
    if not isinstance(name, str) or not _KB_NAME.fullmatch(name):
        raise ValidationError(
            f"invalid KB name {name!r}: use 1 to 64 letters, digits, '-' or '_'"
        )
    return name


def is_entry_id(entry_id: object) -> bool:
    """True for ids of 1-128 letters, digits, marks, '-', '_', inner '.'; never '..' or a separator."""
    if not isinstance(entry_id, str) or not 1 <= len(entry_id) <= ID_MAX:
        return False
    if entry_id.isascii():  # the common case, by regex; same rules as below
        return _ASCII_ID.fullmatch(entry_id) is not None and entry_id[-1] != "." and ".." not in entry_id
    if len(entry_id.encode("utf-8", "surrogatepass")) > SLUG_MAX_BYTES + 20:
        return False
    if not _is_word(entry_id[0]) or entry_id[-1] == "." or ".." in entry_id:
        return False
    return all(_is_word(ch) or ch in "-_." for ch in entry_id)


def check_entry_id(entry_id: str) -> str:
    """Return entry_id if is_entry_id accepts it, else raise ValidationError."""
    if not is_entry_id(entry_id):
        raise ValidationError(
            f"invalid entry id {entry_id!r}: use letters, digits, '-', '_' or '.', "
            f"starting with a letter or digit, at most {ID_MAX} characters"
        )
    return entry_id


def slugify(title: str) -> str:
    """A lowercase id made of the title's words joined by '-' (any script); 'entry' if none."""
    text = unicodedata.normalize("NFKC", title).lower()
    out: list[str] = []
    for ch in text:
        if _is_word(ch):
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip("-")[:SLUG_MAX]
    while len(slug.encode("utf-8")) > SLUG_MAX_BYTES:  # 3- and 4-byte scripts
        slug = slug[:-1]
    slug = slug.rstrip("-")
    # A slug must start with a letter or digit, not a combining mark.
    while slug and unicodedata.category(slug[0])[0] == "M":
        slug = slug[1:].lstrip("-")
    return slug or "entry"


def with_suffix(slug: str, n: int) -> str:
    """The n-th candidate id for a slug: slug, slug-2, slug-3, ..."""
    return slug if n == 1 else f"{slug}-{n}"
