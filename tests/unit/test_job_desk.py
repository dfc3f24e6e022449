"""JobDesk over a real SQLite store with fake sockets and clock: durability before answers,
idempotency, validation, recovery after a restart, retention."""
import shutil
import sqlite3

import pytest

from broker.jobs.desk import JobDesk, JobsConfig
from broker.jobs.model import JobPolicy
from zeroserve.wire import jobs as jp
from zeroserve.wire.backend import Ready
from zeroserve.wire.descriptions import EndpointDescription, TaskDescription
from zeroserve.wire.envelope import Status, split_command, unpack_map
from zeroserve.wire.frontend import Control, ControlOp, parse_reply

TASKS = {"score": TaskDescription("score", timeout_s=5.0, max_attempts=2).to_map()}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Channels:
    def __init__(self):
        self.sent, self.open, self.events = [], {}, set()

    def open_lane(self, worker_id, pull, push):
        self.open[worker_id] = pull
        self.events.add(worker_id)

    def stop_dispatch(self, worker_id):
        self.open.pop(worker_id, None)

    def stop_events(self, worker_id):
        self.events.discard(worker_id)

    def send(self, worker_id, frames):
        self.sent.append((worker_id, jp.parse_lane_message(frames)))


class Harness:
    def __init__(self, path, retention_s=100.0, max_input_bytes=1000, max_result_bytes=1000,
                 grace_s=0.0):
        self.clock, self.channels, self.front = Clock(), Channels(), []
        self.path = path
        self.desk = JobDesk(JobsConfig(str(path), JobPolicy(lease_s=10.0, backoff_s=1.0,
                                                            retention_s=retention_s),
                                       max_input_bytes, grace_s=grace_s,
                                       max_result_bytes=max_result_bytes),
                            self.channels, self.front.append, self.clock)
        self.n = 0

    def worker(self, identity=b"I1", worker_id="w1", slots=1, running=()):
        lane = jp.JobLaneInfo(slots, "tcp://pull", "tcp://push", TASKS, list(running))
        self.desk.lane_ready(identity, Ready(worker_id, "svc", {
            "rt": EndpointDescription("svc", "rt")}, 1, {},
                                               lane.describe()))

    def call(self, op, **args):
        self.n += 1
        self.desk.on_control(b"G", Control(self.n.to_bytes(8, "big"), op, args))
        assert not self.front, "answered before the commit"
        self.desk.flush()
        (frames,) = self.front
        self.front.clear()
        reply = parse_reply(split_command(frames[1:])[1])
        return reply.status, unpack_map(reply.meta, "answer")

    def submit(self, task="score", inputs=b"in", **extra):
        return self.call(ControlOp.JOB_SUBMIT, service="svc", task=task, inputs=inputs,
                         **extra)

    def crash(self):
        """The broker dies: its lock on the store goes, what it had not committed is lost."""
        self.desk.store.abandon()

    def event(self, job_id, attempt, kind, **extra):
        self.desk.on_event(jp.JobEvent(job_id, attempt, "w1", kind, **extra).to_frames())
        self.desk.flush()


def test_unknown_service_is_503_with_retry_after_in_the_grace_and_404_after_it(tmp_path):
    h = Harness(tmp_path / "jobs.db", grace_s=1.2)
    status, answer = h.submit()
    assert status is Status.NO_WORKER and answer["retry_after_s"] == 1
    assert "registered" in answer["error"]
    h.clock.now += 1.2
    assert h.submit()[0] is Status.NOT_FOUND


