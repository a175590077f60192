"""KB names, entry ids (paths inside a KB) and the file names a new entry gets from its title."""

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


def is_slug(value: object) -> bool:
    """True for 1-128 letters, digits, marks, '-', '_', inner '.'; never '..' or a separator (types use it)."""
    if not isinstance(value, str) or not 1 <= len(value) <= ID_MAX:
        return False
    if value.isascii():  # the common case, by regex; same rules as below
        return _ASCII_ID.fullmatch(value) is not None and value[-1] != "." and ".." not in value
    if len(value.encode("utf-8", "surrogatepass")) > SLUG_MAX_BYTES + 20:
        return False
    if not _is_word(value[0]) or value[-1] == "." or ".." in value:
        return False
    return all(_is_word(ch) or ch in "-_." for ch in value)


# An id is a path inside the KB: '/'-separated segments, each a file or folder name as it is on disk.
SEGMENT_MAX_BYTES = 255  # ext4, APFS, NTFS: bytes (UTF-16 units on NTFS) per name, ".md" included
ID_MAX_BYTES = 1024  # well under PATH_MAX (4096) once the KB folder is in front
_SUFFIX_BYTES = len(".md")


# Control characters (C0, DEL, C1), line and paragraph separators, lone surrogates (undecodable bytes).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _bad_char(ch: str) -> bool:
    return _BAD_CHARS.match(ch) is not None


def entry_id_problem(entry_id: object) -> str | None:
    """Why entry_id cannot be an entry id (a path inside a KB without '.md'), or None if it can."""
    if not isinstance(entry_id, str):
        return "it is not a string"
    if not entry_id:
        return "it is empty"
    if "\\" in entry_id:
        return "'\\' is not a separator; use '/'"
    if _BAD_CHARS.search(entry_id):
        return "it holds control characters, NUL or undecodable bytes"
    size = len(entry_id) if entry_id.isascii() else len(entry_id.encode("utf-8"))
    if size > ID_MAX_BYTES:
        return f"it is longer than {ID_MAX_BYTES} bytes"
    if entry_id.startswith("/"):
        return "it must be relative to the KB folder, not start with '/'"
    segments = entry_id.split("/")
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if not segment:
            return "it has an empty segment ('//' or a trailing '/')"
        if segment[0] == "." or segment[-1] in ". ":
            if segment in (".", ".."):
                return f"{segment!r} segments are not allowed"
            if segment[0] == ".":
                return f"{segment!r} starts with '.' (hidden files and folders are not indexed)"
            return f"{segment!r} ends with a dot or a space (Windows and sync tools drop them)"
        limit = SEGMENT_MAX_BYTES - (_SUFFIX_BYTES if i == last else 0)
        if size > limit and len(segment.encode("utf-8")) > limit:  # only a long id can hold a long name
            return f"a name is longer than {SEGMENT_MAX_BYTES} bytes with '.md'"
    return None


def is_entry_id(entry_id: object) -> bool:
    """True if entry_id is a path inside a KB that can name an entry (see entry_id_problem)."""
    return entry_id_problem(entry_id) is None


def check_entry_id(entry_id: str) -> str:
    """Return entry_id if it can be an entry id, else raise ValidationError saying why."""
    problem = entry_id_problem(entry_id)
    if problem is not None:
        shown = entry_id if isinstance(entry_id, str) and len(entry_id) <= 200 else str(entry_id)[:200] + "..."
        raise ValidationError(f"invalid entry id {shown!r}: {problem}")
    return entry_id


def check_folder(folder: str) -> str:
    """folder ('' for the KB's top level) if it is a path inside a KB that entries may go in, else raise."""
    if not isinstance(folder, str):
        raise ValidationError("folder must be a string")
    folder = folder.strip("/") if folder.strip() else ""
    if not folder:
        return ""
    problem = entry_id_problem(folder)
    if problem is not None:
        raise ValidationError(f"invalid folder {folder!r}: {problem}")
    return folder


# No common file system allows these in a name (Windows refuses them all; '/' is the separator everywhere).
_FORBIDDEN = set('/\\:*?"<>|')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}
TITLE_NAME_MAX_BYTES = SLUG_MAX_BYTES  # room for "-10000" and ".md" under 255 bytes


def title_file_name(title: str) -> str:
    """The file name (without '.md') for a title, as people write it: 'Core plugins' -> 'Core plugins'.

    Characters no common file system allows and control characters become spaces (runs collapse); leading
    dots and spaces and trailing dots and spaces go; a Windows device name gets a '_'. 'Untitled' if nothing
    is left.
    """
    text = unicodedata.normalize("NFC", title)
    chars = [" " if ch in _FORBIDDEN or _bad_char(ch) or ch.isspace() else ch for ch in text]
    name = " ".join("".join(chars).split())
    name = name.lstrip(". ")
    while len(name.encode("utf-8")) > TITLE_NAME_MAX_BYTES:
        name = name[:-1]
    name = name.rstrip(". ")
    head, dot, rest = name.partition(".")
    if head.rstrip().upper() in _WINDOWS_RESERVED:  # Windows refuses these with any extension too
        name = f"{head}_{dot}{rest}"
    return name or "Untitled"


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
    """The n-th candidate name for a slug or title name: slug, slug-2, slug-3, ..."""
    return slug if n == 1 else f"{slug}-{n}"
