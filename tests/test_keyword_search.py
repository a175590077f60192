"""Keyword search: FTS5 bm25 ranking, snippets, filters, and hostile input that never breaks it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyrite.core import Pyrite
from pyrite.errors import NotFoundError, PyriteError, ValidationError
from pyrite.services.search_service import QUERY_MAX, fts_query

RESULT_KEYS = {"id", "kb", "title", "score", "snippet"}


def ids(answer: dict[str, Any]) -> list[str]:
    return [r["id"] for r in answer["results"]]


def test_title_match_outranks_body_match(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Gardening notes", "The zebra appears once in this body about plants.")
    core.kbs.create_entry("notes", "Zebra facts", "Stripes, savannah and herds.")
    core.kbs.create_entry("notes", "Unrelated", "Nothing to see here.")
    answer = core.search.search("zebra", mode="keyword")
    assert answer["mode"] == "keyword"
    assert ids(answer) == ["zebra-facts", "gardening-notes"]
    for r in answer["results"]:
        assert RESULT_KEYS <= set(r)
        assert isinstance(r["score"], float)


def test_scores_follow_the_ranking(core: Pyrite) -> None:
    """The score is what a client sorts or merges by: it must be positive and tell the results apart.

    In a small KB where the word is in most entries, bm25's idf is tiny, and rounding
    the score to 4 decimals makes every result score 0.0.
    """
    core.kbs.create_entry("notes", "Gardening notes", "The zebra appears once in this body about plants.")
    core.kbs.create_entry("notes", "Zebra facts", "Stripes, savannah and herds.")
    core.kbs.create_entry("notes", "Unrelated", "Nothing to see here.")
    answer = core.search.search("zebra", mode="keyword")
    assert ids(answer) == ["zebra-facts", "gardening-notes"]
    scores = [r["score"] for r in answer["results"]]
    assert scores[0] > scores[1] > 0, scores


def test_scores_positive_and_decreasing_in_a_larger_kb(core: Pyrite) -> None:
    for i in range(20):
        core.kbs.create_entry("notes", f"Filler {i}", "nothing relevant here")
    core.kbs.create_entry("notes", "Gardening notes", "The zebra appears once in this body about plants.")
    core.kbs.create_entry("notes", "Zebra facts", "Stripes, savannah and herds.")
    answer = core.search.search("zebra", mode="keyword")
    assert ids(answer) == ["zebra-facts", "gardening-notes"]
    scores = [r["score"] for r in answer["results"]]
    assert scores[0] > scores[1] > 0, scores


def test_more_matching_terms_rank_higher(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Alpha", "python sqlite python sqlite indexing")
    core.kbs.create_entry("notes", "Beta", "python only here, nothing else relevant at all in this text")
    assert ids(core.search.search("python sqlite", mode="keyword"))[0] == "alpha"


def test_all_terms_first_then_any_term(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Only apples", "apples")
    core.kbs.create_entry("notes", "Only pears", "pears")
    # no entry has both words: the search falls back to entries with any of them
    assert set(ids(core.search.search("apples pears", mode="keyword"))) == {"only-apples", "only-pears"}
    core.kbs.create_entry("notes", "Both", "apples and pears")
    assert ids(core.search.search("apples pears", mode="keyword")) == ["both"]


def test_snippet_contains_the_match(core: Pyrite) -> None:
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 5
            + "The quick brown fox jumps over the lazy dog. "
            + "Sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. " * 5)
    core.kbs.create_entry("notes", "Long text", body)
    [hit] = core.search.search("fox", mode="keyword")["results"]
    assert "fox" in hit["snippet"].lower()
    assert "**fox**" in hit["snippet"]  # the match is highlighted
    assert len(hit["snippet"]) < len(body)


def test_snippet_for_unicode_match(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Café", "Un café crème, s'il vous plaît.")
    [hit] = core.search.search("crème", mode="keyword")["results"]
    assert "crème" in hit["snippet"]
    # diacritics are folded: 'creme' finds 'crème' too
    assert ids(core.search.search("creme", mode="keyword")) == ["café"]


def test_kb_filter_is_exact(core: Pyrite) -> None:
    core.kbs.create_kb("work")
    core.kbs.create_kb("notes2")
    for i in range(3):
        core.kbs.create_entry("notes", f"Shared word {i}", "marmalade")
    for i in range(2):
        core.kbs.create_entry("work", f"Shared word {i}", "marmalade")
    core.kbs.create_entry("notes2", "Shared word", "marmalade")
    everywhere = core.search.search("marmalade", mode="keyword")["results"]
    assert len(everywhere) == 6
    notes = core.search.search("marmalade", mode="keyword", kb="notes")["results"]
    assert len(notes) == 3 and {r["kb"] for r in notes} == {"notes"}
    work = core.search.search("marmalade", mode="keyword", kb="work")["results"]
    assert len(work) == 2 and {r["kb"] for r in work} == {"work"}
    assert {r["kb"] for r in core.search.search("marmalade", mode="keyword", kb="notes2")["results"]} == {"notes2"}


def test_unknown_or_bad_kb(core: Pyrite) -> None:
    with pytest.raises(NotFoundError):
        core.search.search("x", mode="keyword", kb="nope")
    with pytest.raises(ValidationError):
        core.search.search("x", mode="keyword", kb="../notes")


def test_limit_is_exact(core: Pyrite) -> None:
    for i in range(15):
        core.kbs.create_entry("notes", f"Entry number {i}", "pelican")
    for limit in (1, 7, 15):
        assert len(core.search.search("pelican", mode="keyword", limit=limit)["results"]) == limit
    assert len(core.search.search("pelican", mode="keyword", limit=100)["results"]) == 15
    got = ids(core.search.search("pelican", mode="keyword", limit=15))
    assert len(set(got)) == 15


@pytest.mark.parametrize("limit", [0, -1, 1001, 2.5, "10", None])
def test_bad_limit(core: Pyrite, limit: Any) -> None:
    with pytest.raises(ValidationError):
        core.search.search("x", mode="keyword", limit=limit)


def test_bad_mode(core: Pyrite) -> None:
    with pytest.raises(ValidationError):
        core.search.search("x", mode="fuzzy")


def test_tags_are_searchable(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Deploying", "how we ship", tags=["kubernetes", "infra"])
    core.kbs.create_entry("notes", "Cooking", "recipes", tags=["food"])
    assert ids(core.search.search("kubernetes", mode="keyword")) == ["deploying"]
    assert ids(core.search.search("food", mode="keyword")) == ["cooking"]
    [hit] = core.search.search("infra", mode="keyword")["results"]
    assert hit["tags"] == ["kubernetes", "infra"]


def test_search_reflects_updates(core: Pyrite) -> None:
    e = core.kbs.create_entry("notes", "Draft", "first version mentions walrus")
    core.kbs.update_entry("notes", e.id, body="second version mentions narwhal")
    assert core.search.search("walrus", mode="keyword")["results"] == []
    assert ids(core.search.search("narwhal", mode="keyword")) == ["draft"]


def test_any_script(core: Pyrite) -> None:
    core.kbs.create_entry("notes", "Привет мир", "Тестовый текст про кошек")
    core.kbs.create_entry("notes", "नमस्ते", "यह परीक्षण है")
    assert ids(core.search.search("кошек", mode="keyword")) == ["привет-мир"]
    assert ids(core.search.search("परीक्षण", mode="keyword")) == ["नमस्ते"]


# -- hostile input --------------------------------------------------------------------------------

HOSTILE = [
    '"', '""', '"unbalanced', "'", "''", "AND", "OR", "NOT", "a AND", "OR b", "NOT NOT", "a OR OR b",
    "NEAR(", "NEAR(a b", "NEAR(a b, 2)", "*", "a*", "*a", "^a", "col:", "title:", "title:x", "body:zebra",
    "{title body}: x", "-", "- a", "+", "(", ")", "((", "a)", "[", "]", ":", "::", ";", "\\", "\\\"",
    "'; DROP TABLE entries; --", "\"; DROP TABLE entries; --", "1; DELETE FROM kbs", "x' OR '1'='1",
    "%", "_", "a%b", "\t", "\n", "\r\n", "   ", "", "\x00", "a\x00b", "\u200b", "\ufeff", "🎉", "日本語 AND",
    "a" * QUERY_MAX, "a " * (QUERY_MAX // 2), "a" * (QUERY_MAX + 1), "NEAR " * 2000, "x" * 5000 + '"',
    " ".join(f"w{i}" for i in range(500)),
]
# Lone surrogates: what Python makes of undecodable bytes in argv (`pyrite search $'abc\xff'`)
# or of a JSON "\udcff" escape sent to the REST API or MCP.
SURROGATES = ["\udcff", "abc\udcff", "\ud800abc", "zebra \udc80"]


def schema(core: Pyrite) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in core.db.query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")]


def check_search(core: Pyrite, query: str) -> None:
    try:
        answer = core.search.search(query, mode="keyword")
    except PyriteError:
        return
    assert isinstance(answer, dict)
    assert isinstance(answer["results"], list)
    for r in answer["results"]:
        assert RESULT_KEYS <= set(r)


@pytest.fixture
def seeded(core: Pyrite) -> Pyrite:
    core.kbs.create_entry("notes", "Zebra facts", "Stripes AND herds OR NOT near things", tags=["animals"])
    core.kbs.create_entry("notes", "Drop table", "'; DROP TABLE entries; -- is a classic")
    return core


def test_hostile_queries(seeded: Pyrite) -> None:
    before = schema(seeded)
    entries = seeded.db.query("SELECT count(*) FROM entries")[0][0]
    crashed = []
    for query in HOSTILE:
        try:
            check_search(seeded, query)
        except Exception as exc:  # anything but a PyriteError is a crash
            crashed.append((query[:40], repr(exc)))
    assert crashed == []
    assert schema(seeded) == before
    assert seeded.db.query("SELECT count(*) FROM entries")[0][0] == entries
    assert ids(seeded.search.search("zebra", mode="keyword")) == ["zebra-facts"]


@pytest.mark.parametrize("query", SURROGATES, ids=repr)
def test_lone_surrogates_give_a_pyrite_error_or_results(seeded: Pyrite, query: str) -> None:
    before = schema(seeded)
    check_search(seeded, query)
    assert schema(seeded) == before


def test_operators_are_plain_words(seeded: Pyrite) -> None:
    # 'AND', 'OR', 'NOT' and 'NEAR' are searched as words, not interpreted
    assert ids(seeded.search.search("AND", mode="keyword")) == ["zebra-facts"]
    assert ids(seeded.search.search("NOT near", mode="keyword")) == ["zebra-facts"]
    assert ids(seeded.search.search("DROP TABLE", mode="keyword"))[0] == "drop-table"
    # 'col:' is not a column filter: 'zebra:' is the word zebra, 'body:zebra' the phrase "body zebra"
    assert ids(seeded.search.search("zebra:", mode="keyword")) == ["zebra-facts"]
    assert seeded.search.search("body:zebra", mode="keyword")["results"] == []


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "a" * (QUERY_MAX + 1), "x\x00"])
def test_empty_long_and_nul_queries_are_validation_errors(seeded: Pyrite, query: str) -> None:
    with pytest.raises(ValidationError):
        seeded.search.search(query, mode="keyword")


def test_punctuation_only_query_finds_nothing(seeded: Pyrite) -> None:
    assert seeded.search.search('"*()', mode="keyword")["results"] == []


_fragments = st.sampled_from([
    '"', "'", "AND", "OR", "NOT", "NEAR(", "NEAR", "*", "col:", "title:", "body:", "^", "(", ")", "{", "}",
    "-", "+", ":", ";", "--", "'; DROP TABLE entries; --", "\\", "%", "zebra", "\x00", " ", "\n",
])


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=30), _fragments), max_size=12).map("".join))
@example("")
@example("'; DROP TABLE entries; --")
@example('title: "zebra" NEAR(x y) OR *')
def test_keyword_search_never_crashes(seeded: Pyrite, query: str) -> None:
    before = schema(seeded)
    check_search(seeded, query)
    assert schema(seeded) == before


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fts_query_quotes_every_piece(text: str) -> None:
    q = fts_query(text)
    if q is None:
        assert not any(ch.isalnum() for ch in text) or not text.split()
        return
    # every piece is a double-quoted phrase with inner quotes doubled
    for phrase in q.split('" "'):
        inner = phrase.strip('"')
        assert '"' not in inner.replace('""', "")


def test_kb_filter_keeps_the_full_text_index_as_outer_loop(core, monkeypatch) -> None:
    """With a KB filter SQLite once walked the KB's entries, running the MATCH per entry (1 s at 10,000)."""
    core.kbs.create_kb("other")
    for i in range(30):
        core.kbs.create_entry("notes", title=f"alpha note {i}", body="alpha beta", embed=False)
        core.kbs.create_entry("other", title=f"alpha other {i}", body="alpha gamma", embed=False)
    seen: list[tuple[str, list]] = []
    real_query = core.db.query

    def spy(sql, params=()):
        seen.append((sql, list(params)))
        return real_query(sql, params)

    monkeypatch.setattr(core.db, "query", spy)
    hits = core.search.search("alpha", kb="notes", mode="keyword", limit=5)["results"]
    assert len(hits) == 5 and {h["kb"] for h in hits} == {"notes"}
    sql, params = next((q, p) for q, p in seen if "MATCH" in q)
    plan = [row[3] for row in real_query("EXPLAIN QUERY PLAN " + sql, params)]
    assert plan[0].startswith("SCAN entries_fts"), plan
