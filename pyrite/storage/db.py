"""The one place that opens SQLite: driver choice, pragmas, sqlite-vec, write transactions."""

from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

try:  # A driver that can load extensions; the stdlib one often cannot.
    import pysqlite3.dbapi2 as sqlite3  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the platform
    import sqlite3  # type: ignore[no-redef]

try:
    import sqlite_vec  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the install
    sqlite_vec = None

from pyrite.errors import BusyError, ConfigError
from pyrite.storage.migrations import migrate as run_migrations
from pyrite.storage.migrations import schema_problem

Connection = sqlite3.Connection
OperationalError = sqlite3.OperationalError
IntegrityError = sqlite3.IntegrityError
# How long a writer waits for the lock before SQLite gives up; far above any
# transaction pyrite holds, so "database is locked" never reaches a caller.
BUSY_TIMEOUT_MS = 30_000
MMAP_BYTES = 1 << 30  # address space only; the OS pages it in and out
AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
WORKER_CHECKPOINT_EVERY_S = 0.5  # a worker's checkpoints between batches (see checkpoint_if_due)
WAL_SIZE_LIMIT = 64 << 20
# SQLite calls a deadline's progress handler every this many virtual-machine steps (~0.1 ms of work).
DEADLINE_STEPS = 1000
VEC_HELP = (
    "semantic search needs the sqlite-vec extension and an SQLite driver that can load it: "
    "pip install sqlite-vec pysqlite3-binary (Linux), or use a Python whose sqlite3 "
    "allows load_extension; keyword search works without it"
)


@functools.cache
def _probe_vec() -> str | None:
    """None if sqlite-vec loads in this driver, else the reason it does not (probed once, on first use)."""
    if sqlite_vec is None:
        return "the sqlite-vec package is not installed"
    conn = sqlite3.connect(":memory:")
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute("select vec_version()")
    except (AttributeError, sqlite3.Error) as exc:
        return f"this SQLite driver cannot load extensions ({exc})"
    finally:
        conn.close()
    return None


def unusable_index(path: Path, reason: str, *, untouched: bool = False) -> ConfigError:
    """The error for an index file pyrite cannot use: what is wrong, and how to rebuild it from the files."""
    return ConfigError(
        f"{path} is not a usable pyrite index: {reason}.{' pyrite has not changed it.' if untouched else ''} "
        "The markdown files are the "
        f"source of truth, so the index can be rebuilt: move the file aside (mv {path} {path}.bad), run "
        "`pyrite init`, then `pyrite kb create NAME --path FOLDER` for each KB (it indexes the files already "
        "there; `pyrite index build` re-reads them any time) and `pyrite index embed`")


def _is_corrupt(exc: BaseException) -> bool:
    # The driver raises the DatabaseError base class itself only for SQLITE_CORRUPT and SQLITE_NOTADB.
    return type(exc) is sqlite3.DatabaseError


def check_index(path: Path) -> None:
    """Raise ConfigError unless path is missing, empty or a pyrite index this version knows; never writes to it."""
    try:
        if path.stat().st_size == 0:
            return
        with open(path, "rb") as fh:
            magic = fh.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"SQLite format 3\x00":
        raise unusable_index(path, "it is not an SQLite database", untouched=True)
    # A plain connection and reads only: nothing (journal mode, tables) is changed before the check passed.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        problem = schema_problem(conn)
    except sqlite3.DatabaseError as exc:
        if not _is_corrupt(exc):
            raise
        problem = f"the file is damaged ({exc})"
    finally:
        conn.close()
    if problem and problem.startswith("it holds another program's tables"):
        raise ConfigError(f"{path} is not a pyrite index: {problem}. pyrite has not changed it; give pyrite a home "
                          "of its own (--home DIR or PYRITE_HOME=DIR), or move that file back where it belongs")
    if problem:
        raise unusable_index(path, problem, untouched=True)


def check_deadline(at: float | None, message: str) -> None:
    """Raise BusyError(message) if time.monotonic() is past `at` (None: never)."""
    if at is not None and time.monotonic() > at:
        raise BusyError(message)


