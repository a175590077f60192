"""The links and link_names tables: every statement on them, inside the caller's write transaction.

`links` holds each link found in an entry's body with its lookup key and the entry it resolves to (NULL:
unresolved). `link_names` holds the lowercased names an entry answers to (its file name and aliases), so a
link is resolved by an index lookup and a new, deleted or renamed entry finds the links that name it.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from pyrite.link_rules import Link, choose

_CHUNK = 400  # keys per IN (...) list, well under SQLite's parameter limit


def _names(entry_id: str, aliases: Sequence[str]) -> set[tuple[str, int, str]]:
    path = entry_id.lower()
    out = {(path.rsplit("/", 1)[-1], 0, path)}
    out.update((alias.lower(), 1, path) for alias in aliases)
    return out


def index_entries(conn: Any, kb: str, written: Sequence[tuple[int, str, Sequence[Link], Sequence[str]]]) -> None:
    """index_entry for many entries of kb at once, (rowid, id, links, aliases) each: names first, then
    every link resolved against them, so a batch costs a few set-wide statements rather than several per
    entry (index build), and ends as the entries one by one would."""
    rowids = [item[0] for item in written]
    old: dict[int, set[tuple[str, int, str]]] = {}
    for chunk in _chunks(rowids):
        for rowid, key, alias, lpath in conn.execute(
                f"SELECT entry_rowid, key, alias, lpath FROM link_names WHERE entry_rowid IN ({_marks(chunk)})", chunk):
            old.setdefault(rowid, set()).add((key, alias, lpath))
    renamed: set[str] = set()  # name keys gained or lost: links elsewhere naming them resolve again
    names: list[tuple[int, str, str, int, str]] = []
    for rowid, entry_id, _, aliases in written:
        new, before = _names(entry_id, aliases), old.get(rowid, set())
        if new == before:
            continue
        renamed.update(key for key, _, _ in new ^ before)
        if before:
            conn.execute("DELETE FROM link_names WHERE entry_rowid = ?", (rowid,))
        names += [(rowid, kb, key, alias, lpath) for key, alias, lpath in new]
    conn.executemany("INSERT INTO link_names (entry_rowid, kb, key, alias, lpath) VALUES (?, ?, ?, ?, ?)", names)
    # An entry indexed before always has a name (its file's), so one without has no links rows to drop.
    conn.executemany("DELETE FROM links WHERE source_rowid = ?", [(rowid,) for rowid in rowids if rowid in old])
    candidates = _candidates(conn, kb, {link.name_key for item in written for link in item[2]})
    conn.executemany(
        "INSERT INTO links (source_rowid, seq, kb, kind, target, fragment, alias, line, key, name_key, by_path, "
        "target_rowid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(rowid, seq, kb, link.kind, link.target, link.fragment, link.alias, link.line, link.key,
          link.name_key, int(link.by_path), choose(link, candidates.get(link.name_key, ())))
         for rowid, _, found, _ in written for seq, link in enumerate(found)])
    if renamed:
        _resolve_named(conn, kb, renamed)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    return (values[start:start + _CHUNK] for start in range(0, len(values), _CHUNK))


def _marks(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))


def forget_entry(conn: Any, rowid: int) -> None:
    """Drop an entry's links and names (before its row goes); links that named it are resolved again."""
    rows = conn.execute("SELECT kb, key FROM link_names WHERE entry_rowid = ?", (rowid,)).fetchall()
    conn.execute("DELETE FROM links WHERE source_rowid = ?", (rowid,))
    conn.execute("DELETE FROM link_names WHERE entry_rowid = ?", (rowid,))
    if rows:
        # Pointing elsewhere first: the entry's row may be deleted later in this transaction.
        conn.execute("UPDATE links SET target_rowid = NULL WHERE target_rowid = ?", (rowid,))
        _resolve_named(conn, rows[0][0], {r[1] for r in rows})


def forget_kb(conn: Any, kb: str) -> None:
    """Drop every link and name of a KB."""
    conn.execute("DELETE FROM links WHERE kb = ?", (kb,))
    conn.execute("DELETE FROM link_names WHERE kb = ?", (kb,))


def _candidates(conn: Any, kb: str, keys: Iterable[str]) -> dict[str, list[tuple[int, str, bool]]]:
    """name key -> [(entry rowid, lowercased id, is an alias)] of the entries answering to it."""
    out: dict[str, list[tuple[int, str, bool]]] = {}
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        for key, rowid, lpath, alias in conn.execute(
                f"SELECT key, entry_rowid, lpath, alias FROM link_names WHERE kb = ? AND key IN "
                f"({','.join('?' * len(chunk))})", (kb, *chunk)):
            out.setdefault(key, []).append((rowid, lpath, bool(alias)))
    return out


