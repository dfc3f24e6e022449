"""The broker's durable job store: one SQLite file in WAL mode with synchronous commits.

Writes accumulate in one transaction until :meth:`JobStore.commit`, which the
broker calls once per loop turn before it answers or dispatches anything that
depends on them (group commit): after ``commit`` returns, what was written
survives a crash of the broker or the host. Inputs and results are stored as
opaque blobs (codec payloads); nothing here decodes them.

The broker holds the store with ``locking_mode=EXCLUSIVE``: SQLite then keeps the WAL
index in the broker's heap instead of a memory-mapped ``-shm`` file, so that a store
that becomes unwritable (a full disk, ``chattr +i``) fails a write with
``sqlite3.Error`` instead of killing the broker with SIGBUS; and no other process can
open the store while the broker runs (a second broker on the same store fails to
start). Readers go through the broker: :meth:`JobStore.counts` is kept in memory.

:meth:`JobStore.check` says whether the file at the path is still the one that was
opened (a store deleted or replaced while the broker runs would otherwise take writes
into a file that no longer has a name) and probes a write.
"""
from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import fields
from pathlib import Path

from broker.jobs.model import Job
from zeroserve.wire.jobs import JobState

_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    task TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress REAL NOT NULL,
    error TEXT,
    not_before REAL NOT NULL,
    worker TEXT,
    cancel_requested INTEGER NOT NULL,
    idempotency_key TEXT,
    expires_at REAL,
    owner TEXT NOT NULL DEFAULT '',
    inputs BLOB,
    result BLOB
)"""
_SCHEMA = _TABLE + """;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_key ON jobs (owner, idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_service ON jobs (service, state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""
_LARGE_BLOB = 1 << 20  # a blob this large is not left bound to a cached statement

# the columns: every field of a Job but its lease (a recovered running job is leased again)
_FIELDS = tuple(f.name for f in fields(Job) if f.name != "lease_until")
_COLUMNS = ", ".join(_FIELDS)
_MUTABLE = [f for f in _FIELDS if f not in ("id", "service", "task", "created_at", "owner",
                                            "idempotency_key", "max_attempts", "timeout_s")]
_UPDATE = f"UPDATE jobs SET {', '.join(f'{f} = ?' for f in _MUTABLE)} WHERE id = ?"


def _row(job: Job, fields: tuple | list) -> list:
    values = []
    for name in fields:
        value = getattr(job, name)
        values.append(value.value if isinstance(value, JobState) else
                      int(value) if isinstance(value, bool) else value)
    return values


def _job(row: sqlite3.Row | tuple) -> Job:
    values = dict(zip(_FIELDS, row))
    values["state"] = JobState(values["state"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)


def _add_owners(db: sqlite3.Connection) -> None:
    """Bring a store written before jobs had owners up to date, in one transaction: its
    jobs get the column ``owner`` (``""``: submitted with API keys off), and its idempotency
    keys become unique per owner instead of across the store. ``ALTER TABLE ... ADD COLUMN``
    adds the column, but SQLite cannot drop the old column-level ``UNIQUE``, so the table is
    copied into the new schema (SQLite's documented way to change a constraint); the
    AUTOINCREMENT counter is kept, so no row number (a listing cursor) is ever reused."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if not columns or "owner" in columns:
        return
    copied = ", ".join(["seq", *(f for f in _FIELDS if f != "owner"), "inputs", "result"])
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE jobs RENAME TO jobs_before_owners")
        for (index,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                   "tbl_name = 'jobs_before_owners' AND sql IS NOT NULL"
                                   ).fetchall():
            db.execute(f'DROP INDEX "{index}"')
        db.execute(_TABLE)
        db.execute(f"INSERT INTO jobs ({copied}, owner) SELECT {copied}, owner "
                   "FROM jobs_before_owners ORDER BY seq")
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'jobs'")
        db.execute("UPDATE sqlite_sequence SET name = 'jobs' WHERE name = 'jobs_before_owners'")
        db.execute("DROP TABLE jobs_before_owners")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class StoreFault(sqlite3.OperationalError):
    """The store's file was deleted or replaced while it was open."""


class JobStore:
    """Jobs on disk (see the module docstring). Not thread-safe: the broker's loop owns it.

    Raises ``sqlite3.Error`` (or ``OSError`` for its folder) when the store cannot be opened
    and written: a new store is created only with ``create`` (at start-up); reopening a
    store that has gone away fails instead of starting an empty one unnoticed."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "rwc" if create else "rw"
        self._db = sqlite3.connect(self.path.resolve().as_uri() + f"?mode={mode}", uri=True,
                                   isolation_level=None)
        try:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: no -shm file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            _add_owners(self._db)
            self._db.executescript(_SCHEMA)
            self._identity = self._file_identity()
            self._dirty = False
            self._counts: Counter[str] = Counter(dict(self._db.execute(
                "SELECT state, COUNT(*) FROM jobs GROUP BY state")))
            self._pending: Counter[str] = Counter()  # count changes not committed yet
            self.check()
            self.commit()
        except BaseException:
            self._db.close()
            raise

    def _file_identity(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreFault(f"{self.path} was deleted while the broker ran") from None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """Raise :class:`StoreFault` if the file at the path is not the one opened, else write
        a probe row (committed with the next :meth:`commit`, which raises if it cannot)."""
        if self._file_identity() != self._identity:
            raise StoreFault(f"{self.path} was replaced by another file while the broker ran")
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, julianday('now'))")

    def _begin(self) -> None:
        if not self._dirty:
            self._db.execute("BEGIN")
            self._dirty = True

    def commit(self) -> None:
        """Make every write so far durable (one fsync); a no-op when nothing was written."""
        if self._dirty:
            self._db.execute("COMMIT")
            self._dirty = False
            self._counts.update(self._pending)
            self._pending.clear()

    def insert(self, job: Job, inputs: bytes) -> None:
        """Add a new job with its inputs (raises sqlite3.IntegrityError on a duplicate key)."""
        self._begin()
        large = len(inputs) >= _LARGE_BLOB
        self._db.execute(f"INSERT INTO jobs ({_COLUMNS}, inputs) VALUES "
                         f"({', '.join('?' * (len(_FIELDS) + 1))})",
                         [*_row(job, _FIELDS), None if large else inputs])
        if large:
            self._set_blob("inputs", job.id, inputs)
        self._pending[job.state.value] += 1

    def update(self, job: Job, result: bytes | None = None) -> None:
        """Write a job's changed fields (and its result, when given)."""
        self._begin()
        row = self._db.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
        self._db.execute(_UPDATE, [*_row(job, _MUTABLE), job.id])
        if row is not None and row[0] != job.state.value:
            self._pending[row[0]] -= 1
            self._pending[job.state.value] += 1
        if result is not None:
            self._set_blob("result", job.id, result)

    def _set_blob(self, column: str, job_id: str, data: bytes) -> None:
        sql = f"UPDATE jobs SET {column} = ? WHERE id = ?"
        self._db.execute(sql, (data, job_id))
        if len(data) >= _LARGE_BLOB:
            # the cached statement keeps SQLite's copy of its bound values until it is bound
            # again (a 30 MB result stayed in the broker's memory): bind small ones, on no row
            self._db.execute(sql, (None, ""))
            self._db.execute("PRAGMA shrink_memory")
    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def find_key(self, owner: str, key: str) -> Job | None:
        """The job ``owner`` submitted with idempotency key ``key``, if any."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE owner = ? AND "
                               "idempotency_key = ?", (owner, key)).fetchone()
        return None if row is None else _job(row)

    def inputs(self, job_id: str) -> bytes | None:
        row = self._db.execute("SELECT inputs FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def result(self, job_id: str) -> bytes | None:
        row = self._db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def active(self) -> list[Job]:
        """Every queued or running job, oldest first (what a restarted broker recovers)."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY seq",
                                (JobState.QUEUED.value, JobState.RUNNING.value))
        return [_job(row) for row in rows]

    def page(self, service: str | None, state: str | None, after: int, limit: int,
             owner: str | None = None) -> tuple[list[Job], int | None]:
        """Jobs in submission order after cursor ``after``, filtered (``owner`` None: every
        owner's); and the next cursor."""
        where: list[str] = ["seq > ?"]
        args: list[int | str] = [after]
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if service:
            where.append("service = ?")
            args.append(service)
        if state:
            where.append("state = ?")
            args.append(state)
        rows = self._db.execute(f"SELECT seq, {_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
                                "ORDER BY seq LIMIT ?", (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_job(row[1:]) for row in rows], rows[-1][0] if more else None

    def purge(self, now: float) -> int:
        """Delete finished jobs whose retention ended; return how many."""
        self._begin()
        states = self._db.execute("DELETE FROM jobs WHERE expires_at IS NOT NULL AND "
                                  "expires_at <= ? RETURNING state", (now,)).fetchall()
        self._pending.subtract(state for (state,) in states)
        return len(states)

    def counts(self) -> dict[str, int]:
        """Committed jobs per state (kept in memory: no pass over the store)."""
        return {state: n for state, n in self._counts.items() if n}

    def close(self) -> None:
        """Commit what was written and close the file."""
        self.commit()
        self._db.close()

    def abandon(self) -> None:
        """Close without committing (the store failed): what was not committed is lost."""
        try:
            self._db.close()
        except sqlite3.Error:
            pass  # the connection is gone either way; the failure was reported by the caller
