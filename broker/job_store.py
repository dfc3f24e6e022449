"""The broker's durable job store: one SQLite file in WAL mode with synchronous commits.

Writes accumulate in one transaction until :meth:`JobStore.commit`, which the
broker calls once per loop turn before it answers or dispatches anything that
depends on them (group commit): after ``commit`` returns, what was written
survives a crash of the broker or the host. Inputs and results are stored as
opaque blobs (codec payloads); nothing here decodes them.
"""
from __future__ import annotations

import sqlite3
from dataclasses import fields
from pathlib import Path

from broker.jobs.model import Job
from zeroserve.wire.jobs import JobState

_SCHEMA = """
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
    idempotency_key TEXT UNIQUE,
    expires_at REAL,
    inputs BLOB,
    result BLOB
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_service ON jobs (service, state, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at);
"""

# the columns: every field of a Job but its lease (a recovered running job is leased again)
_FIELDS = tuple(f.name for f in fields(Job) if f.name != "lease_until")
_COLUMNS = ", ".join(_FIELDS)
_MUTABLE = [f for f in _FIELDS if f not in ("id", "service", "task", "created_at",
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


class JobStore:
    """Jobs on disk (see the module docstring). Not thread-safe: the broker's loop owns it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._dirty = False

    def _begin(self) -> None:
        if not self._dirty:
            self._db.execute("BEGIN")
            self._dirty = True

    def commit(self) -> None:
        """Make every write so far durable (one fsync); a no-op when nothing was written."""
        if self._dirty:
            self._db.execute("COMMIT")
            self._dirty = False

    def insert(self, job: Job, inputs: bytes) -> None:
        """Add a new job with its inputs (raises sqlite3.IntegrityError on a duplicate key)."""
        self._begin()
        self._db.execute(f"INSERT INTO jobs ({_COLUMNS}, inputs) VALUES "
                         f"({', '.join('?' * (len(_FIELDS) + 1))})", [*_row(job, _FIELDS), inputs])

    def update(self, job: Job, result: bytes | None = None) -> None:
        """Write a job's changed fields (and its result, when given)."""
        self._begin()
        self._db.execute(_UPDATE, [*_row(job, _MUTABLE), job.id])
        if result is not None:
            self._db.execute("UPDATE jobs SET result = ? WHERE id = ?", (result, job.id))

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def find_key(self, key: str) -> Job | None:
        """The job submitted with idempotency key ``key``, if any."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?",
                               (key,)).fetchone()
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

    def page(self, service: str | None, state: str | None, after: int,
             limit: int) -> tuple[list[Job], int | None]:
        """Jobs in submission order after cursor ``after``, filtered; and the next cursor."""
        where: list[str] = ["seq > ?"]
        args: list[int | str] = [after]
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
        return self._db.execute("DELETE FROM jobs WHERE expires_at IS NOT NULL AND "
                                "expires_at <= ?", (now,)).rowcount

    def counts(self) -> dict[str, int]:
        """Stored jobs per state."""
        return dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))

    def close(self) -> None:
        self.commit()
        self._db.close()