def test_submission_is_stored_durably_before_the_answer_and_dispatched_to_a_free_slot(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    status, answer = h.submit()
    assert status is Status.OK and answer["created"]
    job_id = answer["job"]["id"]
    # a copy of the files as they are now (the broker holds them locked) has it committed
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{tmp_path / 'jobs.db'}{suffix}", f"{tmp_path / 'copy.db'}{suffix}")
    other = sqlite3.connect(str(tmp_path / "copy.db"))
    assert other.execute("SELECT state, inputs FROM jobs WHERE id = ?", (job_id,)).fetchone() \
        == ("running", b"in")
    (worker, dispatch), = h.channels.sent
    assert worker == "w1" and dispatch.job_id == job_id and dispatch.attempt == 1
    assert dispatch.inputs == b"in" and dispatch.timeout_s == 5.0


def test_same_idempotency_key_returns_the_same_job(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    first = h.submit(idempotency_key="k-1")[1]
    again = h.submit(idempotency_key="k-1", inputs=b"other")[1]
    assert again["job"]["id"] == first["job"]["id"] and not again["created"]
    assert len(h.channels.sent) == 1


@pytest.mark.parametrize("task, inputs, status", [
    ("rt", b"x", Status.BAD_REQUEST), ("nope", b"x", Status.NOT_FOUND),
    ("score", b"x" * 1001, Status.PAYLOAD_TOO_LARGE)])
def test_bad_submissions_are_refused_and_never_stored(tmp_path, task, inputs, status):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    got, answer = h.submit(task=task, inputs=inputs)
    assert got is status and answer["code"] == int(status)
    assert not h.desk.store.counts()


def test_unknown_service_is_404(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    status, answer = h.call(ControlOp.JOB_SUBMIT, service="ghost", task="t", inputs=b"")
    assert status is Status.NOT_FOUND and "unknown service" in answer["error"]


def test_a_job_takes_its_tasks_limits_and_a_worker_without_a_lane_keeps_the_tasks(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    lane = jp.JobLaneInfo(1, "tcp://pull", "tcp://push", {**TASKS, "plain": {}})
    h.desk.lane_ready(b"I1", Ready("w1", "svc", {}, 1, {}, lane.describe()))
    h.desk.lane_ready(b"I2", Ready("w2", "svc", {"rt": EndpointDescription("svc", "rt")}, 1))
    assert set(h.desk.tasks_of("svc")) == {"score", "plain"}
    jobs = [h.submit(task=task)[1]["job"] for task in ("score", "plain")]
    assert [job["max_attempts"] for job in jobs] == [2, 3]  # 3: @zeroserve.task's default
    assert h.submit(task="rt")[0] is Status.BAD_REQUEST


def test_a_lane_with_a_bad_task_opens_no_lane(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    lane = jp.JobLaneInfo(1, "tcp://pull", "tcp://push", {"score": {"max_attempts": 0}})
    h.desk.lane_ready(b"I1", Ready("w1", "svc", {"rt": EndpointDescription("svc", "rt")}, 1,
                                   {}, lane.describe()))
    assert not h.channels.open and h.desk.tasks_of("svc") == {}
    assert h.submit()[0] is Status.NOT_FOUND


def test_result_status_and_conflicts(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    job_id = h.submit()[1]["job"]["id"]
    assert h.call(ControlOp.JOB_RESULT, id=job_id)[0] is Status.CONFLICT
    h.event(job_id, 1, jp.EventKind.STARTED)
    h.event(job_id, 1, jp.EventKind.PROGRESS, progress=0.25)
    assert h.call(ControlOp.JOB_GET, id=job_id)[1]["job"]["progress"] == 0.25
    h.event(job_id, 1, jp.EventKind.SUCCEEDED, result=b"out")
    status, answer = h.call(ControlOp.JOB_RESULT, id=job_id)
    assert status is Status.OK and answer["result"] == b"out"
    assert answer["job"]["state"] == "succeeded"
    assert h.call(ControlOp.JOB_CANCEL, id=job_id)[0] is Status.CONFLICT
    assert h.call(ControlOp.JOB_RETRY, id=job_id)[0] is Status.CONFLICT
    assert h.call(ControlOp.JOB_GET, id="missing")[0] is Status.NOT_FOUND


def test_cancel_running_tells_the_worker_and_retry_runs_it_again(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    job_id = h.submit()[1]["job"]["id"]
    status, answer = h.call(ControlOp.JOB_CANCEL, id=job_id)
    assert status is Status.OK and answer["job"]["cancel_requested"]
    assert isinstance(h.channels.sent[-1][1], jp.JobCancel)
    h.event(job_id, 1, jp.EventKind.CANCELLED)
    assert h.call(ControlOp.JOB_GET, id=job_id)[1]["job"]["state"] == "cancelled"
    assert h.call(ControlOp.JOB_RETRY, id=job_id)[0] is Status.OK
    assert h.channels.sent[-1][1].job_id == job_id and h.channels.sent[-1][1].attempt == 1


def test_restart_recovers_queued_and_running_jobs(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker(slots=1)
    running = h.submit()[1]["job"]["id"]
    queued = h.submit()[1]["job"]["id"]
    # the broker dies; a new one opens the same store
    h.crash()
    h2 = Harness(tmp_path / "jobs.db")
    jobs = {j["id"]: j["state"] for j in h2.call(ControlOp.JOB_LIST)[1]["jobs"]}
    assert jobs == {running: "running", queued: "queued"}
    h2.worker(running=[[running, 1]])  # the worker still runs attempt 1
    assert h2.channels.sent == []  # its only slot is taken by the recovered job
    h2.event(running, 1, jp.EventKind.SUCCEEDED, result=b"r")
    assert h2.channels.sent[0][1].job_id == queued
    assert h2.call(ControlOp.JOB_GET, id=running)[1]["job"]["attempts"] == 1


def test_finished_jobs_are_removed_after_retention(tmp_path):
    h = Harness(tmp_path / "jobs.db", retention_s=50.0)
    h.worker()
    job_id = h.submit()[1]["job"]["id"]
    h.event(job_id, 1, jp.EventKind.SUCCEEDED, result=b"r")
    h.clock.now += 49.0
    h.desk.on_tick()
    h.desk.flush()
    assert h.call(ControlOp.JOB_GET, id=job_id)[0] is Status.OK
    h.clock.now += 2.0
    h.desk.on_tick()
    h.desk.flush()
    assert h.call(ControlOp.JOB_GET, id=job_id)[0] is Status.NOT_FOUND


def test_list_pages_and_filters(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    h.desk.lane_draining(b"I1")  # known tasks, but no free slot: every job stays queued
    ids = [h.submit()[1]["job"]["id"] for _ in range(5)]
    page = h.call(ControlOp.JOB_LIST, limit=2)[1]
    rest = h.call(ControlOp.JOB_LIST, limit=10, after=page["next"])[1]
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == ids and rest["next"] is None
    assert h.call(ControlOp.JOB_LIST, state="running")[1]["jobs"] == []
    assert h.call(ControlOp.JOB_LIST, state="bogus")[0] is Status.BAD_REQUEST
    for after in (-1, 2**63):  # cursors are SQLite integers
        status, answer = h.call(ControlOp.JOB_LIST, after=after)
        assert status is Status.BAD_REQUEST and "cursor is 0..2**63-1" in answer["error"]


def test_lost_worker_requeues_with_backoff_and_stops_listening(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    job_id = h.submit()[1]["job"]["id"]
    h.desk.lane_gone(b"I1", lost=True)
    h.desk.flush()
    job = h.call(ControlOp.JOB_GET, id=job_id)[1]["job"]
    assert job["state"] == "queued" and "lost" in job["error"]
    assert "w1" not in h.channels.events


def test_a_deleted_store_turns_the_desk_failing_until_a_store_is_back(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    kept = h.submit()[1]["job"]["id"]
    h.event(kept, 1, jp.EventKind.SUCCEEDED, result=b"r")
    for suffix in ("", "-wal"):  # a backup, then the store is deleted under the broker
        shutil.copyfile(f"{tmp_path / 'jobs.db'}{suffix}", f"{tmp_path / 'backup'}{suffix}")
        (tmp_path / f"jobs.db{suffix}").unlink()
    h.clock.now += 1.0
    h.desk.on_tick()
    h.desk.flush()
    health = h.desk.stats()["store"]
    assert not health["ok"] and "deleted" in health["error"]
    status, answer = h.submit()
    assert status is Status.NO_WORKER and answer["retry_after_s"] == 1
    assert "deleted" in answer["error"] and str(tmp_path / "jobs.db") in answer["error"]
    assert h.call(ControlOp.JOB_GET, id=kept)[0] is Status.NO_WORKER
    h.clock.now += 1.0
    h.desk.on_tick()  # reopening fails: a deleted store is not created again empty
    assert not (tmp_path / "jobs.db").exists() and not h.desk.stats()["store"]["ok"]
    for suffix in ("", "-wal"):  # the operator restores the backup
        shutil.copyfile(f"{tmp_path / 'backup'}{suffix}", f"{tmp_path / 'jobs.db'}{suffix}")
    h.clock.now += 1.0
    h.desk.on_tick()
    h.desk.flush()
    assert h.desk.stats()["store"] == {"path": str(tmp_path / "jobs.db"), "ok": True,
                                       "error": None}
    assert h.call(ControlOp.JOB_GET, id=kept)[1]["job"]["state"] == "succeeded"
    assert h.submit()[0] is Status.OK


def test_a_failed_commit_answers_what_waited_for_it_503_and_sends_no_dispatch(tmp_path):
    h = Harness(tmp_path / "jobs.db")
    h.worker()
    h.desk.on_control(b"G", Control(b"\0" * 7 + b"\1", ControlOp.JOB_SUBMIT,
                                    {"service": "svc", "task": "score", "inputs": b"in"}))
    h.desk.store.abandon()  # the connection is gone: the commit fails
    h.desk.flush()
    (frames,) = h.front
    reply = parse_reply(split_command(frames[1:])[1])
    assert reply.status is Status.NO_WORKER and h.channels.sent == []
    assert "retry shortly" in unpack_map(reply.meta, "answer")["error"]
    stats = h.desk.stats()
    assert not stats["store"]["ok"] and stats["queued"] == stats["running"] == 0


def test_a_result_over_max_result_bytes_fails_the_job_in_the_broker(tmp_path):
    h = Harness(tmp_path / "jobs.db", max_result_bytes=4)
    h.worker(slots=2)
    fits, over = h.submit()[1]["job"]["id"], h.submit()[1]["job"]["id"]
    h.event(fits, 1, jp.EventKind.SUCCEEDED, result=b"1234")
    h.event(over, 1, jp.EventKind.SUCCEEDED, result=b"12345")
    assert h.call(ControlOp.JOB_RESULT, id=fits)[1]["result"] == b"1234"
    job = h.call(ControlOp.JOB_GET, id=over)[1]["job"]
    assert job["state"] == "failed" and "5 bytes, more than jobs.max_result_bytes (4)" \
        in job["error"]
    assert h.call(ControlOp.JOB_RESULT, id=over)[0] is Status.CONFLICT
