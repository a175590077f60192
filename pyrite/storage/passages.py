"""Passages of long entries: bounded pieces of a body, full-text indexed, so snippets never scan a whole body.

FTS5 `snippet()` tokenizes the whole column and scores every hit against every other: its cost grows with
the square of a body's hits (a 1 MB entry took seconds, a 10 MB one minutes). Bodies longer than
LONG_BODY characters are therefore also stored as passages of about PASSAGE_CHARS characters, cut at
paragraph breaks or whitespace, in `passages` (rowid = entry rowid << 16 | passage number) and
`passages_fts`. Search ranks whole entries in `entries_fts` as before and takes a long entry's snippet
from its best passage. The rows are written and removed in the entry's own transaction.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

LONG_BODY = 4096  # characters: bodies up to this size are snippeted whole (bounded by this size)
PASSAGE_CHARS = 1536
PASSAGE_BITS = 16
MAX_PASSAGES = 1 << PASSAGE_BITS
SNIPPET_TOKENS = 16
# The best passage is the best ranked of the entry's first CANDIDATES matching ones: ranking all of them
# costs as much as the entry holds hits (56 ms for a common word in 10 MB), this a fixed ~1 ms.
CANDIDATES = 32
# FTS5 seeks to a rowid range (the entry's passages) and walks its matches in rowid order.
_NTH_MATCH_SQL = ("SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? AND rowid BETWEEN ? AND ? "
                  "ORDER BY rowid LIMIT 1 OFFSET ?")
_SNIPPET_SQL = (
    f"SELECT rowid, snippet(passages_fts, 0, '**', '**', '…', {SNIPPET_TOKENS}) FROM passages_fts "
    "WHERE passages_fts MATCH ? AND rowid BETWEEN ? AND ? ORDER BY rank LIMIT 1"
)


def first_rowid(entry_rowid: int) -> int:
    """The rowid of an entry's first passage."""
    return int(entry_rowid) << PASSAGE_BITS


def entry_of(passage_rowid: int) -> int:
    """The entry rowid a passage belongs to."""
    return int(passage_rowid) >> PASSAGE_BITS


def split(body: str) -> list[str]:
    """The passages of body: [] when it is at most LONG_BODY characters, else pieces of ~PASSAGE_CHARS.

    Cuts fall on the last paragraph break, else the last whitespace, in the second half of each window
    (a hard cut only in text without whitespace). Passages grow beyond PASSAGE_CHARS only for bodies
    that would need more than MAX_PASSAGES of them (over ~100 MB).
    """
    if len(body) <= LONG_BODY:
        return []
    size = max(PASSAGE_CHARS, -(-len(body) // MAX_PASSAGES))
    out: list[str] = []
    start, end_of_body = 0, len(body)
    while start < end_of_body:
        end = start + size
        if end < end_of_body:
            low = start + size // 2
            cut = body.rfind("\n\n", low, end)
            if cut < 0:
                cut = max(body.rfind(" ", low, end), body.rfind("\n", low, end), body.rfind("\t", low, end))
            end = cut + 1 if cut >= 0 else end
        piece = body[start:end]
        if piece.strip():
            out.append(piece)
        start = end
    return out


def write(conn: Any, entry_rowid: int, body: str) -> int:
    """Replace the entry's passages by those of body (none for a short body); return how many it has."""
    delete(conn, [entry_rowid])
    pieces = split(body)
    if pieces:
        base = first_rowid(entry_rowid)
        conn.executemany("INSERT INTO passages (rowid, body) VALUES (?, ?)",
                         [(base + n, text) for n, text in enumerate(pieces)])
    return len(pieces)


def delete(conn: Any, entry_rowids: Iterable[int]) -> None:
    """Remove the passages of these entries (a seek on the rowid range; nothing to do for short entries)."""
    conn.executemany("DELETE FROM passages WHERE rowid BETWEEN ? AND ?",
                     [(first_rowid(r), first_rowid(r) + MAX_PASSAGES - 1) for r in entry_rowids])


def long_entries(conn: Any, entry_rowids: Sequence[int]) -> set[int]:
    """Which of these entries have passages."""
    if not entry_rowids:
        return set()
    firsts = [first_rowid(r) for r in entry_rowids]
    rows = conn.execute(f"SELECT rowid FROM passages WHERE rowid IN ({','.join('?' * len(firsts))})",
                        firsts).fetchall()
    return {entry_of(r[0]) for r in rows}


def best_snippet(conn: Any, match: str, entry_rowid: int) -> str | None:
    """A snippet of the entry's best passage (of its first CANDIDATES) for an FTS5 match, '…' marking cut text;
    None if no passage matches."""
    base = first_rowid(entry_rowid)
    last = base + MAX_PASSAGES - 1
    nth = conn.execute(_NTH_MATCH_SQL, (match, base, last, CANDIDATES - 1)).fetchone()
    row = conn.execute(_SNIPPET_SQL, (match, base, nth[0] if nth else last)).fetchone()
    if row is None:
        return None
    text = row[1]
    if row[0] != base and not text.startswith("…"):
        text = "…" + text  # snippet() only knows the passage: an inner passage starts mid-body
    if not text.endswith("…") and conn.execute("SELECT 1 FROM passages WHERE rowid = ?", (row[0] + 1,)).fetchone():
        text += "…"
    return text


def preview_sql(alias: str, chars: int) -> str:
    """An SQL expression: the first `chars` characters of the body of entries row `alias`, from its first
    passage if it has one (coalesce() is lazy, so a long entry's body, maybe megabytes, is never read)."""
    return (f"coalesce((SELECT substr(p.body, 1, {int(chars)}) FROM passages p "
            f"WHERE p.rowid = {alias}.rowid << {PASSAGE_BITS}), substr({alias}.body, 1, {int(chars)}))")
