"""Markdown files with YAML frontmatter: parse, render, atomic writes (pyrite.storage.files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyrite.errors import ValidationError
from pyrite.storage.files import content_hash, parse_markdown, render_markdown, write_atomic

FRONT = {
    "id": "my-entry",
    "title": "My entry",
    "type": "note",
    "tags": ["a", "b"],
    "created": "2024-01-02T03:04:05Z",
    "updated": "2024-01-02T03:04:05Z",
}

# Bodies that stress the frontmatter fences and line endings.
TRICKY_BODIES = [
    "",
    "\n",
    "\n\n\nleading newlines",
    "\r\nleading CRLF",
    "\r\n\r\n",
    "---",
    "---\n",
    "---\nlooks: like frontmatter\n---\n",
    "text\n---\nmore\n---\n",
    "line one\r\nline two\r\n",
    "trailing spaces   \n\n   ",
    "\ufeffBOM inside the body",
    "日本語の本文\nहिन्दी पाठ\nالعربية\n🎉",
    "\x85\u2028\u2029 odd line breaks",
    "\t tab\x0b vtab\x0c ff\r lone CR",
    "# heading\n\nbody",
    "...\n",
    "--- \n",
]


@pytest.mark.parametrize("body", TRICKY_BODIES)
def test_round_trip_body_exact_examples(body: str) -> None:
    front, parsed = parse_markdown(render_markdown(FRONT, body))
    assert parsed == body
    assert front == FRONT


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
@example("\n---\n")
@example("---\n---\n")
@example("\r\n---\r\nx: 1\r\n---\r\n")
def test_round_trip_body_exact_arbitrary_text(body: str) -> None:
    front, parsed = parse_markdown(render_markdown(FRONT, body))
    assert parsed == body
    assert front == FRONT


@settings(max_examples=150)
@given(
    st.lists(st.sampled_from(["---", "", "\r", "- x", "key: value", "...", "text", " ---", "---  "]), max_size=12),
    st.sampled_from(["\n", "\r\n"]),
    st.text(max_size=20),
)
def test_round_trip_body_made_of_fence_like_lines(lines: list[str], eol: str, tail: str) -> None:
    body = eol.join(lines) + tail
    assert parse_markdown(render_markdown(FRONT, body))[1] == body


@settings(max_examples=150)
@given(st.text(max_size=50), st.text())
def test_round_trip_with_user_meta(value: str, body: str) -> None:
    front = dict(FRONT, source="web", rating=5, flags=[True, None], nested={"k": "v", "n": 1.5})
    parsed_front, parsed = parse_markdown(render_markdown(front, body))
    assert parsed == body
    assert parsed_front == front


@settings(max_examples=250)
@given(st.text(max_size=60))
@example("a\x85b")  # U+0085 NEXT LINE
@example("\u2028")
@example("2024-01-01")
@example("yes")
@example("null")
@example("'quoted'")
@example(": colon")
def test_round_trip_frontmatter_string_values(value: str) -> None:
    """A title or meta value written to the file reads back as the same string."""
    front = dict(FRONT, title=value, note=value)
    parsed_front, _ = parse_markdown(render_markdown(front, "body"))
    assert parsed_front["title"] == value
    assert parsed_front["note"] == value


def test_render_layout() -> None:
    text = render_markdown({"id": "x", "title": "X"}, "Body\n")
    assert text.startswith("---\n")
    assert text.endswith("---\n\nBody\n")
    assert "id: x\n" in text and "title: X\n" in text
    # keys keep the given order
    assert text.index("id:") < text.index("title:")


def test_render_keeps_unicode_readable() -> None:
    text = render_markdown({"title": "東京タワー", "tags": ["नमस्ते"]}, "")
    assert "東京タワー" in text and "नमस्ते" in text


# -- files without (valid) frontmatter ------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "",
    "just text",
    "# Heading\n\nbody\n",
    "no newline at all",
    "---",  # a lone fence line, nothing else
    "---\nno closing fence\nstill body\n",
    " ---\ntitle: x\n---\n",  # the fence must be the first line exactly
    "text first\n---\ntitle: x\n---\n",
])
def test_without_frontmatter_is_all_body(text: str) -> None:
    assert parse_markdown(text) == ({}, text)


def test_leading_bom_is_ignored() -> None:
    assert parse_markdown("\ufeff---\ntitle: T\n---\n\nbody") == ({"title": "T"}, "body")
    assert parse_markdown("\ufeffplain") == ({}, "plain")


def test_crlf_file_from_windows_editor() -> None:
    text = "---\r\ntitle: Windows\r\ntags:\r\n  - a\r\n---\r\n\r\nline 1\r\nline 2\r\n"
    front, body = parse_markdown(text)
    assert front == {"title": "Windows", "tags": ["a"]}
    assert body == "line 1\r\nline 2\r\n"


def test_empty_frontmatter() -> None:
    assert parse_markdown("---\n---\nbody") == ({}, "body")


def test_timestamps_stay_strings() -> None:
    front, _ = parse_markdown("---\ncreated: 2024-01-02\nupdated: 2024-01-02T03:04:05Z\nn: 3\nok: true\n---\n")
    assert front == {"created": "2024-01-02", "updated": "2024-01-02T03:04:05Z", "n": 3, "ok": True}


def test_non_string_keys_become_strings() -> None:
    front, _ = parse_markdown("---\n1: one\nfalse: no\n---\n")
    assert front == {"1": "one", "False": False}


@pytest.mark.parametrize("text", [
    "---\ntitle: [unclosed\n---\nbody",
    "---\ntitle: \"open quote\n---\nbody",
    "---\n\tkey: tab indent\n---\n",
    "---\na: 1\n a: 2\n b\n---\n",
    "---\nkey: @reserved\n---\n",
    "---\n{bad\n---\n",
])
def test_invalid_yaml_is_a_validation_error(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_markdown(text)
    assert "frontmatter" in str(info.value)


@pytest.mark.parametrize("text", [
    "---\n- a list\n- not a mapping\n---\n",
    "---\njust a string\n---\n",
    "---\n42\n---\n",
])
def test_frontmatter_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_markdown(text)


@settings(max_examples=300)
@given(st.text())
def test_parse_never_raises_anything_but_validation_error(text: str) -> None:
    try:
        front, body = parse_markdown(text)
    except ValidationError:
        return
    assert isinstance(front, dict)
    assert isinstance(body, str)


# -- write_atomic ---------------------------------------------------------------------------------


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


def test_write_atomic_creates_file(tmp_path: Path) -> None:
    target = tmp_path / "a.md"
    st_ = write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert st_.st_size == 5
    assert st_.st_mtime_ns == target.stat().st_mtime_ns
    assert _temp_files(tmp_path) == []


def test_write_atomic_replaces_when_not_exclusive(tmp_path: Path) -> None:
    target = tmp_path / "a.md"
    target.write_bytes(b"old")
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert _temp_files(tmp_path) == []


def test_write_atomic_exclusive_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "a.md"
    target.write_bytes(b"precious user data")
    before = target.stat()
    with pytest.raises(FileExistsError):
        write_atomic(target, b"clobber", exclusive=True)
    assert target.read_bytes() == b"precious user data"
    assert target.stat().st_ino == before.st_ino
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]


def test_write_atomic_exclusive_creates_new(tmp_path: Path) -> None:
    target = tmp_path / "new.md"
    write_atomic(target, b"fresh", exclusive=True)
    assert target.read_bytes() == b"fresh"
    assert target.stat().st_nlink == 1  # the temp link is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.md"]


def test_write_atomic_exclusive_against_dangling_symlink(tmp_path: Path) -> None:
    target = tmp_path / "link.md"
    os.symlink(tmp_path / "nowhere.md", target)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"x", exclusive=True)
    assert not (tmp_path / "nowhere.md").exists()
    assert _temp_files(tmp_path) == []


def test_write_atomic_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    with pytest.raises(OSError):
        write_atomic(target, b"x")
    assert target.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["dir-in-the-way"]


def test_write_atomic_not_durable(tmp_path: Path) -> None:
    target = tmp_path / "fast.md"
    write_atomic(target, b"quick", durable=False)
    assert target.read_bytes() == b"quick"


def test_content_hash_is_sha256() -> None:
    assert content_hash(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert content_hash(b"a") != content_hash(b"b")
