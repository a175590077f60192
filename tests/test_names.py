"""KB name allow-list, entry id checks and the title slug (pyrite.names)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrite.errors import PyriteError, ValidationError
from pyrite.names import (ID_MAX, SLUG_MAX, check_entry_id, check_kb_name, is_entry_id, is_slug, slugify,
                          title_file_name, with_suffix)

# The longest file name most file systems (ext4, APFS, NTFS) allow, in bytes.
NAME_MAX_BYTES = 255

# -- KB names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "notes", "a", "A", "9", "my-kb", "my_kb", "KB_2024-01", "-", "_", "--", "a" * 64, "0123456789",
])
def test_kb_name_accepts_allow_listed(name: str) -> None:
    assert check_kb_name(name) == name


@pytest.mark.parametrize("name", [
    "", "..", ".", "../x", "x/..", "a/b", "/", "/etc", "/abs/path", "a\\b", "\\", "C:\\kb", "c:", "a\x00",
    "\x00", "a" * 65, "has space", " notes", "notes ", "notes\n", "\nnotes", "a.b", "café", "東京", "a\tb",
    "~", "~/kb", "$HOME", "a*", "a?", "kb:1", "é",
])
def test_kb_name_refuses_everything_else(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_kb_name(name)
    assert "invalid KB name" in str(info.value)
    assert isinstance(info.value, PyriteError)


@pytest.mark.parametrize("name", [None, 5, b"notes", ["notes"]])
def test_kb_name_refuses_non_strings(name: object) -> None:
    with pytest.raises(ValidationError):
        check_kb_name(name)  # type: ignore[arg-type]


def test_kb_name_length_boundary() -> None:
    assert check_kb_name("k" * 64) == "k" * 64
    with pytest.raises(ValidationError):
        check_kb_name("k" * 65)


@given(st.text(max_size=80))
def test_kb_name_property(name: str) -> None:
    ok = 1 <= len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    if ok:
        assert check_kb_name(name) == name
    else:
        with pytest.raises(ValidationError):
            check_kb_name(name)


# -- entry ids ------------------------------------------------------------------------------------


# The strict rule that ids had before issue 13 is now the rule for types (is_slug).
@pytest.mark.parametrize("value", [
    "a", "hello-world", "hello_world", "v1.2", "a.b.c", "UPPER", "9lives", "東京タワー", "नमस्ते", "привет",
    "x" * ID_MAX, "a-", "a_", "entry-2",
])
def test_slug_accepts(value: str) -> None:
    assert is_slug(value)


@pytest.mark.parametrize("value", [
    "", ".", "..", "../x", "x/../y", "a/b", "/abs", "a\\b", "\\", "a\x00", "\x00", ".hidden", "-x", "_x",
    "a..b", "a.", "x" * (ID_MAX + 1), "has space", "a\n", "a:b", "a*", "🎉", "C:\\x",
])
def test_slug_refuses(value: str) -> None:
    assert not is_slug(value)


@pytest.mark.parametrize("value", [None, 1, b"abc", ["a"]])
def test_slug_refuses_non_strings(value: object) -> None:
    assert is_slug(value) is False


# Ids are paths inside the KB, exactly as named on disk (issue 13).
@pytest.mark.parametrize("entry_id", [
    "a", "hello-world", "Plugins/Core plugins", "Projects/Ideas", "a/b/c/d", "Q&A", "Tom's notes", "C# tips",
    "what? why", "50% off", "🎉 party", "東京/タワー", "नमस्ते", "привет мир", "a..b", "-x", "_x", "a:b", "a*",
    "x.md/y", "UPPER/lower", " leading space", "a" * 252, "/".join(["d" * 200] * 5),
])
def test_entry_id_accepts(entry_id: str) -> None:
    assert is_entry_id(entry_id)
    assert check_entry_id(entry_id) == entry_id


@pytest.mark.parametrize("entry_id, reason", [
    ("", "empty"), (".", "'.'"), ("..", "'..'"), ("../x", "'..'"), ("x/../y", "'..'"), ("x/./y", "'.'"),
    ("/abs", "relative"), ("a//b", "empty segment"), ("a/", "empty segment"), ("a\\b", "separator"),
    ("\\", "separator"), ("C:\\x", "separator"), ("a\x00", "control"), ("\x00", "control"), ("a\n", "control"),
    ("a\tb", "control"), ("a\x7f", "control"), ("a\x85", "control"), ("a\u2028b", "control"),
    ("bad\udcff", "undecodable"), (".hidden", "hidden"), ("x/.obsidian/y", "hidden"), ("a.", "dot or a space"),
    ("a /b", "dot or a space"), ("dir./b", "dot or a space"), ("a" * 253, "255 bytes"),
    ("é" * 127, "255 bytes"), ("d" * 256 + "/x", "255 bytes"), ("/".join(["d" * 250] * 5), "1024 bytes"),
])
def test_entry_id_refuses(entry_id: str, reason: str) -> None:
    assert not is_entry_id(entry_id)
    with pytest.raises(ValidationError) as info:
        check_entry_id(entry_id)
    assert "invalid entry id" in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize("entry_id", [None, 1, b"abc", ["a"]])
def test_entry_id_refuses_non_strings(entry_id: object) -> None:
    assert is_entry_id(entry_id) is False


@given(st.text(max_size=140))
def test_entry_id_never_escapes_the_folder(entry_id: str) -> None:
    if is_entry_id(entry_id):
        parts = entry_id.split("/")
        assert "\\" not in entry_id and "\x00" not in entry_id and not entry_id.startswith("/")
        assert all(p and p not in (".", "..") and not p.startswith(".") for p in parts)
        assert all(len(p.encode("utf-8")) <= NAME_MAX_BYTES for p in parts)


# -- title file names ---------------------------------------------------------------------------


@pytest.mark.parametrize("title, name", [
    ("Core plugins", "Core plugins"), ("Q&A: plans", "Q&A plans"), ("a/b\\c", "a b c"), ("Why?", "Why"),
    ('say "hi" <now> | *', "say hi now"), ("...dots", "dots"), ("trailing. ", "trailing"),
    ("tab\there", "tab here"), ("C# tips", "C# tips"), ("東京タワー", "東京タワー"), ("🎉 party", "🎉 party"),
    ("CON", "CON_"), ("nul.txt", "nul_.txt"), ("???", "Untitled"), ("  ", "Untitled"), ("Tom's", "Tom's"),
])
def test_title_file_name(title: str, name: str) -> None:
    assert title_file_name(title) == name
    assert is_entry_id(name)


@given(st.text(min_size=1, max_size=300))
def test_title_file_name_is_always_a_valid_name(title: str) -> None:
    name = title_file_name(title)
    assert is_entry_id(name) and "/" not in name
    assert len(f"{with_suffix(name, 9999)}.md".encode("utf-8")) <= NAME_MAX_BYTES


# -- slugify --------------------------------------------------------------------------------------


@pytest.mark.parametrize("title, slug", [
    ("Hello, World!", "hello-world"),
    ("  Kubernetes   pods  ", "kubernetes-pods"),
    ("Café au lait", "café-au-lait"),
    ("Привет мир", "привет-мир"),
    ("東京タワーの夜景", "東京タワーの夜景"),
    ("ｆｕｌｌ ｗｉｄｔｈ", "full-width"),  # NFKC folds full-width forms
    ("a/b\\c..d", "a-b-c-d"),
    ("../../etc/passwd", "etc-passwd"),
    ("version 2.0", "version-2-0"),
])
def test_slugify_examples(title: str, slug: str) -> None:
    assert slugify(title) == slug
    assert is_entry_id(slug)


def test_slugify_hindi_keeps_combining_marks() -> None:
    slug = slugify("नमस्ते दुनिया")
    assert slug == "नमस्ते-दुनिया"
    # vowel signs and the virama are marks (category M): they must survive
    assert any(unicodedata.category(c).startswith("M") for c in slug)
    assert is_entry_id(slug)


def test_slugify_never_starts_with_a_mark() -> None:
    slug = slugify("\u0301\u093e abc")
    assert slug == "abc"


@pytest.mark.parametrize("title", ["🎉", "🎉🎉 🚀", "!!!", "   ", "--", "...", "/", "\u0301", "💡 ✨ 🔥"])
def test_slugify_without_words_gives_entry(title: str) -> None:
    assert slugify(title) == "entry"


@pytest.mark.parametrize("title", [
    "x" * 300,
    "word " * 100,
    "東京タワー" * 40,
    "नमस्ते दुनिया " * 30,
    "é" * 500,
])
def test_slugify_truncates_long_titles(title: str) -> None:
    slug = slugify(title)
    assert 1 <= len(slug) <= SLUG_MAX
    assert not slug.endswith("-")
    assert is_entry_id(slug)
    assert is_entry_id(with_suffix(slug, 9999))


@pytest.mark.parametrize("title", [
    "東" * 200,                # 3 bytes per character in UTF-8
    "नमस्ते" * 40,             # Devanagari: 3 bytes per code point
    "\U00020000" * 200,        # CJK extension B: 4 bytes per character
], ids=["japanese", "hindi", "cjk-ext-b"])
def test_slug_file_name_fits_the_file_system(title: str) -> None:
    """An entry file is named '<slug>[-N].md' and written through a temp file '.<name>.<random>.tmp'.

    The slug is truncated by characters, so in a script of 3-4 byte characters
    the file name (or its temp name) can exceed the 255-byte limit of the file system.
    """
    slug = slugify(title)
    file_name = f"{with_suffix(slug, 9999)}.md"
    temp_name = f".{file_name}.abcdefgh.tmp"  # what storage.files.write_atomic creates first
    temp_bytes = len(temp_name.encode("utf-8"))
    assert temp_bytes <= NAME_MAX_BYTES, f"slug of {len(slug)} chars gives a {temp_bytes}-byte temp file name"


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_slugify_always_gives_a_valid_id(title: str) -> None:
    slug = slugify(title)
    assert is_entry_id(slug)
    assert len(slug) <= SLUG_MAX
    assert slug == slug.lower()
    assert "--" not in slug
    assert is_entry_id(with_suffix(slug, 2))


def test_with_suffix() -> None:
    assert with_suffix("foo", 1) == "foo"
    assert with_suffix("foo", 2) == "foo-2"
    assert with_suffix("foo", 3) == "foo-3"
