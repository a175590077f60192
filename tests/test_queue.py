"""The embed_queue contract (docs: /DESIGN.md "The queue contract") on a real SQLite index.

These tests drive the queue functions in pyrite.storage.queue directly, and the
write path of KBService, with the deterministic hash embedder.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.models import EMBED_STATUSES
from pyrite.models import text_hash
from pyrite.storage import events, queue
from pyrite.storage.db import IntegrityError

MODEL = "hash:hash-384"


# -- helpers --------------------------------------------------------------------------


def rowid_of(core: Pyrite, entry_id: str, kb: str = "notes") -> int:
    return core.db.query("SELECT rowid FROM entries WHERE kb = ? AND id = ?", (kb, entry_id))[0][0]


def qrow(core: Pyrite, rowid: int) -> dict[str, Any] | None:
    rows = core.db.query("SELECT * FROM embed_queue WHERE entry_rowid = ?", (rowid,))
    return dict(rows[0]) if rows else None


def n_chunks(core: Pyrite, rowid: int) -> int:
    return core.db.query("SELECT count(*) FROM chunks WHERE entry_rowid = ?", (rowid,))[0][0]


def n_vectors(core: Pyrite, rowid: int) -> int:
    if not core.db.query("SELECT 1 FROM sqlite_master WHERE name = 'vec_cells384'"):
        return 0
    return core.db.query("SELECT count(*) FROM vec_cells384 WHERE entry_rowid = ?", (rowid,))[0][0]


def statuses(core: Pyrite) -> dict[str, int]:
    return queue.counts(core.db.conn)


def pending_entries(core: Pyrite, n: int, kb: str = "notes", prefix: str = "item") -> list[int]:
    """n entries written with embed=False: each has a pending queue row."""
    return [rowid_of(core, core.kbs.create_entry(kb, f"{prefix} {i}", f"body of {prefix} {i}", embed=False).id, kb)
            for i in range(n)]


def claim(core: Pyrite, owner: str, *, now: float, limit: int = 100, lease: float = 60.0,
          kb: str | None = None) -> list[queue.Claim]:
    with core.db.write() as conn:
        return queue.claim(conn, owner, limit=limit, lease=lease, now=now, kb=kb)


# -- atomic with the write ------------------------------------------------------------


def test_every_write_leaves_exactly_one_queue_row(core: Pyrite) -> None:
    a = core.kbs.create_entry("notes", "Alpha", "first text", embed=False)
    b = core.kbs.create_entry("notes", "Beta", "second text")
    core.kbs.update_entry("notes", a.id, body="first text, edited", embed=False)
    core.kbs.update_entry("notes", a.id, body="first text, edited again", embed=False)
    core.kbs.update_entry("notes", b.id, body="second text, edited")
    rows = core.db.query("SELECT q.entry_rowid, e.id FROM embed_queue q JOIN entries e ON e.rowid = q.entry_rowid")
    assert sorted(r[1] for r in rows) == ["alpha", "beta"]
    assert core.db.query("SELECT count(*) FROM entries")[0][0] == 2
    # The row tracks the latest text of each entry.
    for entry_id in ("alpha", "beta"):
        entry = core.kbs.get_entry("notes", entry_id)
        assert qrow(core, rowid_of(core, entry_id))["content_hash"] == text_hash(entry.title, entry.body)


def test_queue_row_is_written_in_the_entry_transaction(core: Pyrite, monkeypatch: pytest.MonkeyPatch) -> None:
    """If anything later in the write's transaction fails, neither the entry nor its queue row exist."""
    seen: dict[str, Any] = {}

    def boom(conn: Any, type: str, **kwargs: Any) -> int:
        # Runs after the entries row and the queue upsert, inside the same transaction.
        rowid = conn.execute("SELECT rowid FROM entries WHERE id = 'doomed'").fetchone()[0]
        seen["queued_inside"] = conn.execute(
            "SELECT status FROM embed_queue WHERE entry_rowid = ?", (rowid,)).fetchone()[0]
        raise RuntimeError("disk full, say")

    monkeypatch.setattr("pyrite.services.kb_service.events.append", boom)
    with pytest.raises(RuntimeError):
        core.kbs.create_entry("notes", "Doomed", "some text")
    assert seen["queued_inside"] == "pending"
    assert core.db.query("SELECT count(*) FROM entries")[0][0] == 0
    assert core.db.query("SELECT count(*) FROM embed_queue")[0][0] == 0
    assert not (core.settings.kbs_dir / "notes" / "doomed.md").exists()