class Database:
    """An SQLite index file: per-thread connections, migrations applied once, short write transactions."""

    def __init__(self, path: Path | str, *, autocheckpoint: bool = True, migrate: bool = True) -> None:
        self.path = Path(path)
        self.autocheckpoint = autocheckpoint
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()
        # Writers of this process queue here, in order, instead of in SQLite's sleep-and-retry busy
        # handler, which under load lets unlucky writers wait seconds. Other processes still use the latter.
        self.write_lock = threading.Lock()
        if migrate:
            check_index(self.path)
            with self.write() as conn:
                run_migrations(conn)

    @property
    def vec_available(self) -> bool:
        """True when sqlite-vec is loaded into this database's connections."""
        return _probe_vec() is None

    @property
    def vec_problem(self) -> str | None:
        """Why vectors are unavailable, with how to fix it; None when they work."""
        problem = _probe_vec()
        return None if problem is None else f"{problem}; {VEC_HELP}"

    def connect(self) -> Connection:
        """A new connection with pyrite's pragmas, in autocommit mode (transactions are explicit)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open {self.path}: {exc}") from None
        try:
            self._configure(conn)
        except BaseException as exc:
            conn.close()
            if _is_corrupt(exc):
                raise unusable_index(self.path, f"the file is damaged ({exc})") from None
            raise
        return conn

    def _configure(self, conn: Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
        self._set_wal(conn)
        conn.execute("pragma synchronous = NORMAL")
        conn.execute("pragma foreign_keys = ON")
        # Vector scans read whole vec0 chunks; through mmap that skips a copy per page (~30% faster).
        conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
        # Long-running processes checkpoint from their worker's threads (checkpoint_if_due) instead of
        # inside a user's commit.
        conn.execute(f"pragma wal_autocheckpoint = {AUTOCHECKPOINT_PAGES if self.autocheckpoint else 0}")
        # Once a checkpoint has caught up, cut the WAL file back instead of keeping its largest size.
        conn.execute(f"pragma journal_size_limit = {WAL_SIZE_LIMIT}")
        if _probe_vec() is None:
            conn.enable_load_extension(True)
            sqlite_vec.load(conn)
            conn.enable_load_extension(False)

    @contextmanager
    def _damage_is_config_error(self) -> Iterator[None]:
        """A damaged file found mid-use becomes the same ConfigError as at open, with the rebuild recipe."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                raise unusable_index(self.path, f"the file is damaged ({exc})") from None
            raise

    @staticmethod
    def _set_wal(conn: Connection) -> None:
        # Switching to WAL needs a moment of exclusive access; retry while another opener holds it.
        for _ in range(50):
            try:
                conn.execute("pragma journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                time.sleep(0.05)
        conn.execute("pragma journal_mode = WAL")

    @property
    def conn(self) -> Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._local.autocheckpoint = self.autocheckpoint  # what connect() sets
            conn = self.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def set_autocheckpoint(self, enabled: bool) -> None:
        """Whether this process's commits run SQLite's automatic checkpoint (off while a worker here checkpoints)."""
        self.autocheckpoint = enabled  # each thread's connection picks it up at its next write

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A BEGIN IMMEDIATE transaction on this thread's connection: commit on success, else roll back."""
        conn = self.conn
        if getattr(self._local, "autocheckpoint", self.autocheckpoint) != self.autocheckpoint:
            conn.execute(f"pragma wal_autocheckpoint = {AUTOCHECKPOINT_PAGES if self.autocheckpoint else 0}")
        self._local.autocheckpoint = self.autocheckpoint
        with self._damage_is_config_error(), self.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a COMMIT that failed (a deferred constraint) leaves it open
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def cache_size(self, kib: int | None) -> Iterator[None]:
        """Give this thread's connection a page cache of `kib` KiB for the block (None: leave it)."""
        if kib is None:
            yield
            return
        conn = self.conn
        before = conn.execute("pragma cache_size").fetchone()[0]
        conn.execute(f"pragma cache_size = {-int(kib)}")
        try:
            yield
        finally:
            conn.execute(f"pragma cache_size = {int(before)}")

    @contextmanager
    def deadline(self, at: float | None, message: str) -> Iterator[None]:
        """Interrupt this thread's statements once time.monotonic() passes `at`: BusyError(message) (None: no limit).

        SQLite checks between steps of its virtual machine, so one long function call (a snippet() of a huge
        column) is not cut short: callers keep each such call bounded themselves.
        """
        if at is None:
            yield
            return
        conn = self.conn
        conn.set_progress_handler(lambda: time.monotonic() > at, DEADLINE_STEPS)
        try:
            check_deadline(at, message)
            yield
        except sqlite3.OperationalError as exc:
            if "interrupt" in str(exc) and time.monotonic() > at:
                raise BusyError(message) from None
            raise
        finally:
            conn.set_progress_handler(None, 0)

    def query(self, sql: str, params: Any = ()) -> list[Any]:
        """Rows of one read statement on this thread's connection."""
        with self._damage_is_config_error():
            return self.conn.execute(sql, params).fetchall()

    def checkpoint_if_due(self) -> bool:
        """Checkpoint on this thread if WORKER_CHECKPOINT_EVERY_S passed since its last one here; True if it ran.

        For a worker, between its batches. Run by the writer between its own transactions, a checkpoint
        catches up and the WAL restarts from its beginning; run from another thread under a steady stream
        of batches it never does (a 100,000-item drain grew the WAL to 9.9 GB). Unlike SQLite's
        autocheckpoint inside COMMIT, it runs after the write lock is released, so the process's other
        writers never wait for it; and a checkpoint per interval rather than per 1,000 pages copies a page
        that many batches wrote only once.
        """
        if time.monotonic() < getattr(self._local, "next_checkpoint", 0.0):
            return False
        self.checkpoint()
        self._local.next_checkpoint = time.monotonic() + WORKER_CHECKPOINT_EVERY_S
        return True

    def checkpoint(self) -> None:
        """Fold the WAL back into the main file without blocking readers or writers."""
        self.conn.execute("pragma wal_checkpoint(PASSIVE)")

    def close_thread(self) -> None:
        """Close this thread's connection (call before a thread that used the database ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn not in self._all:
                return  # close() has taken it and closes it: closing it twice at once aborts SQLite
            self._all.remove(conn)
        conn.close()

    def close(self) -> None:
        """Close every connection this object opened, in any thread."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
