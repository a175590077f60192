"""Keyword (FTS5 bm25), semantic (sqlite-vec KNN) and hybrid (reciprocal rank fusion) search."""

from __future__ import annotations

import json
import time
from typing import Any

from pyrite.errors import EmbeddingError, NotFoundError, ValidationError
from pyrite.names import check_kb_name
from pyrite.services.embedding_service import EmbeddingService
from pyrite.field_rules import SEARCH_LIMIT_MAX, SEARCH_MODES, check_text
from pyrite.storage import passages, queue, vectors
from pyrite.storage.db import Database, OperationalError, check_deadline

QUERY_MAX = 10_000
# What of a query reaches the embedding model: more than any model's window needs, and a remote call stays small.
EMBED_QUERY_MAX = 2_000
TERMS_MAX = 64
RRF_K = 60
WAIT_MAX = 300.0
# bm25 column weights: title, body, tags.
WEIGHTS = (10.0, 1.0, 5.0)
SNIPPET_TOKENS = passages.SNIPPET_TOKENS
# Matched words in bold. Only over entries without passages: their bodies are at most passages.LONG_BODY long.
SNIPPET_SQL = f"snippet(entries_fts, -1, '**', '**', '…', {SNIPPET_TOKENS})"
PREVIEW_CHARS = 160


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


def one_line(text: str) -> str:
    """text with every run of whitespace (newlines included) made one space: snippets are one line everywhere."""
    return " ".join(text.split())


def _preview(start: str, size: int = PREVIEW_CHARS) -> str:
    """A one-line preview from the start of a body (`start` holds its first 2 x size characters)."""
    text = one_line(start)
    return text if len(text) <= size and len(start) < 2 * size else text[:size].rsplit(" ", 1)[0] + "…"


