"""Named schema migrations, applied in order, each once, inside the caller's write transaction."""

from __future__ import annotations

from typing import Any, Callable

try:
    from pysqlite3.dbapi2 import complete_statement  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    from sqlite3 import complete_statement

MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = []


def migration(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register fn as the next migration, named after the function."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def run_script(conn: Any, script: str) -> None:
    """Execute each statement of script in the open transaction (executescript would commit it)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if pending.strip() and complete_statement(pending):
            conn.execute(pending)
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending[:80]!r}")


@migration
def m001_core(conn: Any) -> None:
    run_script(conn, 
        """
        CREATE TABLE kbs (
            name TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            created TEXT NOT NULL
        );
        -- AUTOINCREMENT: a deleted entry's rowid is never reused, so a late
        -- worker can never attach vectors to a different entry.
        CREATE TABLE entries (
            rowid INTEGER PRIMARY KEY AUTOINCREMENT,
            kb TEXT NOT NULL REFERENCES kbs(name) ON DELETE CASCADE,
            id TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            type TEXT NOT NULL DEFAULT 'note',
            tags TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            path TEXT NOT NULL,
            file_hash TEXT NOT NULL,
            file_mtime_ns INTEGER NOT NULL,
            file_size INTEGER NOT NULL,
            UNIQUE (kb, id)
        );
        CREATE VIRTUAL TABLE entries_fts USING fts5(
            title, body, tags,
            content='entries', content_rowid='rowid',
            tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER entries_ai AFTER INSERT ON entries BEGIN
            INSERT INTO entries_fts(rowid, title, body, tags)
            VALUES (new.rowid, new.title, new.body, new.tags);
        END;
        CREATE TRIGGER entries_ad AFTER DELETE ON entries BEGIN
            INSERT INTO entries_fts(entries_fts, rowid, title, body, tags)
            VALUES ('delete', old.rowid, old.title, old.body, old.tags);
        END;
        CREATE TRIGGER entries_au AFTER UPDATE OF title, body, tags ON entries BEGIN
            INSERT INTO entries_fts(entries_fts, rowid, title, body, tags)
            VALUES ('delete', old.rowid, old.title, old.body, old.tags);
            INSERT INTO entries_fts(rowid, title, body, tags)
            VALUES (new.rowid, new.title, new.body, new.tags);
        END;

        -- One row per entry: its embedding status (see docs/embedding.md).
        CREATE TABLE embed_queue (
            entry_rowid INTEGER PRIMARY KEY REFERENCES entries(rowid) ON DELETE CASCADE,
            kb TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'done', 'failed', 'skipped')),
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            model TEXT,
            queued_at REAL NOT NULL,
            run_after REAL NOT NULL,
            lease_owner TEXT,
            lease_expires_at REAL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX embed_queue_pending ON embed_queue (queued_at) WHERE status = 'pending';
        CREATE INDEX embed_queue_leases ON embed_queue (lease_expires_at) WHERE status = 'processing';
        CREATE INDEX embed_queue_kb_status ON embed_queue (kb, status);

        -- A chunk of an entry's text and the model that embedded it; its id is the
        -- rowid of its vector in the vec0 table of its dimension.
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            entry_rowid INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL
        );
        CREATE INDEX chunks_entry ON chunks (entry_rowid);
        CREATE INDEX chunks_model ON chunks (model);

        CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            kind TEXT NOT NULL,
            started REAL NOT NULL,
            heartbeat REAL NOT NULL,
            model TEXT
        );

        -- Append-only log that front ends tail: monotonic id, pruned by age.
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            type TEXT NOT NULL,
            kb TEXT,
            entry_id TEXT,
            model TEXT,
            error TEXT,
            created REAL NOT NULL
        );
        CREATE INDEX events_created ON events (created);
        """
    )


@migration
def m002_worker_errors(conn: Any) -> None:
    # A worker publishes why it is paused, so every process's status can show it.
    conn.execute("ALTER TABLE workers ADD COLUMN error TEXT")
    conn.execute("ALTER TABLE workers ADD COLUMN paused_until REAL")


@migration
def m003_vector_cells(conn: Any) -> None:
    # Vectors move to vec0 tables partitioned by KB and k-means cell (see storage/cells.py). Each chunk
    # keeps its exact vector too, so cells can be retrained and vectors moved without the model.
    run_script(conn,
        """
        ALTER TABLE chunks ADD COLUMN kb TEXT;
        ALTER TABLE chunks ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE chunks ADD COLUMN vector BLOB;
        UPDATE chunks SET kb = (SELECT kb FROM entries WHERE entries.rowid = chunks.entry_rowid);
        CREATE INDEX chunks_cells ON chunks (dim, kb, gen);
        CREATE TABLE vec_index (
            dim INTEGER NOT NULL,
            kb TEXT NOT NULL,
            gen INTEGER NOT NULL,
            prev_gen INTEGER,
            cells INTEGER NOT NULL,
            trained_vectors INTEGER NOT NULL,
            token TEXT NOT NULL,
            prev_token TEXT NOT NULL,
            PRIMARY KEY (dim, kb)
        );
        -- AUTOINCREMENT: a generation number is never reused, so cell ids stay unique.
        CREATE TABLE vec_generations (
            gen INTEGER PRIMARY KEY AUTOINCREMENT,
            dim INTEGER NOT NULL,
            kb TEXT NOT NULL
        );
        CREATE TABLE vec_centroids (
            gen INTEGER NOT NULL,
            cell INTEGER NOT NULL,
            centroid BLOB NOT NULL,
            PRIMARY KEY (gen, cell)
        );
        """
    )
    old = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'vec_f[0-9]*'")
        if name[len("vec_f"):].isdigit()]
    for name in old:
        dim = int(name[len("vec_f"):])
        try:
            rows = conn.execute(f"SELECT id, kb, model, embedding, entry_rowid FROM {name}").fetchall()
        except Exception:  # no sqlite-vec in this process: those vectors are re-embedded later
            conn.execute("UPDATE embed_queue SET status = 'pending', attempts = 0, run_after = 0, model = NULL "
                         "WHERE entry_rowid IN (SELECT entry_rowid FROM chunks WHERE dim = ?)", (dim,))
            conn.execute("DELETE FROM chunks WHERE dim = ?", (dim,))
            continue
        # The exact copies in chunks are what m005 builds the vec0 table from.
        for chunk_id, kb, model, embedding, entry_rowid in rows:
            conn.execute("UPDATE chunks SET vector = ?, kb = ? WHERE id = ?", (embedding, kb, chunk_id))
        conn.execute(f"DROP TABLE {name}")


@migration
def m004_lean_queue_indexes(conn: Any) -> None:
    # Every status change paid for an index on (kb, status): ~35% of a claim's UPDATE. Counting
    # outstanding work uses the partial indexes instead; failed rows get a partial index of their own.
    run_script(conn,
        """
        DROP INDEX IF EXISTS embed_queue_kb_status;
        CREATE INDEX embed_queue_failed ON embed_queue (updated_at) WHERE status = 'failed';
        """
    )


@migration
def m005_vector_model_keys(conn: Any) -> None:
    # vec0 tables name the model by a small integer: a text value over 12 bytes is compared row by row
    # through a lookup, which made each scanned vector 2-4 times dearer. The tables are rebuilt from the
    # exact vectors in chunks; the worker trains their cells again.
    conn.execute("CREATE TABLE vec_models (id INTEGER PRIMARY KEY, model TEXT NOT NULL UNIQUE)")
    _rebuild_vector_tables(conn)


@migration
def m006_vector_entry_metadata(conn: Any) -> None:
    # The entry of each vector becomes a metadata column instead of an auxiliary one, which sqlite-vec
    # leaks memory on at every insert. Rebuilt from the exact vectors as in m005.
    _rebuild_vector_tables(conn)


@migration
def m007_passages(conn: Any) -> None:
    # Long bodies also get bounded passages, so a snippet never tokenizes a whole body (storage/passages.py).
    # The rows of existing long entries are cut here by a frozen copy of the splitter: this migration must
    # do the same thing whatever later versions change.
    run_script(conn,
        """
        CREATE TABLE passages (
            rowid INTEGER PRIMARY KEY,  -- entry rowid << 16 | passage number
            body TEXT NOT NULL
        );
        CREATE VIRTUAL TABLE passages_fts USING fts5(
            body,
            content='passages', content_rowid='rowid',
            tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN
            INSERT INTO passages_fts(rowid, body) VALUES (new.rowid, new.body);
        END;
        CREATE TRIGGER passages_ad AFTER DELETE ON passages BEGIN
            INSERT INTO passages_fts(passages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
        END;
        """
    )
    long = [r[0] for r in conn.execute("SELECT rowid FROM entries WHERE length(body) > 4096")]
    for rowid in long:  # one body in memory at a time
        body = conn.execute("SELECT body FROM entries WHERE rowid = ?", (rowid,)).fetchone()[0]
        conn.executemany("INSERT INTO passages (rowid, body) VALUES (?, ?)",
                         [((rowid << 16) + n, text) for n, text in enumerate(_m007_split(body))])


def _m007_split(body: str) -> list[str]:
    """Frozen copy of passages.split as of m007 (bodies over 4,096 characters, ~1,536-character pieces)."""
    size = max(1536, -(-len(body) // 65536))
    out: list[str] = []
    start = 0
    while start < len(body):
        end = start + size
        if end < len(body):
            low = start + size // 2
            cut = body.rfind("\n\n", low, end)
            if cut < 0:
                cut = max(body.rfind(" ", low, end), body.rfind("\n", low, end), body.rfind("\t", low, end))
            end = cut + 1 if cut >= 0 else end
        if body[start:end].strip():
            out.append(body[start:end])
        start = end
    return out


@migration
def m008_tree_names(conn: Any) -> None:
    # Issue 13: ids are paths, and a KB names new files after titles or slugs. KBs made before keep the
    # slug names they were made with; new KBs are given their setting explicitly by create_kb. The
    # NOCASE index finds an id that differs from a new one only in (ASCII) case without a scan.
    run_script(conn,
        """
        ALTER TABLE kbs ADD COLUMN names TEXT NOT NULL DEFAULT 'slug';
        CREATE INDEX entries_id_nocase ON entries (kb, id COLLATE NOCASE);
        """
    )


@migration
def m009_links(conn: Any) -> None:
    # Links found in bodies and the names entries answer to (see storage/links.py); events of a move name
    # the old id. Existing rows get no links here (parsing a body is not SQL): their file stamps are
    # cleared so the next `index sync` or `index build` reads every file again (the text is unchanged,
    # so nothing is re-embedded).
    run_script(conn,
        """
        CREATE TABLE links (
            source_rowid INTEGER NOT NULL REFERENCES entries(rowid) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kb TEXT NOT NULL,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            fragment TEXT NOT NULL DEFAULT '',
            alias TEXT,
            line INTEGER NOT NULL,
            key TEXT NOT NULL,
            name_key TEXT NOT NULL,
            by_path INTEGER NOT NULL,
            target_rowid INTEGER REFERENCES entries(rowid) ON DELETE SET NULL,
            PRIMARY KEY (source_rowid, seq)
        ) WITHOUT ROWID;
        CREATE INDEX links_target ON links (target_rowid);
        CREATE INDEX links_name ON links (kb, name_key);
        CREATE TABLE link_names (
            entry_rowid INTEGER NOT NULL REFERENCES entries(rowid) ON DELETE CASCADE,
            kb TEXT NOT NULL,
            key TEXT NOT NULL,
            alias INTEGER NOT NULL,
            lpath TEXT NOT NULL,
            PRIMARY KEY (entry_rowid, key, alias)
        ) WITHOUT ROWID;
        CREATE INDEX link_names_key ON link_names (kb, key);
        ALTER TABLE events ADD COLUMN old_id TEXT;
        UPDATE entries SET file_hash = '', file_mtime_ns = -1;
        """
    )


def _rebuild_vector_tables(conn: Any) -> None:
    """Recreate every vec0 table from the exact vectors in chunks (re-queue them without sqlite-vec)."""
    from pyrite.storage import vectors

    dims = [r[0] for r in conn.execute("SELECT DISTINCT dim FROM chunks WHERE vector IS NOT NULL")]
    for dim in dims:
        try:
            vectors.rebuild_table(conn, dim)
        except Exception:  # no sqlite-vec in this process: those vectors are re-embedded later
            conn.execute("UPDATE embed_queue SET status = 'pending', attempts = 0, run_after = 0, model = NULL "
                         "WHERE entry_rowid IN (SELECT entry_rowid FROM chunks WHERE dim = ?)", (dim,))
            conn.execute("DELETE FROM chunks WHERE dim = ?", (dim,))


def schema_problem(conn: Any) -> str | None:
    """Why the database on conn is not a pyrite index this version can use, or None; only reads it."""
    tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    if not tables:
        return None  # a new, empty database
    foreign = f"it holds another program's tables ({', '.join(tables[:6])})"
    if "migrations" not in tables:
        return foreign
    try:
        done = {r[0] for r in conn.execute("SELECT name FROM migrations")}
    except Exception:  # a table of that name with other columns
        return foreign
    known = {name for name, _ in MIGRATIONS}
    if not done & known:
        return foreign
    newer = sorted(done - known)
    if newer:
        return (f"it was written by a newer pyrite (schema steps this version does not know: "
                f"{', '.join(newer[:3])}); upgrade pyrite to use it")
    return None


def migrate(conn: Any) -> list[str]:
    """Apply the migrations not yet recorded; return their names. Call inside a write transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    applied: list[str] = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        fn(conn)
        conn.execute("INSERT INTO migrations (name, applied) VALUES (?, julianday('now'))", (name,))
        applied.append(name)
    return applied
