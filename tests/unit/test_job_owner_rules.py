"""A job belongs to the API key name that submitted it: the desk answers another owner the
404 of an unknown id, lists only the caller's jobs (paging by the caller's own jobs), scopes
idempotency keys per owner, and lets an admin (or a gateway without keys) see every job;
the store keeps the owner, and an older store file gains the column."""
import sqlite3

import pytest
from test_job_desk import Harness

from broker.job_store import JobStore
from broker.jobs.model import Job
from gateway.api_keys import ApiKeys, KeysFileError, digest, new_key
from gateway.jobs_calls import caller_args
from zeroserve.wire import jobs as jp
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp
from zeroserve.wire.jobs import JobState

A = {"owner": "team-a", "admin": False}
B = {"owner": "team-b", "admin": False}
ADMIN = {"owner": "ops", "admin": True}


def test_another_owner_gets_the_answer_of_an_unknown_id(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    job_id = h.submit(**A)[1]["job"]["id"]
    h.event(job_id, 1, jp.EventKind.SUCCEEDED, result=b"out")
    for op in (ControlOp.JOB_GET, ControlOp.JOB_RESULT, ControlOp.JOB_CANCEL,
               ControlOp.JOB_RETRY):
        status, answer = h.call(op, id=job_id, **B)
        unknown = "0" * len(job_id)
        unknown_status, unknown_answer = h.call(op, id=unknown, **B)
        assert status is unknown_status is Status.NOT_FOUND
        assert answer == {**unknown_answer,
                          "error": unknown_answer["error"].replace(unknown, job_id)}
        assert answer["error"] == f"no job '{job_id}' (unknown, or removed after its retention)"
    assert h.call(ControlOp.JOB_GET, id=job_id, **A)[1]["job"]["state"] == "succeeded"
    assert h.call(ControlOp.JOB_RESULT, id=job_id, **A)[1]["result"] == b"out"
    assert h.call(ControlOp.JOB_GET, id=job_id, **ADMIN)[0] is Status.OK
    assert h.call(ControlOp.JOB_GET, id=job_id)[0] is Status.OK  # keys off: every job
    assert "owner" not in h.call(ControlOp.JOB_GET, id=job_id, **A)[1]["job"]


def test_a_listing_holds_only_the_callers_jobs_and_pages_by_them(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    mine = []
    for _ in range(7):
        mine.append(h.submit(**A)[1]["job"]["id"])
        h.submit(**B)
        h.submit(**ADMIN)
    pages, cursor = [], 0
    while cursor is not None:
        answer = h.call(ControlOp.JOB_LIST, limit=3, after=cursor, **A)[1]
        pages.append([job["id"] for job in answer["jobs"]])
        cursor = answer["next"]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == mine
    assert len(h.call(ControlOp.JOB_LIST, limit=100, **ADMIN)[1]["jobs"]) == 21
    assert len(h.call(ControlOp.JOB_LIST, limit=100)[1]["jobs"]) == 21
    assert h.call(ControlOp.JOB_LIST, **{"owner": "team-c", "admin": False})[1]["jobs"] == []


def test_an_idempotency_key_is_the_owners(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    first = h.submit(idempotency_key="k", **A)[1]
    theirs = h.submit(idempotency_key="k", **B)[1]
    assert theirs["created"] and theirs["job"]["id"] != first["job"]["id"]
    again = h.submit(idempotency_key="k", **A)[1]
    assert not again["created"] and again["job"]["id"] == first["job"]["id"]


@pytest.mark.parametrize("caller", [{"owner": 3}, {"owner": ""}, {"owner": "x" * 257},
                                    {"owner": "a", "admin": "yes"}])
def test_a_malformed_caller_is_400(tmp_path, caller):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    assert h.submit(**caller)[0] is Status.BAD_REQUEST
    assert h.call(ControlOp.JOB_LIST, **caller)[0] is Status.BAD_REQUEST


def test_the_owner_survives_a_restart(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    job_id = h.submit(**A)[1]["job"]["id"]
    h.desk.close()
    h = Harness(tmp_path / "jobs.db")
    assert h.call(ControlOp.JOB_GET, id=job_id, **B)[0] is Status.NOT_FOUND
    assert h.call(ControlOp.JOB_GET, id=job_id, **A)[0] is Status.OK


_OLD_TABLE = """CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, service TEXT NOT NULL,
    task TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL, timeout_s REAL NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, started_at REAL, finished_at REAL, progress REAL NOT NULL,
    error TEXT, not_before REAL NOT NULL, worker TEXT, cancel_requested INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE, expires_at REAL, inputs BLOB, result BLOB);
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_service ON jobs (service, state, seq);
CREATE INDEX jobs_expiry ON jobs (expires_at);
CREATE TABLE probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
INSERT INTO jobs VALUES (1, 'old', 'svc', 'score', 'queued', 0, 2, 5.0, 1.0, 1.0, NULL, NULL,
    0.0, NULL, 0.0, NULL, 0, 'k', NULL, x'696e', NULL);
INSERT INTO jobs VALUES (9, 'gone', 'svc', 'score', 'queued', 0, 2, 5.0, 1.0, 1.0, NULL, NULL,
    0.0, NULL, 0.0, NULL, 0, NULL, NULL, x'', NULL);
DELETE FROM jobs WHERE id = 'gone';
"""


def _job(job_id: str, owner: str, key: str | None) -> Job:
    return Job(job_id, "svc", "score", JobState.QUEUED, 2, 5.0, 2.0, 2.0,
               idempotency_key=key, owner=owner)


def test_a_store_from_before_owners_gains_the_column_and_per_owner_keys(tmp_path):
    path = tmp_path / "jobs.db"
    old = sqlite3.connect(path)
    old.executescript(_OLD_TABLE)
    old.close()
    store = JobStore(path)
    old_job = store.get("old")
    assert old_job is not None and old_job.owner == "" and old_job.idempotency_key == "k"
    assert store.inputs("old") == b"in" and store.counts() == {"queued": 1}
    found = store.find_key("", "k")
    assert found is not None and found.id == "old" and store.find_key("team-a", "k") is None
    store.insert(_job("a1", "team-a", "k"), b"")  # the old store's key was global
    with pytest.raises(sqlite3.IntegrityError):
        store.insert(_job("a2", "team-a", "k"), b"")
    store.commit()
    jobs, _ = store.page(None, None, 0, 10)
    assert [job.id for job in jobs] == ["old", "a1"]
    assert store.page(None, None, 1, 10)[0][0].id == "a1"
    store.close()
    db = sqlite3.connect(path)  # the row number of the purged job is never reused
    assert db.execute("SELECT seq FROM jobs WHERE id = 'a1'").fetchone() == (10,)
    assert "jobs_before_owners" not in {
        name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    JobStore(path).close()  # and opens again as it is


def test_a_keys_file_role_makes_an_admin_and_the_gateway_names_the_caller(tmp_path):
    user_key, admin_key = new_key(), new_key()
    path = tmp_path / "keys.yaml"
    path.write_text(f"""keys:
  - {{name: team-a, sha256: {digest(user_key)}, services: [mlp]}}
  - {{name: ops, sha256: {digest(admin_key)}, services: ["*"], role: admin}}
""")
    keys = ApiKeys.load(path)
    user, admin = keys.authenticate(user_key), keys.authenticate(admin_key)
    assert user is not None and not user.admin and admin is not None and admin.admin
    assert caller_args(user) == {"owner": "team-a", "admin": False}
    assert caller_args(admin) == {"owner": "ops", "admin": True}
    assert caller_args(None) == {}
    path.write_text(f"keys: [{{sha256: {'a' * 64}, role: root}}]")
    with pytest.raises(KeysFileError, match="'role' must be one of user, admin"):
        ApiKeys.load(path)
