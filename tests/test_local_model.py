"""The real local model (all-MiniLM-L6-v2): vectors, chunking, and search by meaning through the core."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pyrite.core import Pyrite
from pyrite.embedders.local import LocalEmbedder

pytestmark = pytest.mark.slow

# Office filler: long, dull, and about nothing the queries below ask for.
FILLER_WORDS = (
    "report meeting budget schedule office quarterly review policy invoice department manager project "
    "client deadline memo agenda summary approval contract vendor spreadsheet payroll audit compliance "
    "procurement stakeholder milestone deliverable").split()

DISTRACTORS = [
    ("Sourdough baking", "Feed the starter, fold the dough, bake the loaf in a hot oven."),
    ("Index funds", "Low-cost index funds track the market and keep fees small over decades."),
    ("Telescope buying guide", "Aperture matters most when observing faint galaxies and nebulae."),
    ("Tax deadlines", "File the quarterly estimated tax payments before the due dates."),
    ("Houseplant care", "Water succulents sparingly and give ferns bright indirect light."),
]


def filler(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(FILLER_WORDS) for _ in range(n_words))


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    e = LocalEmbedder()
    e.load()
    return e


def add_distractors(core: Pyrite, embed: bool = True) -> None:
    for title, body in DISTRACTORS:
        core.kbs.create_entry("notes", title, body, embed=embed)


def test_vectors_are_384_d_unit_float32(embedder: LocalEmbedder) -> None:
    texts = ["a cat sat on the mat", "quarterly budget review", "", "ünïcödé and emoji 🐍"]
    vecs = embedder.embed(texts)
    assert embedder.dimension == 384
    assert vecs.dtype == np.float32 and vecs.shape == (4, 384)
    assert np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # The same text gives the same vector; different texts differ.
    again = embedder.embed(texts[:1])
    np.testing.assert_allclose(again[0], vecs[0], atol=1e-5)
    assert float(vecs[0] @ vecs[1]) < 0.9


def test_long_text_is_chunked_into_overlapping_windows(embedder: LocalEmbedder) -> None:
    text = filler(2000, seed=1)
    chunks = embedder.chunk(text)
    assert len(chunks) >= 5
    tokenizer = embedder._st.tokenizer
    max_len = int(embedder._st.max_seq_length)
    assert max_len == 256
    for c in chunks:
        assert c and c == c.strip()
        assert len(tokenizer(c, add_special_tokens=True)["input_ids"]) <= max_len
    # Chunks are slices of the text, in order, covering all of it, each overlapping the next.
    spans = []
    pos = 0
    for c in chunks:
        start = text.index(c, pos)
        spans.append((start, start + len(c)))
        pos = start + 1
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s1 < s2 < e1 < e2, "consecutive chunks must overlap"
    # A short text is one chunk, untouched.
    assert embedder.chunk("just a few words") == ["just a few words"]


def test_semantic_search_finds_by_meaning_without_shared_words(local_core: Pyrite) -> None:
    add_distractors(local_core)
    entry = local_core.kbs.create_entry(
        "notes", "Canine companions", "Puppies need walks, chew toys and patient house training.")
    assert entry.embedding_status == "done"
    # No word in common: keyword search cannot find it.
    assert local_core.search.search("dogs", mode="keyword")["results"] == []
    answer = local_core.search.search("dogs", mode="semantic", limit=3)
    assert answer["mode"] == "semantic"
    ids = [r["id"] for r in answer["results"]]
    assert ids[0] == entry.id, answer["results"]
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] - scores[1] > 0.05


def test_hybrid_ranks_keyword_and_meaning_together(local_core: Pyrite) -> None:
    add_distractors(local_core)
    dogs = local_core.kbs.create_entry("notes", "Canine companions",
                                       "Puppies need walks, chew toys and patient dog training.")
    # Both query words, buried in office filler: a keyword hit, far away by meaning.
    words = filler(120, seed=3).split()
    words[40:40] = ["dog"]
    words[90:90] = ["training"]
    memo = local_core.kbs.create_entry("notes", "Facilities memo", " ".join(words))
    hounds = local_core.kbs.create_entry("notes", "Obedience school",
                                         "Obedience classes teach hounds to sit, stay and heel on the leash.")
    keyword = [r["id"] for r in local_core.search.search("dog training", mode="keyword")["results"]]
    assert sorted(keyword) == sorted([dogs.id, memo.id])
    semantic = [r["id"] for r in local_core.search.search("dog training", mode="semantic", limit=10)["results"]]
    assert semantic[0] == dogs.id and semantic.index(hounds.id) < semantic.index(memo.id), semantic
    answer = local_core.search.search("dog training", mode="hybrid", limit=10)
    assert answer["mode"] == "hybrid" and answer["pending"] == 0
    ids = [r["id"] for r in answer["results"]]
    # Reciprocal rank fusion: first both ways ranks first; any keyword hit outranks
    # entries found only by meaning, which follow in their semantic order.
    assert ids[:2] == [dogs.id, memo.id], answer["results"]
    assert ids[2:] == [i for i in semantic if i not in keyword]
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
    # Keyword hits show the matched words; hits by meaning alone show the opening of their body.
    snippets = {r["id"]: r["snippet"] for r in answer["results"]}
    assert "**dog** **training**" in snippets[dogs.id] and "**dog**" in snippets[memo.id]
    assert snippets[hounds.id].startswith("Obedience classes teach") and "**" not in snippets[hounds.id]
    # Default mode with vectors present is hybrid.
    assert local_core.search.search("dog training")["mode"] == "hybrid"


def test_search_wait_reads_its_own_writes(local_core: Pyrite) -> None:
    add_distractors(local_core, embed=False)
    entry = local_core.kbs.create_entry(
        "notes", "Canine companions", "Puppies need walks, chew toys and patient house training.", embed=False)
    assert entry.embedding_status == "pending"
    before = local_core.search.search("dogs", mode="semantic", limit=3)
    assert entry.id not in [r["id"] for r in before["results"]]
    assert before["pending"] == 6
    answer = local_core.search.search("dogs", mode="semantic", limit=3, wait=60)
    assert answer["pending"] == 0
    assert answer["results"][0]["id"] == entry.id
    assert local_core.kbs.get_entry("notes", entry.id).embedding_status == "done"


def test_long_entry_is_found_by_its_last_chunk(local_core: Pyrite) -> None:
    add_distractors(local_core)
    ending = ("Then the volcano erupted: molten lava poured down the mountainside, ash clouds rose over "
              "the crater and the magma chamber emptied in a violent eruption.")
    long_entry = local_core.kbs.create_entry("notes", "Minutes of the annual meeting",
                                             filler(1500, seed=2) + "\n\n" + ending)
    # The control has the very same beginning (same first chunks) and a dull ending.
    control = local_core.kbs.create_entry("notes", "Minutes of the annual meeting, copy",
                                          filler(1500, seed=2) + "\n\nThe meeting was adjourned.")
    rowid = local_core.db.query("SELECT rowid FROM entries WHERE id = ?", (long_entry.id,))[0][0]
    n = local_core.db.query("SELECT count(*) FROM chunks WHERE entry_rowid = ?", (rowid,))[0][0]
    assert n >= 4  # the ending is far outside the first window
    assert n == len(local_core.provider.embedder.chunk(long_entry.embed_text()))
    assert local_core.provider.embedder.chunk(long_entry.embed_text())[-1].endswith("violent eruption.")
    answer = local_core.search.search("lava flowing from an erupting volcano", mode="semantic", limit=10)
    scores = {r["id"]: r["score"] for r in answer["results"]}
    assert answer["results"][0]["id"] == long_entry.id, answer["results"]
    assert scores[long_entry.id] > scores.get(control.id, 0.0) + 0.05, scores
    # An entry appears once, scored by its best chunk.
    assert len(scores) == len(answer["results"])


def test_batches_through_forward_match_encode() -> None:
    """The embedder runs one batch through preprocess+forward; it must give encode()'s vectors."""
    embedder = LocalEmbedder()
    texts = ["short", "dogs need walks and patient training " * 5, "word " * 300, "é ü 漢字 🙂 mixed scripts"]
    got = embedder.embed(texts)
    want = embedder._st.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
    assert got.shape == (4, 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
