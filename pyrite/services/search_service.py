"""Keyword (FTS5 bm25), semantic (sqlite-vec KNN) and hybrid (reciprocal rank fusion) search."""

from __future__ import annotations

import json
from typing import Any

from pyrite.errors import EmbeddingError, NotFoundError, ValidationError
from pyrite.names import check_kb_name
from pyrite.services.embedding_service import EmbeddingService
from pyrite.services.kb_service import check_text
from pyrite.storage import queue, vectors
from pyrite.storage.db import Database, OperationalError

MODES = ("keyword", "semantic", "hybrid")
LIMIT_MAX = 1000
QUERY_MAX = 10_000
TERMS_MAX = 64
RRF_K = 60
WAIT_MAX = 300.0
# bm25 column weights: title, body, tags.
WEIGHTS = (10.0, 1.0, 5.0)
SNIPPET_TOKENS = 16
SNIPPET_SQL = f"snippet(entries_fts, -1, '**', '**', '…', {SNIPPET_TOKENS})"  # matched words in bold


def fts_query(text: str, *, any_term: bool = False) -> str | None:
    """An FTS5 query that matches the words of text literally (each a quoted phrase); None if it has no words.

    Quoting every whitespace-separated piece turns operators (AND, NEAR, *, col:)
    into plain words, so no user string can change the query's structure.
    """
    pieces = [p for p in text.split() if any(ch.isalnum() for ch in p)][:TERMS_MAX]
    if not pieces:
        return None
    phrases = ['"' + p.replace('"', '""') + '"' for p in pieces]
    return (" OR " if any_term else " ").join(phrases)


def check_wait(wait: Any) -> float:
    """wait as seconds from 0 to WAIT_MAX (None: 0), else ValidationError; what REST, CLI and MCP accept."""
    if wait is None:
        return 0.0
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= WAIT_MAX:
        raise ValidationError(f"wait must be a number of seconds from 0 to {WAIT_MAX:g}")
    return float(wait)  # NaN fails the range check above: it compares false to everything


def _snippet_from_body(body: str, size: int = 160) -> str:
    text = " ".join(body.split())
    return text if len(text) <= size else text[:size].rsplit(" ", 1)[0] + "…"


