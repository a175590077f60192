"""Frontmatter is the user's: an update changes only the keys asked for, byte for byte (issue 13 point 4)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrite.core import Pyrite
from pyrite.errors import ValidationError
from pyrite.models import Entry, aliases_of
from pyrite.services.file_fields import inline_tags, tag_list
from pyrite.storage import frontmatter
from pyrite.storage.files import parse_markdown
from tests.conftest import pyrite_cmd

# Every shape of YAML a person writes, as the middle of a header that starts with `title: 42` and ends with
# `tags: [1, true, null]` and a commented `trailer` key.
SHAPES = {
    "numbers": "n: 42\nf: 3.14\nneg: -7\nhex: 0x1F\nexp: 1e3\nbig: 123456789012345678901234567890\n",
    "booleans": "a: yes\nb: true\nc: False\nd: off\n",
    "nulls": "a: null\nb: ~\nc:\n",
    "dates": "date: 2024-01-02\nat: 2024-01-02T03:04:05Z\nloose: 2024-1-2\n",
    "lists": "flow: [a, 'b c', 3]\nblock:\n- x\n- y\nindented:\n  - p\n  - q\nempty: []\n",
    "nested": "map:\n  a: 1\n  b:\n    c: [1, 2]\n    d: {e: f}\n  list:\n  - {k: v}\n",
    "comments": "# a leading comment\nk: v # trailing\n\n   # indented comment\n# between\nk2: v2\n",
    "quoting": ("sq: 'it''s'\ndq: \"tab\\there \\u00e9\"\nplain: hello world\ncolon: 'a: b'\n"
                "folded: >\n  folded\n  text\nlit: |\n  line1\n\n  line2\nkeep: |+\n  kept\n\n"),
    "order": "zebra: 1\napple: 2\nmango: 3\n",
    "anchors": "base: &b {x: 1, y: [2]}\nref: *b\nmerged:\n  <<: *b\n  z: 3\n",
    "unicode": "名前: 東京タワー\nemoji: 🎉 party\nrtl: مرحبا\n",
    "odd keys": "\"quoted key\": 1\n'single key': 2\n? complex\n: value\nwith space: 3\n",
}
HEAD = "title: 42\n"
TAIL = "tags: [1, true, null]\ntrailer: end  # the last key\n"
BODY = "# A heading\n\nBody with #inline tag.\n"

# (update_entry arguments, how the text changes). Each edit touches its own key's line(s) only.
CHANGES: dict[str, tuple[dict[str, Any], Callable[[str], str]]] = {
    "title": ({"title": "Forty two"}, lambda t: t.replace("title: 42\n", "title: Forty two\n", 1)),
    "tags": ({"tags": ["a", "area/sub"]}, lambda t: t.replace("tags: [1, true, null]\n", "tags: [a, area/sub]\n", 1)),
    "type": ({"type": "recipe"}, lambda t: t.replace("# the last key\n---\n", "# the last key\ntype: recipe\n---\n", 1)),
    "meta new": ({"meta": {"rating": 5}}, lambda t: t.replace("# the last key\n---\n", "# the last key\nrating: 5\n---\n", 1)),
    "meta changed": ({"meta": {"trailer": "changed"}},
                     lambda t: t.replace("trailer: end  # the last key\n", "trailer: changed  # the last key\n", 1)),
    "meta dropped": ({"meta": {"trailer": None}}, lambda t: t.replace("trailer: end  # the last key\n", "", 1)),
    "body": ({"body": "A new body\n"}, lambda t: t.replace(BODY, "A new body\n", 1)),
}


def folder_of(core: Pyrite) -> Path:
    return Path(core.kbs.get_kb("notes").path)


def styled(text: str, newline: str, bom: bool) -> str:
    return ("\ufeff" if bom else "") + text.replace("\n", newline)


@pytest.mark.parametrize("newline,bom", [("\n", False), ("\r\n", False), ("\n", True), ("\r\n", True)],
                         ids=["lf", "crlf", "bom", "bom-crlf"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_update_changes_only_the_asked_key_byte_for_byte(core: Pyrite, shape: str, newline: str, bom: bool) -> None:
    original = f"---\n{HEAD}{SHAPES[shape]}{TAIL}---\n\n{BODY}"
    assert parse_markdown(original)[0]["title"] == 42  # the fixture itself is valid YAML
    folder = folder_of(core)
    for n, name in enumerate(CHANGES):
        (folder / f"f{n}.md").write_bytes(styled(original, newline, bom).encode("utf-8"))
    report = core.kbs.build("notes")
    assert report.errors == [] and report.added == len(CHANGES)
    for n, (name, (args, expect)) in enumerate(CHANGES.items()):
        path = folder / f"f{n}.md"
        entry = core.kbs.get_entry("notes", f"f{n}")
        assert entry.title == "42" and entry.tags[:2] == ["1", "true"] and "inline" in entry.tags
        updated = core.kbs.update_entry("notes", f"f{n}", **args)
        want = expect(original)
        assert want != original, name
        got = path.read_bytes().decode("utf-8")
        if newline == "\r\n" and name == "body":
            # The body is written as given (here with "\n"); the frontmatter keeps its CRLF.
            want = styled(want.replace("A new body\n", ""), newline, bom) + "A new body\n"
        else:
            want = styled(want, newline, bom)
        assert got == want, (shape, name)
        # The index says what the file now says.
        assert updated == _without_status(core.kbs.get_entry("notes", f"f{n}"), updated)
        core.kbs.build("notes", force=True)
        again = core.kbs.get_entry("notes", f"f{n}")
        assert (again.title, again.tags, again.type, again.meta, again.body) == \
            (updated.title, updated.tags, updated.type, updated.meta, updated.body), name


def _without_status(entry: Entry, like: Entry) -> Entry:
    entry.embedding_status, entry.embedding_error = like.embedding_status, like.embedding_error
    return entry


def test_the_issue_example_through_the_cli(pyrite_home: Path, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    text = "---\ntitle: 42\ntags: [1, true, null]\nrating: 4.5 # out of 5\n---\n\nNumbers as titles.\n"
    (vault / "numtitle.md").write_bytes(text.encode("utf-8"))
    env = {**os.environ, "PYRITE_EMBED_PROVIDER": "none"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pyrite_cmd(*args), capture_output=True, text=True, env=env, timeout=120)

    assert cli("kb", "create", "vault", "--path", str(vault)).returncode == 0
    shown = cli("get", "numtitle", "--kb", "vault", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["title"] == "42" and data["tags"] == ["1", "true"]
    result = cli("update", "numtitle", "--kb", "vault", "--type", "recipe")
    assert result.returncode == 0, result.stderr
    assert (vault / "numtitle.md").read_bytes().decode("utf-8") == text.replace(
        "# out of 5\n", "# out of 5\ntype: recipe\n")
    data = json.loads(cli("get", "numtitle", "--kb", "vault", "--format", "json").stdout)
    assert (data["title"], data["type"], data["tags"]) == ("42", "recipe", ["1", "true"])


# -- reading: what a file's frontmatter means ------------------------------------------------------


@pytest.mark.parametrize("front,title", [
    ("title: 42", "42"), ("title: 3.5", "3.5"), ("title: true", "true"), ("title: 2024-01-02", "2024-01-02"),
    ("title: 'quoted'", "quoted"), ("title:", "A heading"), ("title: [a, b]", "A heading"), ("other: 1", "A heading"),
])
def test_title_of_any_scalar_else_heading(core: Pyrite, front: str, title: str) -> None:
    (folder_of(core) / "t.md").write_text(f"---\n{front}\n---\n\n```\n# not this\n```\n# A heading\n")
    core.kbs.build("notes")
    assert core.kbs.get_entry("notes", "t").title == title


def test_title_falls_back_to_the_file_name(core: Pyrite) -> None:
    (folder_of(core) / "plain-note.md").write_text("No heading, no frontmatter.\n")
    core.kbs.build("notes")
    assert core.kbs.get_entry("notes", "plain-note").title == "plain-note"


@pytest.mark.parametrize("value,tags", [
    ([1, True, None, "x"], ["1", "true", "x"]),
    ("one", ["one"]),
    ("a, b,c", ["a", "b", "c"]),
    ("a b  c", ["a", "b", "c"]),
    ("#hash, area/sub", ["hash", "area/sub"]),
    (["Dup", "dup", " spaced "], ["Dup", "spaced"]),
    (None, []),
    (7, ["7"]),
])
def test_tag_forms(value: Any, tags: list[str]) -> None:
    assert tag_list(value) == tags


def test_inline_tags_follow_obsidian_rules() -> None:
    body = ("# Heading is not a tag\n## Neither\n#start and mid #nested/deep/tag, end #tail.\n"
            "not#attached, #123 is a number, #1984a is a tag, url http://x.org/#frag\n"
            "`#inline-code` and ```#fenced``` spans\n```\n#in-fence\n```\n~~~python\n#also-fenced\n~~~\n"
            "#日本語 tag and #emoji_ok\n")
    assert inline_tags(body) == ["start", "nested/deep/tag", "tail", "1984a", "日本語", "emoji_ok"]


def test_inline_tags_join_frontmatter_tags_in_the_index_only(core: Pyrite) -> None:
    path = folder_of(core) / "t.md"
    text = "---\ntags: fm\n---\n\nText #inline and #FM again.\n"
    path.write_text(text)
    core.kbs.build("notes")
    assert core.kbs.get_entry("notes", "t").tags == ["fm", "inline"]
    core.kbs.update_entry("notes", "t", meta={"k": 1})
    assert path.read_text() == text.replace("tags: fm\n", "tags: fm\nk: 1\n")
    hits = core.search.search("inline", mode="keyword")["results"]
    assert [h["id"] for h in hits] == ["t"]


@pytest.mark.parametrize("value,aliases", [
    (["One", "Two", 3], ["One", "Two", "3"]), ("Single", ["Single"]), ("a, b", ["a", "b"]), (None, []),
])
def test_aliases_are_read(value: Any, aliases: list[str]) -> None:
    assert aliases_of({"aliases": value}) == aliases


def test_aliases_of_an_indexed_file(core: Pyrite) -> None:
    (folder_of(core) / "a.md").write_text("---\naliases: [Alpha, 'First letter']\n---\nbody\n")
    core.kbs.build("notes")
    entry = core.kbs.get_entry("notes", "a")
    assert entry.aliases == ["Alpha", "First letter"] and entry.to_dict()["aliases"] == entry.aliases


def test_created_comes_from_the_file_never_now(core: Pyrite) -> None:
    folder = folder_of(core)
    (folder / "c.md").write_text("---\ncreated: 2020-05-06\n---\nx\n")
    (folder / "d.md").write_text("---\ndate: 2019-01-02T03:04:05Z\n---\nx\n")
    (folder / "s.md").write_text("no frontmatter\n")
    past = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc).timestamp()
    os.utime(folder / "s.md", (past, past))
    core.kbs.build("notes")
    assert core.kbs.get_entry("notes", "c").created == "2020-05-06"
    assert core.kbs.get_entry("notes", "d").created == "2019-01-02T03:04:05Z"
    stamped = core.kbs.get_entry("notes", "s")
    if not hasattr(os.stat(folder / "s.md"), "st_birthtime"):  # Linux: no birth time, the mtime then
        assert stamped.created == "2001-02-03T04:05:06Z"
    # An update rewrites the file (a new inode) but the entry keeps when it was created.
    core.kbs.update_entry("notes", "s", body="changed")
    assert core.kbs.get_entry("notes", "s").created == stamped.created
    assert (folder / "s.md").read_text() == "changed"  # and no frontmatter was added unasked


def test_created_of_a_file_without_one_stays_through_edits_syncs_and_moves(core: Pyrite) -> None:
    folder = folder_of(core)
    path = folder / "plain.md"
    path.write_text("no frontmatter\n")
    past = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc).timestamp()
    os.utime(path, (past, past))
    core.kbs.build("notes")
    first = core.kbs.get_entry("notes", "plain").created
    # Saved in an editor (atomic rename: new inode, new mtime) and synced: the first date stays.
    tmp = folder / ".plain.md.swp"
    tmp.write_text("no frontmatter, edited in vim\n")
    os.replace(tmp, path)
    later = past + 86400 * 365
    os.utime(path, (later, later))
    assert core.kbs.sync("notes").updated == 1
    assert core.kbs.get_entry("notes", "plain").created == first
    assert core.kbs.build("notes", force=True).updated == 1
    assert core.kbs.get_entry("notes", "plain").created == first
    # Renamed outside pyrite: the same row moves, with its date.
    os.rename(path, folder / "renamed.md")
    assert core.kbs.sync("notes").moved_from == {"plain"}
    assert core.kbs.get_entry("notes", "renamed").created == first
    # A date the file states wins over the remembered one.
    (folder / "renamed.md").write_text("---\ncreated: 1999-12-31\n---\nnow dated\n")
    os.utime(folder / "renamed.md", (later + 5, later + 5))
    core.kbs.sync("notes")
    assert core.kbs.get_entry("notes", "renamed").created == "1999-12-31"


# -- what pyrite writes on its own ------------------------------------------------------------------


def test_new_files_have_no_id_key_and_updates_add_no_keys(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Made here", "body")
    text = (folder_of(core) / entry.path).read_text()
    assert list(parse_markdown(text)[0]) == ["title", "type", "tags", "created", "updated"]
    path = folder_of(core) / "hand.md"
    path.write_text("---\ntitle: Hand\n---\nbody\n")
    core.kbs.build("notes")
    core.kbs.update_entry("notes", "hand", body="new")
    assert path.read_text() == "---\ntitle: Hand\n---\nnew"  # no `updated` added to a file without one
    before = (folder_of(core) / entry.path).read_text()
    core.kbs.update_entry("notes", entry.id, body="new")
    after = (folder_of(core) / entry.path).read_text()
    # A file that has `updated` (every file pyrite made) gets it set; only that line and the body change.
    changed = [(a, b) for a, b in zip(before.split("\n"), after.split("\n")) if a != b]
    assert [b.split(":")[0] for a, b in changed if not a.startswith("body")] in ([], ["updated"])
    assert parse_markdown(after) == ({**parse_markdown(before)[0], "updated": parse_markdown(after)[0]["updated"]},
                                     "new")


def test_update_with_the_same_value_writes_nothing(core: Pyrite) -> None:
    path = folder_of(core) / "n.md"
    path.write_text("---\ntitle: 42\ntags: 'a, b'\n---\nx\n")
    core.kbs.build("notes")
    mtime = path.stat().st_mtime_ns
    core.kbs.update_entry("notes", "n", title="42", tags=["a", "b"])
    assert path.stat().st_mtime_ns == mtime and path.read_text() == "---\ntitle: 42\ntags: 'a, b'\n---\nx\n"


# -- files pyrite cannot read fully -----------------------------------------------------------------


def test_broken_yaml_is_indexed_by_its_body_and_never_rewritten(core: Pyrite) -> None:
    path = folder_of(core) / "broken.md"
    text = "---\ntitle: fine\nkey: [unclosed\nother: 1\n---\n\n# From the heading\n\nsearchable body\n"
    path.write_text(text)
    report = core.kbs.build("notes")
    assert report.added == 1
    assert report.errors == [] and report.warnings == ["broken.md: line 3: the frontmatter is not valid YAML (did not find expected ',' "
                             "or ']'); indexed by its body"]
    entry = core.kbs.get_entry("notes", "broken")
    assert entry.title == "From the heading" and entry.body == "# From the heading\n\nsearchable body\n"
    assert [h["id"] for h in core.search.search("searchable", mode="keyword")["results"]] == ["broken"]
    for change in ({"title": "New"}, {"tags": ["x"]}, {"type": "recipe"}, {"meta": {"k": 1}}):
        with pytest.raises(ValidationError, match="line 3: the frontmatter is not valid YAML"):
            core.kbs.update_entry("notes", "broken", **change)
        assert path.read_text() == text
    core.kbs.update_entry("notes", "broken", body="only the body\n")  # the header is kept as it is
    assert path.read_text() == text.split("\n\n# From")[0] + "\n\nonly the body\n"


def test_broken_yaml_warning_through_the_cli(pyrite_home: Path, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "bad.md").write_text("---\na: b: c\n---\nbody text\n")
    (vault / "latin.md").write_bytes("---\ntitle: café\n---\n\ncrème brûlée\n".encode("latin-1"))
    (vault / "good.md").write_text("fine\n")
    env = {**os.environ, "PYRITE_EMBED_PROVIDER": "none"}
    created = subprocess.run(pyrite_cmd("kb", "create", "vault", "--path", str(vault)), capture_output=True,
                             text=True, env=env, timeout=120)
    assert created.returncode == 0, created.stderr
    result = subprocess.run(pyrite_cmd("index", "build", "--kb", "vault"), capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "bad.md: line 2: the frontmatter is not valid YAML (mapping values are not allowed" in result.stderr
    assert "indexed by its body" in result.stderr
    assert "latin.md: skipped, it is not UTF-8 text (byte 0xE9 at offset 14)" in result.stderr
    # the summary counts the skipped file apart from the one indexed with a warning
    assert "1 skipped, 1 with warnings" in result.stdout, result.stdout
    listed = subprocess.run(pyrite_cmd("list-entries", "--kb", "vault", "--format", "json"), capture_output=True,
                            text=True, env=env, timeout=120)
    assert sorted(e["id"] for e in json.loads(listed.stdout)["entries"]) == ["bad", "good"]


def test_bom_and_crlf_are_read_and_kept(core: Pyrite) -> None:
    path = folder_of(core) / "win.md"
    raw = "\ufeff---\r\ntitle: Windows note\r\ntags:\r\n  - one\r\n  - two\r\n---\r\n\r\nLine one\r\nLine two\r\n"
    path.write_bytes(raw.encode("utf-8"))
    report = core.kbs.build("notes")
    assert report.errors == []
    entry = core.kbs.get_entry("notes", "win")
    assert (entry.title, entry.tags, entry.body) == ("Windows note", ["one", "two"], "Line one\r\nLine two\r\n")
    core.kbs.update_entry("notes", "win", tags=["one", "three"], title="Renamed")
    assert path.read_bytes() == raw.replace("title: Windows note", "title: Renamed").replace(
        "  - two", "  - three").encode("utf-8")


# -- the editor, over generated frontmatter --------------------------------------------------------

_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda k: k not in {"title", "y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32),
                     st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(_KEYS, inner, max_size=3)), max_leaves=6)


def _dump(key: str, value: Any, flow: bool) -> str:
    """One key as a person may write it: block style, or a collection on one line (flow)."""
    if flow and isinstance(value, (list, dict)) and value:
        return f"{key}: " + yaml.safe_dump(value, allow_unicode=True, default_flow_style=True, width=10_000)
    return yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, default_flow_style=False,
                          width=10_000)


@settings(max_examples=150, deadline=None)
@given(front=st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=6), flow=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]), new_title=st.text(st.characters(blacklist_categories=("Cs", "Cc")),
                                                                   min_size=1, max_size=30))
def test_editing_generated_frontmatter_keeps_every_other_line(front: dict[str, Any], flow: bool,
                                                              newline: str, new_title: str) -> None:
    rest = "".join(_dump(key, value, flow) for key, value in front.items())
    text = f"---\ntitle: old\n{rest}---\n\nbody\n".replace("\n", newline)
    out = frontmatter.edit_text(text, {"title": new_title}, name="gen.md")
    lines_out = out.split(newline)
    lines_in = text.split(newline)
    assert lines_out[0] == "---" and lines_out[1].startswith("title: ")
    assert lines_out[2:] == lines_in[2:]  # byte for byte, everything but the title line
    assert parse_markdown(out)[0] == {"title": new_title, **front}
    # Dropping a key and adding one: the others keep their values and order.
    victim = next(iter(front))
    dropped = frontmatter.edit_text(text, {"added": [1, "two"]}, [victim], name="gen.md")
    expect = {"title": "old", **{k: v for k, v in front.items() if k != victim}, "added": [1, "two"]}
    assert parse_markdown(dropped)[0] == expect