def test_failed_queue_upsert_rolls_back_the_entry(core: Pyrite, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_upsert(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("queue write failed")

    monkeypatch.setattr("pyrite.services.kb_service.queue.upsert", broken_upsert)
    with pytest.raises(RuntimeError):
        core.kbs.create_entry("notes", "Lost", "some text")
    assert core.db.query("SELECT count(*) FROM entries")[0][0] == 0
    assert core.db.query("SELECT count(*) FROM events")[0][0] == 0


# -- skip unchanged -------------------------------------------------------------------


def test_unchanged_text_with_same_model_queues_nothing(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Stable", "the same words", tags=["a"])
    rowid = rowid_of(core, entry.id)
    before = qrow(core, rowid)
    assert before["status"] == "done" and before["model"] == MODEL
    chunk_ids = core.db.query("SELECT id FROM chunks WHERE entry_rowid = ?", (rowid,))
    completes = core.db.query("SELECT count(*) FROM events WHERE type = 'embed_complete'")[0][0]

    # Tags, type and meta are not part of the embedded text; the same body is the same text.
    after = core.kbs.update_entry("notes", entry.id, tags=["b", "c"], type="memo", meta={"k": "v"})
    after = core.kbs.update_entry("notes", entry.id, body="the same words")
    assert after.embedding_status == "done"
    row = qrow(core, rowid)
    assert row == before  # not even touched: same queued_at, attempts, updated_at
    assert core.db.query("SELECT id FROM chunks WHERE entry_rowid = ?", (rowid,)) == chunk_ids
    assert core.db.query("SELECT count(*) FROM events WHERE type = 'embed_complete'")[0][0] == completes


def test_unchanged_text_with_another_model_is_queued(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Stable", "the same words")
    rowid = rowid_of(core, entry.id)
    h = qrow(core, rowid)["content_hash"]
    with core.db.write() as conn:
        assert queue.upsert(conn, rowid, "notes", h, blank=False, model=MODEL, now=time.time()) == "done"
        assert queue.upsert(conn, rowid, "notes", h, blank=False, model="hash:other", now=time.time()) == "pending"
    assert qrow(core, rowid)["status"] == "pending"


def test_same_text_while_pending_or_processing_keeps_the_work_in_hand(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    h = qrow(core, rowid)["content_hash"]
    t = time.time() + 1
    (item,) = claim(core, "w1", now=t)
    with core.db.write() as conn:
        assert queue.upsert(conn, rowid, "notes", h, blank=False, model=MODEL, now=t) == "processing"
        assert queue.complete(conn, item, model=MODEL, now=t)


# -- supersede ------------------------------------------------------------------------


def test_newer_write_supersedes_pending(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Draft", "version one", embed=False)
    rowid = rowid_of(core, entry.id)
    first = qrow(core, rowid)
    core.kbs.update_entry("notes", entry.id, body="version two", embed=False)
    second = qrow(core, rowid)
    assert second["status"] == "pending"
    assert second["content_hash"] != first["content_hash"]
    assert second["content_hash"] == text_hash("Draft", "version two")
    assert core.db.query("SELECT count(*) FROM embed_queue")[0][0] == 1


def test_newer_write_supersedes_processing_and_late_complete_is_discarded(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Draft", "version one", embed=False)
    rowid = rowid_of(core, entry.id)
    t = time.time() + 1
    (old,) = claim(core, "w-old", now=t)
    assert qrow(core, rowid)["status"] == "processing"
    assert qrow(core, rowid)["lease_owner"] == "w-old"

    core.kbs.update_entry("notes", entry.id, body="version two", embed=False)
    row = qrow(core, rowid)
    assert row["status"] == "pending"
    assert row["lease_owner"] is None and row["lease_expires_at"] is None
    assert row["attempts"] == 0 and row["content_hash"] != old.content_hash

    # The worker that embedded "version one" comes back late.
    with core.db.write() as conn:
        assert queue.complete(conn, old, model=MODEL, now=t + 1) is False
        assert queue.fail(conn, old, "late", max_attempts=3, retry_at=t + 5, now=t + 1) is None
        assert queue.skip(conn, old, now=t + 1) is False
        assert queue.release(conn, [old], now=t + 1) == 0
    assert qrow(core, rowid) == row
    # Through the service too: the old text is never stored.
    result = core.embedding.batches.process([old], now=t + 1)
    assert result.done == 0 and result.discarded == 1
    assert n_chunks(core, rowid) == 0 and n_vectors(core, rowid) == 0
    assert qrow(core, rowid)["status"] == "pending"


def test_complete_with_wrong_owner_or_hash_is_refused(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    t = time.time() + 1
    (item,) = claim(core, "w1", now=t)
    impostor = queue.Claim(item.entry_rowid, item.kb, item.content_hash, item.attempts, "w2")
    stale = queue.Claim(item.entry_rowid, item.kb, "0" * 64, item.attempts, "w1")
    with core.db.write() as conn:
        assert queue.complete(conn, impostor, model=MODEL, now=t) is False
        assert queue.complete(conn, stale, model=MODEL, now=t) is False
    assert qrow(core, rowid)["status"] == "processing"
    with core.db.write() as conn:
        assert queue.complete(conn, item, model=MODEL, now=t) is True
    row = qrow(core, rowid)
    assert row["status"] == "done" and row["model"] == MODEL and row["lease_owner"] is None


# -- blank text and deletes -------------------------------------------------------------


def test_blank_text_is_skipped_and_its_vectors_removed(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Has text", "words to embed " * 300)
    rowid = rowid_of(core, entry.id)
    assert n_chunks(core, rowid) > 1 and n_vectors(core, rowid) == n_chunks(core, rowid)

    # No front end can produce a blank text (the title is required), so drive the
    # index write with one directly: what a file whose text became blank would give.
    blank = core.kbs.get_entry("notes", entry.id)
    blank.title, blank.body = "", "   \n"
    path = core.settings.kbs_dir / "notes" / blank.path
    data = path.read_bytes()
    with core.db.write() as conn:
        core.kbs._put_row(conn, blank, data, path.stat(), "entry_updated")
    row = qrow(core, rowid)
    assert row["status"] == "skipped"
    assert n_chunks(core, rowid) == 0 and n_vectors(core, rowid) == 0
    # Skipped work is never claimed.
    assert claim(core, "w", now=time.time() + 100) == []


def test_upsert_of_blank_text_returns_skipped(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    with core.db.write() as conn:
        status = queue.upsert(conn, rowid, "notes", text_hash("", ""), blank=True, model=MODEL, now=time.time())
    assert status == "skipped"
    assert qrow(core, rowid)["status"] == "skipped"


def test_delete_removes_queue_row_chunks_and_vectors(core: Pyrite) -> None:
    keep = core.kbs.create_entry("notes", "Keeper", "stays " * 300)
    gone = core.kbs.create_entry("notes", "Goner", "leaves " * 300)
    keep_id, gone_id = rowid_of(core, keep.id), rowid_of(core, gone.id)
    assert n_chunks(core, gone_id) > 1 and n_vectors(core, gone_id) == n_chunks(core, gone_id)
    kept_chunks = n_chunks(core, keep_id)

    core.kbs.delete_entry("notes", gone.id)
    assert qrow(core, gone_id) is None
    assert n_chunks(core, gone_id) == 0 and n_vectors(core, gone_id) == 0
    assert n_chunks(core, keep_id) == kept_chunks and n_vectors(core, keep_id) == kept_chunks
    assert qrow(core, keep_id)["status"] == "done"


def test_delete_of_pending_and_processing_entries(core: Pyrite) -> None:
    a, b = pending_entries(core, 2)
    t = time.time() + 1
    (item,) = claim(core, "w1", now=t, limit=1)
    assert item.entry_rowid == a
    core.kbs.delete_entry("notes", "item-0")
    core.kbs.delete_entry("notes", "item-1")
    assert core.db.query("SELECT count(*) FROM embed_queue")[0][0] == 0
    result = core.embedding.batches.process([item], now=t)
    assert result.done == 0 and result.discarded == 1
    assert core.db.query("SELECT count(*) FROM chunks")[0][0] == 0


# -- claims ---------------------------------------------------------------------------


def test_claim_takes_pending_and_due_and_counts_the_attempt(core: Pyrite) -> None:
    rowids = pending_entries(core, 3)
    t = time.time() + 1
    with core.db.write() as conn:  # the last one is backing off until t + 50
        conn.execute("UPDATE embed_queue SET run_after = ? WHERE entry_rowid = ?", (t + 50, rowids[2]))
    items = claim(core, "w1", now=t, lease=300)
    assert sorted(i.entry_rowid for i in items) == rowids[:2]
    for i in items:
        assert i.attempts == 1 and i.owner == "w1" and i.kb == "notes"
        row = qrow(core, i.entry_rowid)
        assert row["status"] == "processing" and row["lease_owner"] == "w1"
        assert row["lease_expires_at"] == pytest.approx(t + 300)
        assert row["attempts"] == 1
    assert qrow(core, rowids[2])["status"] == "pending"
    # Nothing else is due; a second claim gets nothing, not even the items in hand.
    assert claim(core, "w2", now=t + 10) == []
    # Once due, the backing-off item is claimable.
    (late,) = claim(core, "w2", now=t + 50)
    assert late.entry_rowid == rowids[2]


def test_claim_never_takes_a_live_lease_but_takes_an_expired_one(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    t = time.time() + 1
    (first,) = claim(core, "w1", now=t, lease=10)
    assert claim(core, "w2", now=t + 9.9, lease=10) == []
    assert qrow(core, rowid)["lease_owner"] == "w1"
    # w1 died: its lease runs out and w2 gets the item, with the attempt counted again.
    (second,) = claim(core, "w2", now=t + 10.5, lease=10)
    assert second.entry_rowid == rowid and second.attempts == 2 and second.owner == "w2"
    assert qrow(core, rowid)["lease_owner"] == "w2"
    with core.db.write() as conn:  # the dead worker's late result is refused
        assert queue.complete(conn, first, model=MODEL, now=t + 11) is False
        assert queue.complete(conn, second, model=MODEL, now=t + 11) is True


def test_renew_keeps_a_live_lease_out_of_reach(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    t = time.time() + 1
    claim(core, "w1", now=t, lease=10)
    with core.db.write() as conn:
        assert queue.renew(conn, "w1", lease=10, now=t + 8) == 1
        assert queue.renew(conn, "w2", lease=10, now=t + 8) == 0
    assert claim(core, "w2", now=t + 15, lease=10) == []
    assert len(claim(core, "w2", now=t + 18.5, lease=10)) == 1


def test_claim_orders_by_queued_at_and_respects_limit(core: Pyrite) -> None:
    rowids = pending_entries(core, 6)
    base = time.time() - 100
    # Queue order deliberately differs from rowid order.
    order = [rowids[3], rowids[0], rowids[5], rowids[1], rowids[4], rowids[2]]
    with core.db.write() as conn:
        for n, r in enumerate(order):
            conn.execute("UPDATE embed_queue SET queued_at = ? WHERE entry_rowid = ?", (base + n, r))
    t = time.time() + 1
    got: list[int] = []
    for owner in ("a", "b", "c"):
        items = claim(core, owner, now=t, limit=2)
        assert len(items) == 2
        got.extend(sorted((qrow(core, i.entry_rowid)["queued_at"], i.entry_rowid) for i in items))
    assert [r for _, r in got] == order
    assert claim(core, "d", now=t, limit=2) == []


def test_claim_orders_expired_leases_with_pending_by_queued_at(core: Pyrite) -> None:
    a, b, c = pending_entries(core, 3)
    base = time.time() - 100
    with core.db.write() as conn:  # queue order c, a, b: not rowid order
        for n, r in enumerate((c, a, b)):
            conn.execute("UPDATE embed_queue SET queued_at = ? WHERE entry_rowid = ?", (base + n, r))
    t = time.time() + 1
    (dead,) = claim(core, "dead", now=t, limit=1, lease=5)
    assert dead.entry_rowid == c
    # The dead worker's item was queued first: it comes before the pending ones.
    assert [i.entry_rowid for i in claim(core, "w", now=t + 6, limit=1)] == [c]
    assert [i.entry_rowid for i in claim(core, "w", now=t + 6, limit=1)] == [a]


def test_claim_respects_kb(core: Pyrite) -> None:
    core.kbs.create_kb("other")
    mine = pending_entries(core, 3, kb="notes")
    theirs = pending_entries(core, 3, kb="other")
    t = time.time() + 1
    items = claim(core, "w", now=t, kb="other")
    assert sorted(i.entry_rowid for i in items) == theirs
    assert all(i.kb == "other" for i in items)
    assert all(qrow(core, r)["status"] == "pending" for r in mine)
    assert sorted(i.entry_rowid for i in claim(core, "w", now=t, kb="notes")) == mine


def test_service_claim_uses_the_batch_size(pyrite_home: Any) -> None:
    p = Pyrite(load_settings(embed_batch_size=4))
    try:
        p.kbs.create_kb("notes")
        pending_entries(p, 10)
        assert len(p.embedding.claim("w", now=time.time() + 1)) == 4
    finally:
        p.close()


def test_status_check_constraint_rejects_unknown_status(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    with pytest.raises(IntegrityError):
        with core.db.write() as conn:
            conn.execute("UPDATE embed_queue SET status = 'bogus' WHERE entry_rowid = ?", (rowid,))
    assert qrow(core, rowid)["status"] == "pending"
    with pytest.raises(ValueError):
        with core.db.write() as conn:
            queue.requeue(conn, now=time.time(), statuses=("bogus",))


def test_counts_has_all_five_statuses(core: Pyrite) -> None:
    pending_entries(core, 2)
    assert set(statuses(core)) == set(EMBED_STATUSES) == {"pending", "processing", "done", "failed", "skipped"}
    assert statuses(core) == {"pending": 2, "processing": 0, "done": 0, "failed": 0, "skipped": 0}


# -- release, fail, requeue -------------------------------------------------------------


def test_release_gives_the_attempt_back(core: Pyrite) -> None:
    a, b = pending_entries(core, 2)
    t = time.time() + 1
    items = claim(core, "w1", now=t)
    assert [qrow(core, r)["attempts"] for r in (a, b)] == [1, 1]
    with core.db.write() as conn:
        assert queue.release(conn, items, now=t + 1) == 2
    for r in (a, b):
        row = qrow(core, r)
        assert row["status"] == "pending" and row["attempts"] == 0
        assert row["lease_owner"] is None and row["lease_expires_at"] is None
        assert row["run_after"] == pytest.approx(t + 1)
    # Released work is claimable again at once, with attempt 1 again.
    again = claim(core, "w2", now=t + 1)
    assert sorted(i.attempts for i in again) == [1, 1]


def test_release_with_a_pause_sets_run_after(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    t = time.time() + 1
    items = claim(core, "w1", now=t)
    with core.db.write() as conn:
        queue.release(conn, items, now=t, run_after=t + 5, error="429 slow down")
    row = qrow(core, rowid)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["error"] == "429 slow down"
    assert claim(core, "w2", now=t + 4.9) == []
    assert len(claim(core, "w2", now=t + 5)) == 1


def test_fail_backs_off_then_fails_with_error_kept(core: Pyrite) -> None:
    (rowid,) = pending_entries(core, 1)
    t = time.time() + 1
    for attempt in (1, 2):
        (item,) = claim(core, "w", now=t)
        assert item.attempts == attempt
        with core.db.write() as conn:
            assert queue.fail(conn, item, f"boom {attempt}", max_attempts=3, retry_at=t + 10, now=t) == "pending"
        assert qrow(core, rowid)["error"] == f"boom {attempt}"
        assert claim(core, "w", now=t + 9) == []
        t += 10
    (item,) = claim(core, "w", now=t)
    with core.db.write() as conn:
        assert queue.fail(conn, item, "boom 3", max_attempts=3, retry_at=t + 10, now=t) == "failed"
    row = qrow(core, rowid)
    assert row["status"] == "failed" and row["error"] == "boom 3" and row["attempts"] == 3
    assert claim(core, "w", now=t + 10_000) == []
    # retry-failed puts it back with fresh attempts
    with core.db.write() as conn:
        assert queue.requeue(conn, now=t + 1, statuses=("failed",)) == 1
    row = qrow(core, rowid)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["error"] is None


def test_item_whose_worker_dies_every_time_ends_failed(pyrite_home: Any) -> None:
    """DESIGN: "Counting the attempt at claim time means an item that crashes its
    worker every time still ends as failed." Workers that die leave the item
    processing with an expired lease; after max_attempts such claims the item
    must be failed, not handed to yet another worker forever."""
    p = Pyrite(load_settings(embed_max_attempts=3, embed_lease=5))
    try:
        p.kbs.create_kb("notes")
        (rowid,) = pending_entries(p, 1)
        t = time.time() + 1
        for n in range(1, 4):
            (item,) = p.embedding.claim(f"doomed-{n}", now=t)
            assert item.attempts == n
            t += 10  # the worker was killed mid-batch; its lease runs out
        more = p.embedding.claim("next", now=t)
        row = qrow(p, rowid)
        assert more == [] and row["status"] == "failed", (
            f"after 3 crashed attempts the item was claimed again: {row}")
        assert row["error"]
        failed = [e for e in events.since(p.db.conn, 0) if e["type"] == "embed_failed"]
        assert [e["entry_id"] for e in failed] == ["item-0"] and failed[0]["error"] == row["error"]
    finally:
        p.close()


# -- events ---------------------------------------------------------------------------


def test_events_have_monotonic_ids(core: Pyrite) -> None:
    for i in range(3):
        core.kbs.create_entry("notes", f"Event {i}", "text")
    evs = events.since(core.db.conn, 0)
    ids = [e["id"] for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e["type"] for e in evs] == ["entry_created", "embed_complete"] * 3
    assert events.since(core.db.conn, ids[2]) == evs[3:]