def _resolve_named(conn: Any, kb: str, keys: set[str]) -> None:
    """Resolve again every link of the KB whose name key is one of keys."""
    keys_list = list(keys)
    rows: list[Any] = []
    for start in range(0, len(keys_list), _CHUNK):
        chunk = keys_list[start:start + _CHUNK]
        rows += conn.execute(
            f"SELECT source_rowid, seq, key, by_path, target_rowid, name_key FROM links WHERE kb = ? AND name_key IN "
            f"({','.join('?' * len(chunk))})", (kb, *chunk)).fetchall()
    if not rows:
        return
    candidates = _candidates(conn, kb, keys)
    changed = []
    for source, seq, key, by_path, target, name_key in rows:
        probe = Link("", "", "", None, 0, 0, 0, key, bool(by_path))
        now = choose(probe, candidates.get(name_key, ()))
        if now != target:
            changed.append((now, source, seq))
    if changed:
        conn.executemany("UPDATE links SET target_rowid = ? WHERE source_rowid = ? AND seq = ?", changed)


_OUT_COLUMNS = "l.kind, l.target, l.fragment, l.alias, l.line, l.target_rowid, t.id"


def _link_dict(row: Any) -> dict[str, Any]:
    return {"kind": row[0], "target": row[1], "fragment": row[2], "alias": row[3], "line": row[4], "id": row[6]}


def outgoing(conn: Any, rowid: int) -> list[dict[str, Any]]:
    """The entry's links in body order: kind, target as written, fragment, alias, line, resolved id or None."""
    rows = conn.execute(
        f"SELECT {_OUT_COLUMNS} FROM links l LEFT JOIN entries t ON t.rowid = l.target_rowid "
        "WHERE l.source_rowid = ? ORDER BY l.seq", (rowid,)).fetchall()
    return [_link_dict(r) for r in rows]


def backlinks(conn: Any, rowid: int) -> list[dict[str, Any]]:
    """The links of other entries resolving to this one: source id, kind, target as written, alias, line."""
    rows = conn.execute(
        "SELECT s.id, l.kind, l.target, l.fragment, l.alias, l.line FROM links l JOIN entries s "
        "ON s.rowid = l.source_rowid WHERE l.target_rowid = ? AND l.source_rowid != ? ORDER BY s.id, l.seq",
        (rowid, rowid)).fetchall()
    return [{"source": r[0], "kind": r[1], "target": r[2], "fragment": r[3], "alias": r[4], "line": r[5]}
            for r in rows]


def unresolved(conn: Any, kb: str) -> list[dict[str, Any]]:
    """Every link of the KB that resolves to no entry, by source file, in body order."""
    rows = conn.execute(
        "SELECT s.id, s.path, l.kind, l.target, l.fragment, l.alias, l.line FROM links l "
        "JOIN entries s ON s.rowid = l.source_rowid WHERE l.kb = ? AND l.target_rowid IS NULL "
        "ORDER BY s.path, l.seq", (kb,)).fetchall()
    return [{"source": r[0], "path": r[1], "kind": r[2], "target": r[3], "fragment": r[4], "alias": r[5],
             "line": r[6]} for r in rows]


def linking_sources(conn: Any, rowid: int) -> dict[int, set[str]]:
    """source rowid -> the link keys in it that resolve to this entry (the entry's own links excluded)."""
    out: dict[int, set[str]] = {}
    for source, key in conn.execute(
            "SELECT source_rowid, key FROM links WHERE target_rowid = ? AND source_rowid != ?", (rowid, rowid)):
        out.setdefault(source, set()).add(key)
    return out


def keys_to_itself(conn: Any, rowid: int) -> set[str]:
    """The link keys in the entry's own file that resolve to the entry itself."""
    return {r[0] for r in conn.execute(
        "SELECT key FROM links WHERE source_rowid = ? AND target_rowid = ?", (rowid, rowid))}


def answers_to(conn: Any, kb: str, name_key: str, *, other_than: int) -> bool:
    """True if an entry other than other_than has this file name or alias (lowercased)."""
    return conn.execute("SELECT 1 FROM link_names WHERE kb = ? AND key = ? AND entry_rowid != ? LIMIT 1",
                        (kb, name_key, other_than)).fetchone() is not None