class SearchService:
    """Search over one or all KBs; every mode answers with results or a clear error, never a crash."""

    def __init__(self, db: Database, embedding: EmbeddingService) -> None:
        self.db = db
        self.embedding = embedding

    def search(self, query: str, *, kb: str | None = None, mode: str | None = None, limit: int = 10,
               wait: float | None = None) -> dict[str, Any]:
        """Ranked results with score and snippet, plus how many entries still wait for embeddings."""
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("the search query is empty")
        if len(query) > QUERY_MAX:
            raise ValidationError(f"the search query is longer than {QUERY_MAX} characters")
        check_text(query, "the search query")
        if kb is not None:
            check_kb_name(kb)
            if not self.db.query("SELECT 1 FROM kbs WHERE name = ?", (kb,)):
                raise NotFoundError(f"no KB named {kb!r} (see `pyrite kb list`)")
        if not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
            raise ValidationError(f"limit must be a whole number from 1 to {LIMIT_MAX}")
        if mode is not None and mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}")
        wait = check_wait(wait)
        notes: list[str] = []
        if wait:
            left = self.embedding.wait_for(kb, timeout=wait)
            if left:
                notes.append(f"{left} {'entry was' if left == 1 else 'entries were'} still waiting for embeddings "
                             f"after {wait:g}s")
        semantic_ok = self.embedding.enabled
        if mode is None:
            mode = "hybrid" if semantic_ok and self._has_vectors() else "keyword"
        elif mode != "keyword" and not semantic_ok:
            notes.append(f"semantic search is unavailable: {self.embedding.why_disabled()}; "
                         "showing keyword results")
            mode = "keyword"
        if mode != "keyword":
            notes.extend(self._model_notes())
        try:
            if mode == "keyword":
                results = self._keyword(query, kb, limit)
            elif mode == "semantic":
                results = self._semantic(query, kb, limit)
            else:
                results = self._hybrid(query, kb, limit)
        except EmbeddingError as exc:
            notes.append(f"semantic search failed ({exc}); showing keyword results")
            mode = "keyword"
            results = self._keyword(query, kb, limit)
        pending = queue.outstanding(self.db.conn, kb) if semantic_ok else 0
        if pending and mode != "keyword":
            notes.append(f"{pending} entries are not embedded yet and can only be found by keyword")
        return {"query": query, "mode": mode, "kb": kb, "results": results, "pending": pending, "notes": notes}

    # -- modes ---------------------------------------------------------------------

    def _keyword(self, query: str, kb: str | None, limit: int) -> list[dict[str, Any]]:
        _, rows = self._fts_ranked(query, kb, limit)
        # Significant digits, not decimals: bm25 of a common word is tiny but still ranks.
        return [self._result(r, score=float(f"{-r['rank']:.6g}"), snippet=r["snip"]) for r in rows]

    def _fts_ranked(self, query: str, kb: str | None, limit: int, *, snippets: bool = True) -> tuple[str, list[Any]]:
        """bm25-ranked rows having every word of query, or else any of them; and the MATCH that found them."""
        match = fts_query(query)
        if match is None:
            return "", []
        rows = self._fts(match, kb, limit, snippets)
        if not rows and " " in match:
            match = fts_query(query, any_term=True) or match
            rows = self._fts(match, kb, limit, snippets)
        return match, rows

    def _fts(self, match: str, kb: str | None, limit: int, snippets: bool = True) -> list[Any]:
        # A snippet costs ~0.1 ms per row: hybrid search ranks 30 rows and asks snippets of the few it keeps.
        snip = SNIPPET_SQL if snippets else "NULL"
        sql = (
            "SELECT e.rowid, e.kb, e.id, e.title, e.type, e.tags, e.body, q.status, e.path, "
            f"bm25(entries_fts, {', '.join(str(w) for w in WEIGHTS)}) AS rank, {snip} AS snip "
            # CROSS JOIN keeps the full-text index as the outer loop: with a plain JOIN and a KB filter,
            # SQLite walks the KB's entries and runs the MATCH once per entry (seconds at 10,000 entries).
            "FROM entries_fts CROSS JOIN entries e ON e.rowid = entries_fts.rowid "
            "LEFT JOIN embed_queue q ON q.entry_rowid = e.rowid WHERE entries_fts MATCH ?"
        )
        params: list[Any] = [match]
        if kb is not None:
            sql += " AND e.kb = ?"
            params.append(kb)
        sql += " ORDER BY rank LIMIT ?"
        params.append(limit)
        try:
            return self.db.query(sql, params)
        except OperationalError as exc:  # the quoting above should make this unreachable
            raise ValidationError(f"cannot search for {query_preview(match)}: {exc}") from None

    def _snippets(self, match: str, rowids: list[int]) -> dict[int, str]:
        """FTS snippets of these rows for match."""
        if not rowids:
            return {}
        rows = self.db.query(
            f"SELECT rowid, {SNIPPET_SQL} FROM entries_fts "
            f"WHERE entries_fts MATCH ? AND rowid IN ({','.join('?' * len(rowids))})", [match, *rowids])
        return {r[0]: r[1] for r in rows}

    def _semantic_hits(self, query: str, kb: str | None, limit: int) -> list[tuple[int, float]]:
        vec = self.embedding.embed_query(query)
        return vectors.knn(self.db.conn, vec, model=self.embedding.model_id, limit=limit, kb=kb)

    def _semantic(self, query: str, kb: str | None, limit: int) -> list[dict[str, Any]]:
        hits = self._semantic_hits(query, kb, limit)
        rows = self._rows([h[0] for h in hits])
        return [self._result(rows[rowid], score=round(1.0 - dist, 4))
                for rowid, dist in hits if rowid in rows]

    def _hybrid(self, query: str, kb: str | None, limit: int) -> list[dict[str, Any]]:
        depth = min(LIMIT_MAX, max(limit * 3, 30))
        match, keyword = self._fts_ranked(query, kb, depth, snippets=False)
        semantic = self._semantic_hits(query, kb, depth)
        scores: dict[int, float] = {}
        for rank, row in enumerate(keyword):
            scores[row["rowid"]] = scores.get(row["rowid"], 0.0) + 1.0 / (RRF_K + rank + 1)
        for rank, (rowid, _dist) in enumerate(semantic):
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(scores.items(), key=lambda item: -item[1])[:limit]
        rows = self._rows([rowid for rowid, _ in best])
        matched = {row["rowid"] for row in keyword}
        snippets = self._snippets(match, [r for r, _ in best if r in matched])
        return [self._result(rows[rowid], score=round(score, 6), snippet=snippets.get(rowid))
                for rowid, score in best if rowid in rows]

    # -- helpers ------------------------------------------------------------------------

    def _rows(self, rowids: list[int]) -> dict[int, Any]:
        if not rowids:
            return {}
        rows = self.db.query(
            "SELECT e.rowid, e.kb, e.id, e.title, e.type, e.tags, e.body, q.status, e.path FROM entries e "
            f"LEFT JOIN embed_queue q ON q.entry_rowid = e.rowid WHERE e.rowid IN ({','.join('?' * len(rowids))})",
            rowids)
        return {r["rowid"]: r for r in rows}

    @staticmethod
    def _result(row: Any, *, score: float, snippet: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"], "kb": row["kb"], "path": row["path"], "title": row["title"],
                               "score": score,
                               "snippet": snippet if snippet else _snippet_from_body(row["body"]),
                               "type": row["type"], "tags": json.loads(row["tags"])}
        if row["status"] not in (None, "done"):
            out["embedding_status"] = row["status"]
        return out

    def _has_vectors(self) -> bool:
        return bool(self.db.query("SELECT 1 FROM chunks WHERE model = ? LIMIT 1", (self.embedding.model_id,)))

    def _model_notes(self) -> list[str]:
        others = vectors.models(self.db.conn, other_than=self.embedding.model_id)
        if not others:
            return []
        listing = ", ".join(f"{n} with {m}" for m, n in sorted(others.items()))
        return [f"the configured model is {self.embedding.model_id}, but entries have vectors of another model "
                f"({listing}); those are not searched: run `pyrite index embed --force` to re-embed"]


def query_preview(text: str) -> str:
    """A short, printable form of a query for messages."""
    return repr(text if len(text) <= 60 else text[:57] + "...")

