"""@zeroserve.task, the job frames, and one job run the way a lane's child runs it."""
import numpy as np
import pytest

import zeroserve
from worker.job_child import run_job
from zeroserve.service import service_spec
from zeroserve.wire import codec
from zeroserve.wire import jobs as jp
from zeroserve.wire.envelope import ProtocolError, unpack_map


@zeroserve.service(name="reports")
class Reports:
    @zeroserve.task(timeout_s=5, max_attempts=2)
    def score(self, rows: np.ndarray, ctx: zeroserve.JobContext, scale: float = 1.0) -> dict:
        for i in range(3):
            ctx.progress((i + 1) / 3)
            if ctx.cancelled:
                return {"stopped": i}
        return {"total": float(rows.sum()) * scale}

    @zeroserve.task
    def explode(self) -> int:
        raise KeyError("nope")


def test_task_schema_leaves_out_the_context_and_keeps_its_limits():
    spec = service_spec(Reports)
    assert spec.endpoints == {} and list(spec.tasks) == ["score", "explode"]
    task = spec.tasks["score"]
    desc = task.describe()
    assert [f["name"] for f in desc["inputs"]] == ["rows", "scale"]
    assert (desc["timeout_s"], desc["max_attempts"], task.context_arg) == (5.0, 2, "ctx")


def test_a_name_cannot_be_both_endpoint_and_task():
    with pytest.raises(TypeError, match="both an endpoint and a task"):
        @zeroserve.service(name="twice")
        class Twice:
            @zeroserve.api(name="x")
            def a(self) -> int:
                return 1

            @zeroserve.task(name="x")
            def b(self) -> int:
                return 2


def test_task_options_are_checked():
    with pytest.raises(ValueError):
        zeroserve.task(max_attempts=0)
    with pytest.raises(ValueError):
        zeroserve.task(timeout_s=0)


def _run(task, inputs, cancelled=lambda: False):
    sent = []
    message = {"job_id": "j", "attempt": 1, "task": task,
               "inputs": codec.encode(inputs, threshold=1 << 62)[0]}
    spec = service_spec(Reports)
    run_job(spec, Reports(), message, sent.append, cancelled)
    return [unpack_map(m, "m") for m in sent]


def test_a_job_reports_started_progress_and_its_result():
    out = _run("score", {"rows": np.ones((2, 2)), "scale": 2.0})
    assert [m["kind"] for m in out][0] == "started" and out[-1]["kind"] == "succeeded"
    assert any(m["kind"] == "progress" and m["progress"] == 1.0 for m in out)
    assert codec.decode(out[-1]["result"]) == {"total": 8.0}


def test_a_job_sees_cancellation_and_a_raising_task_reports_its_error():
    assert codec.decode(_run("score", {"rows": np.ones(1)}, lambda: True)[-1]["result"]) \
        == {"stopped": 0}
    assert _run("explode", {})[-1] == {"kind": "failed", "job_id": "j", "attempt": 1,
                                       "error": "KeyError: 'nope'"}


def test_job_frames_round_trip():
    dispatch = jp.JobDispatch("j", "score", 2, 30.0, 5.0, b"in")
    assert jp.parse_lane_message(dispatch.to_frames()) == dispatch
    assert jp.parse_lane_message(jp.JobCancel("j", 2).to_frames()) == jp.JobCancel("j", 2)
    event = jp.JobEvent("j", 2, "w", jp.EventKind.SUCCEEDED, result=b"out")
    assert jp.parse_event(event.to_frames()) == event


@pytest.mark.parametrize("frames", [
    [b"ZS1"], [b"XX", b"\x20", b"\x80"], [b"ZS1", b"\x7f", b"\x80"],
    [b"ZS1", b"\x22", b"\x81\xa6job_id\x01"],
    jp.JobCancel("j", 1).to_frames()[:2] + [b"\xc1"]])
def test_malformed_job_frames_are_refused(frames):
    with pytest.raises(ProtocolError):
        jp.parse_event(frames)


def test_lane_description_is_checked():
    assert jp.parse_lane({}) is None
    with pytest.raises(ProtocolError):
        jp.parse_lane({"slots": 2, "pull": "", "push": "tcp://x:1"})


def test_a_result_over_max_result_bytes_is_a_failure_and_never_sent():
    message = {"job_id": "j", "attempt": 1, "task": "score",
               "inputs": codec.encode({"rows": np.ones(1)}, threshold=1 << 62)[0]}
    size = len(codec.encode({"total": 1.0}, threshold=1 << 62)[0])
    for limit, kind in ((size, "succeeded"), (size - 1, "failed")):
        sent: list = []
        run_job(service_spec(Reports), Reports(), message, sent.append, lambda: False, limit)
        last = unpack_map(sent[-1], "m")
        assert last["kind"] == kind and ("result" in last) == (kind == "succeeded")
    assert f"{size} bytes encoded, more than jobs.max_result_bytes ({size - 1})" in last["error"]