class SearchService:
    """Search over one or all KBs; every mode answers with results or a clear error, never a crash.

    A search's index work has a time budget (setting search_timeout): past it, BusyError. Its cost does
    not grow with entry sizes: ranking reads no body, and snippets come from bounded text (see passages).
    """

    def __init__(self, db: Database, embedding: EmbeddingService) -> None:
        self.db = db
        self.embedding = embedding
        self.provider = embedding.provider

    @property
    def timeout(self) -> float:
        """The time budget of a search's index work, seconds (setting search_timeout)."""
        return self.provider.settings.search_timeout

    def search(self, query: str, *, kb: str | None = None, mode: str | None = None, limit: int = 10,
               wait: float | None = None, budget: float | None = None) -> dict[str, Any]:
        """Ranked results with score and snippet, plus how many entries still wait for embeddings.

        budget: seconds for the index work (default the search_timeout setting); past it, BusyError.
        The query's embedding and the `wait` for pending embeddings are not counted.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("the search query is empty")
        if len(query) > QUERY_MAX:
            raise ValidationError(f"the search query is longer than {QUERY_MAX} characters")
        check_text(query, "the search query")
        if kb is not None:
            check_kb_name(kb)
            if not self.db.query("SELECT 1 FROM kbs WHERE name = ?", (kb,)):
                raise NotFoundError(f"no KB named {kb!r} (see `pyrite kb list`)")
        if not isinstance(limit, int) or not 1 <= limit <= SEARCH_LIMIT_MAX:
            raise ValidationError(f"limit must be a whole number from 1 to {SEARCH_LIMIT_MAX}")
        if mode is not None and mode not in SEARCH_MODES:
            raise ValidationError(f"mode must be one of {', '.join(SEARCH_MODES)}")
        notes = self.wait_notes(kb, wait)
        semantic_ok = self.provider.enabled
        if mode is None:
            mode = "hybrid" if semantic_ok and self._has_vectors() else "keyword"
        elif mode != "keyword" and not semantic_ok:
            notes.append(f"semantic search is unavailable: {self.provider.why_disabled()}; "
                         "showing keyword results")
            mode = "keyword"
        if mode != "keyword":
            notes.extend(self._model_notes())
        seconds = self.timeout if budget is None else budget
        try:
            vec = self.provider.embed_query(query[:EMBED_QUERY_MAX]) if mode != "keyword" else None
            results, pending = self._run(query, kb, mode, limit, vec, seconds)
        except EmbeddingError as exc:
            notes.append(f"semantic search failed ({exc}); showing keyword results")
            mode = "keyword"
            results, pending = self._run(query, kb, mode, limit, None, seconds)
        if pending and mode != "keyword":
            notes.append(f"{pending} entries are not embedded yet and can only be found by keyword")
        return {"query": query, "mode": mode, "kb": kb, "results": results, "pending": pending, "notes": notes}

    def wait_notes(self, kb: str | None, wait: float | None) -> list[str]:
        """Wait up to `wait` seconds (checked by check_wait) for kb's pending embeddings; a note if some are left."""
        wait = check_wait(wait)
        if not wait:
            return []
        left = self.embedding.wait_for(kb, timeout=wait)
        if not left:
            return []
        return [f"{left} {'entry was' if left == 1 else 'entries were'} still waiting for embeddings after {wait:g}s"]

    def _run(self, query: str, kb: str | None, mode: str, limit: int, vec: Any, seconds: float
             ) -> tuple[list[dict[str, Any]], int]:
        """The results of one mode and the count of entries not embedded, within `seconds` of index work."""
        at = time.monotonic() + seconds
        message = (f"the search ran out of its time budget of {seconds:g}s (setting search_timeout, env "
                   "PYRITE_SEARCH_TIMEOUT); try again, or narrow it with rarer words or --kb")
        with self.db.deadline(at, message):
            if mode == "keyword":
                results = self._keyword(query, kb, limit, (at, message))
            elif mode == "semantic":
                results = self._semantic(vec, kb, limit)
            else:
                results = self._hybrid(query, vec, kb, limit, (at, message))
            pending = queue.outstanding(self.db.conn, kb) if self.provider.enabled else 0
        return results, pending

    # -- modes ---------------------------------------------------------------------

    def _keyword(self, query: str, kb: str | None, limit: int, deadline: tuple[float, str]) -> list[dict[str, Any]]:
        match, ranked = self._fts_ranked(query, kb, limit)
        rows = self._rows([rowid for rowid, _ in ranked])
        snippets = self._snippets(query, match, [rowid for rowid, _ in ranked], deadline)
        # Significant digits, not decimals: bm25 of a common word is tiny but still ranks.
        return [self._result(rows[rowid], score=float(f"{-rank:.6g}"), snippet=snippets.get(rowid))
                for rowid, rank in ranked if rowid in rows]

    def _fts_ranked(self, query: str, kb: str | None, limit: int) -> tuple[str, list[tuple[int, float]]]:
        """(rowid, bm25) of the entries having every word of query, or else any of them; and the MATCH used."""
        match = fts_query(query)
        if match is None:
            return "", []
        rows = self._fts(match, kb, limit)
        if not rows and " " in match:
            match = fts_query(query, any_term=True) or match
            rows = self._fts(match, kb, limit)
        return match, rows

    def _fts(self, match: str, kb: str | None, limit: int) -> list[tuple[int, float]]:
        # Only rowids and ranks: every column the sorter carries is read for every matching row, and a
        # snippet or body there cost as much per row as per result.
        rank = f"bm25(entries_fts, {', '.join(str(w) for w in WEIGHTS)})"
        if kb is None:
            sql = f"SELECT rowid, {rank} AS rank FROM entries_fts WHERE entries_fts MATCH ?"
            params: list[Any] = [match]
        else:
            # CROSS JOIN keeps the full-text index as the outer loop: with a plain JOIN and a KB filter,
            # SQLite walks the KB's entries and runs the MATCH once per entry (seconds at 10,000 entries).
            sql = (f"SELECT e.rowid, {rank} AS rank FROM entries_fts CROSS JOIN entries e "
                   "ON e.rowid = entries_fts.rowid WHERE entries_fts MATCH ? AND e.kb = ?")
            params = [match, kb]
        try:
            return [(r[0], r[1]) for r in self.db.query(sql + " ORDER BY rank LIMIT ?", [*params, limit])]
        except OperationalError as exc:
            if "interrupt" in str(exc):
                raise  # the deadline's: Database.deadline turns it into BusyError
            raise ValidationError(f"cannot search for {query_preview(match)}: {exc}") from None

    def _snippets(self, query: str, match: str, rowids: list[int], deadline: tuple[float, str]) -> dict[int, str]:
        """Snippets of these rows for match: a long entry's from its best passage (any word if none has all)."""
        if not rowids or not match:
            return {}
        conn = self.db.conn
        long = passages.long_entries(conn, rowids)
        short = [r for r in rowids if r not in long]
        out: dict[int, str] = {}
        if short:
            rows = self.db.query(
                f"SELECT rowid, {SNIPPET_SQL} FROM entries_fts "
                f"WHERE entries_fts MATCH ? AND rowid IN ({','.join('?' * len(short))})", [match, *short])
            out.update({r[0]: r[1] for r in rows})
        any_term = fts_query(query, any_term=True)
        for rowid in (r for r in rowids if r in long):
            check_deadline(*deadline)
            text = passages.best_snippet(conn, match, rowid)
            if text is None and any_term and any_term != match:
                text = passages.best_snippet(conn, any_term, rowid)
            if text is not None:
                out[rowid] = text
        return out

    def _semantic(self, vec: Any, kb: str | None, limit: int) -> list[dict[str, Any]]:
        hits = vectors.knn(self.db.conn, vec, model=self.provider.model_id, limit=limit, kb=kb)
        rows = self._rows([h[0] for h in hits])
        return [self._result(rows[rowid], score=round(1.0 - dist, 4))
                for rowid, dist in hits if rowid in rows]

    def _hybrid(self, query: str, vec: Any, kb: str | None, limit: int, deadline: tuple[float, str]
                ) -> list[dict[str, Any]]:
        depth = min(SEARCH_LIMIT_MAX, max(limit * 3, 30))
        match, keyword = self._fts_ranked(query, kb, depth)
        semantic = vectors.knn(self.db.conn, vec, model=self.provider.model_id, limit=depth, kb=kb)
        scores: dict[int, float] = {}
        for rank, (rowid, _bm25) in enumerate(keyword):
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        for rank, (rowid, _dist) in enumerate(semantic):
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(scores.items(), key=lambda item: -item[1])[:limit]
        rows = self._rows([rowid for rowid, _ in best])
        matched = {rowid for rowid, _ in keyword}
        snippets = self._snippets(query, match, [r for r, _ in best if r in matched], deadline)
        return [self._result(rows[rowid], score=round(score, 6), snippet=snippets.get(rowid))
                for rowid, score in best if rowid in rows]

    # -- helpers ------------------------------------------------------------------------

    def _rows(self, rowids: list[int]) -> dict[int, Any]:
        """The result fields of these entries, with the start of the body (never the whole body) as `preview`."""
        if not rowids:
            return {}
        rows = self.db.query(
            f"SELECT e.rowid, e.kb, e.id, e.title, e.type, e.tags, e.path, "
            f"{passages.preview_sql('e', 2 * PREVIEW_CHARS)} AS preview FROM entries e "
            f"WHERE e.rowid IN ({','.join('?' * len(rowids))})", rowids)
        states = queue.states(self.db.conn, rowids)
        return {r["rowid"]: {**dict(r), "status": states.get(r["rowid"], (None,))[0]} for r in rows}

    @staticmethod
    def _result(row: Any, *, score: float, snippet: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"], "kb": row["kb"], "path": row["path"], "title": row["title"],
                               "score": score,
                               "snippet": one_line(snippet) if snippet else _preview(row["preview"]),
                               "type": row["type"], "tags": json.loads(row["tags"])}
        if row["status"] not in (None, "done"):
            out["embedding_status"] = row["status"]
        return out

    def _has_vectors(self) -> bool:
        return bool(self.db.query("SELECT 1 FROM chunks WHERE model = ? LIMIT 1", (self.provider.model_id,)))

    def _model_notes(self) -> list[str]:
        others = vectors.models(self.db.conn, other_than=self.provider.model_id)
        if not others:
            return []
        listing = ", ".join(f"{n} with {m}" for m, n in sorted(others.items()))
        return [f"the configured model is {self.provider.model_id}, but entries have vectors of another model "
                f"({listing}); those are not searched: run `pyrite index embed --force` to re-embed"]


def query_preview(text: str) -> str:
    """A short, printable form of a query for messages."""
    return repr(text if len(text) <= 60 else text[:57] + "...")

