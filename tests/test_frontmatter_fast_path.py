"""The frontmatter fast path must read every header exactly as YAML does, or leave it to YAML."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrite.storage import files

WORDS = st.sampled_from(["a", "Yes", "no", "ON", "null", "Null", "~", "y", "12", "0o7", "1:20", ".inf", "title",
                         "tags", "x-y", "_k", "é", "日本", "a b", "a, b", "a: b", "a #b", "'q'", "'it''s'", "'a'b'",
                         "\"d\"", "-", "- a", "2026-01-01", "true", "&a", "*a", "!t", "|", ">", "[a]", "{a: 1}",
                         "a ", " a", "[]", "[ ]", "\t", "a\tb", "\r", "\x85", "\u2028", "\ufeff", "%", "@", "`", ""])
LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", WORDS, WORDS),
    st.builds(lambda k: f"{k}:", WORDS),
    st.builds(lambda v: f"- {v}", WORDS),
    st.builds(lambda a, b: a + b, WORDS, WORDS),
)


def reference(header: str) -> object:
    try:
        front = yaml.load(header, Loader=files._Loader) or {}
    except yaml.YAMLError:
        return "error"
    if not isinstance(front, dict):
        return "not a mapping"
    return {str(k): v for k, v in front.items()}


@settings(max_examples=3000, deadline=None)
@given(st.lists(LINE, max_size=6))
def test_fast_path_agrees_with_yaml(lines: list[str]) -> None:
    header = "\n".join(lines) + ("\n" if lines else "")
    fast = files._simple_front(header)
    if fast is not None:
        assert fast == reference(header), header


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_-]{0,8}", fullmatch=True),
                       st.one_of(st.text(max_size=30), st.lists(st.text(max_size=12), max_size=4)), max_size=6))
def test_rendered_frontmatter_round_trips(front: dict) -> None:
    text = files.render_markdown(front, "body\n")
    parsed, body = files.parse_markdown(text)
    assert body == "body\n"
    header = text.split("---\n")[1]
    assert parsed == reference(header)


def test_pyrite_headers_take_the_fast_path() -> None:
    header = ("id: note-about-cats\ntitle: 'Cats: a field guide'\ntype: note\ntags:\n- pets\n- field notes\n"
              "created: '2026-01-01T00:00:00+00:00'\nupdated: '2026-01-02T00:00:00+00:00'\n")
    assert files._simple_front(header) == reference(header)
    assert files._simple_front(header)["title"] == "Cats: a field guide"


def test_the_property_exercises_the_fast_path() -> None:
    """Guard against a fast path that silently declines everything (the property would pass vacuously)."""
    assert files._simple_front("title: a\ntags:\n- a b\n") == {"title": "a", "tags": ["a b"]}
    assert files._simple_front("title: 'a: b'\n") == {"title": "a: b"}


SCALARS = st.one_of(WORDS, st.text(max_size=20),
                    st.text(alphabet="aZé日 '-:#,?[]{}&*!|>\"%@`\t\x85\u2028\ufeff\xa0.0~_ybn𝄞🚀\\", max_size=8))


@settings(max_examples=3000, deadline=None)
@given(st.dictionaries(st.one_of(WORDS, st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True)),
                       st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=5))
def test_fast_render_reads_back_exactly_by_both_parsers(front: dict) -> None:
    header = files._fast_front(front)
    if header is not None:
        assert reference(header) == front, header
        assert files._simple_front(header) == front, header


def test_pyrite_fronts_take_the_fast_render_and_match_yaml() -> None:
    front = {"id": "2026-plans", "title": "Cats: a field guide", "type": "note", "tags": ["pets", "field notes"],
             "created": "2026-01-01T00:00:00Z", "updated": "2026-01-02T00:00:00Z", "empty": []}
    header = files._fast_front(front)
    assert header is not None
    assert header == yaml.dump(front, Dumper=files._BaseDumper, sort_keys=False, allow_unicode=True,
                               default_flow_style=False, width=10_000)


@pytest.mark.parametrize("front", [{"n": 1}, {"ok": True}, {"d": {"a": "b"}}, {"t": "a\tb"}, {"x": None},
                                   {"long": "w " * 600}, {"2key": "v"}, {"tags": ["a", 1]}, {}])
def test_other_fronts_are_left_to_yaml(front: dict) -> None:
    assert files._fast_front(front) is None
    parsed, body = files.parse_markdown(files.render_markdown(front, "b"))
    assert (parsed, body) == (front, "b")
