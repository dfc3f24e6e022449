"""The typed descriptions of zeroserve.wire.descriptions: maps round-trip, bad maps are refused
with a reason, one rule finds a job's task, and the job map's keys are the broker's fields."""
from __future__ import annotations

from dataclasses import fields

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import zeroserve
from broker.job_store import _FIELDS
from broker.jobs.model import Job
from zeroserve.schema import KINDS, Field
from zeroserve.service import service_spec
from zeroserve.wire.descriptions import (
    JOB_MAP_KEYS,
    EndpointDescription,
    JobDescription,
    ServiceDescription,
    TaskDescription,
    TaskNotFound,
    find_task,
)
from zeroserve.wire.envelope import ProtocolError, Status
from zeroserve.wire.jobs import JobState

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=12)
sizes = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
shapes = st.none() | st.lists(st.integers(-1, 1 << 20), max_size=4).map(tuple)
field_maps = st.builds(Field, names, st.sampled_from(KINDS),
                       st.none() | st.sampled_from(["float32", "<i8", "bfloat16", "bool"]),
                       shapes, st.booleans())
schemas = st.lists(field_maps, max_size=4).map(tuple)
endpoints = st.builds(EndpointDescription, names, names, schemas, field_maps, st.booleans(),
                      st.integers(1, 4096), st.integers(0, 8), sizes, st.booleans())
tasks = st.builds(TaskDescription, names, schemas, field_maps,
                  sizes.filter(lambda s: s > 0), st.integers(1, 100))


def _wire(value: dict) -> dict:
    """A map as it arrives: through msgpack (lists stay lists, tuples become lists)."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


@given(endpoints)
def test_endpoint_description_round_trips_through_its_map(desc):
    assert EndpointDescription.from_map(desc.service, desc.name, _wire(desc.to_map())) == desc


@given(tasks)
def test_task_description_round_trips_through_its_map(desc):
    assert TaskDescription.from_map(desc.name, _wire(desc.to_map())) == desc


@given(names, st.lists(endpoints, max_size=3), st.lists(tasks, max_size=3),
       st.integers(0, 100))
def test_service_description_round_trips_with_its_endpoints_and_tasks(name, eps, tks, workers):
    desc = ServiceDescription(
        name, {e.name: EndpointDescription(name, e.name, e.inputs, e.output, e.batchable,
                                           e.max_batch_size, e.batch_dim, e.max_latency_ms,
                                           e.retry_on_worker_loss) for e in eps},
        {t.name: t for t in tks}, workers)
    assert ServiceDescription.from_map(name, _wire(desc.to_map())) == desc


job_states = st.sampled_from(list(JobState))
times = st.none() | sizes
jobs = st.builds(JobDescription, names, names, names, job_states, st.integers(0, 10),
                 st.integers(1, 10), st.floats(0, 1), st.none() | st.text(max_size=20), sizes,
                 sizes, times, times, times, st.booleans(), st.none() | names)


@given(jobs)
def test_job_description_round_trips_and_names_its_task_endpoint(job):
    m = _wire(job.to_map())
    assert JobDescription.from_map(m) == job
    assert m["endpoint"] == job.task and "task" not in m and tuple(m) == JOB_MAP_KEYS


def test_absent_keys_take_the_descriptions_defaults():
    assert EndpointDescription.from_map("s", "e", {}) == EndpointDescription("s", "e")
    task = TaskDescription.from_map("t", {"inputs": [{"name": "x"}]})
    assert task.inputs == (Field("x"),) and task.output == Field("output")
    assert (task.timeout_s, task.max_attempts) == (600.0, 3)
    assert ServiceDescription.from_map("s", {}) == ServiceDescription("s")


def test_task_defaults_are_the_decorators():
    @zeroserve.service(name="chores")
    class Chores:
        @zeroserve.task
        def sweep(self) -> None:
            return None

    spec = service_spec(Chores).tasks["sweep"]
    assert TaskDescription.from_map("sweep", spec.describe()) == TaskDescription("sweep")
    assert TaskDescription.from_map("sweep", {}).timeout_s == spec.timeout_s
    assert TaskDescription.from_map("sweep", {}).max_attempts == spec.max_attempts


def test_a_worker_describes_its_endpoints_for_ready():
    @zeroserve.service(name="maths")
    class Maths:
        @zeroserve.api(batchable=True, max_batch_size=16, max_latency_ms=5)
        def add(self, x: int) -> int:
            return x

        @zeroserve.api(max_batch_size=16)
        def neg(self, x: int) -> int:
            return -x

    described = service_spec(Maths).describe()
    assert described["add"] == EndpointDescription(
        "maths", "add", (Field("x", "int"),), Field("output", "int"), True, 16, 0, 5.0, True)
    # limits only mean something on a batchable endpoint
    assert (described["neg"].max_batch_size, described["neg"].max_latency_ms) == (1, 0.0)


@pytest.mark.parametrize("m, reason", [
    ([], "must be a map"),
    ({"inputs": {}}, "inputs must be a list"),
    ({"inputs": [{"kind": "int"}]}, "needs a name"),
    ({"inputs": [{"name": "x", "kind": "blob"}]}, "unknown kind"),
    ({"inputs": [{"name": "x", "dtype": "float99"}]}, "dtype"),
    ({"inputs": [{"name": "x", "shape": [2, "3"]}]}, "shape"),
    ({"inputs": [{"name": "x", "shape": [-2]}]}, "shape"),
    ({"inputs": [{"name": "x", "required": 1}]}, "required"),
    ({"output": "x"}, "must be a map"),
    ({"batchable": 1}, "batchable"),
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 8.0}, "max_batch_size"),
    ({"max_batch_size": True}, "max_batch_size"),
    ({"max_latency_ms": -1}, "max_latency_ms"),
    ({"max_latency_ms": float("nan")}, "max_latency_ms"),
    ({"max_latency_ms": "5"}, "max_latency_ms"),
    ({"batch_dim": -1}, "batch_dim"),
    ({"retry_on_worker_loss": None}, "retry_on_worker_loss"),
])
def test_a_bad_endpoint_map_is_refused_with_the_reason(m, reason):
    with pytest.raises(ProtocolError, match=reason):
        EndpointDescription.from_map("s", "e", m)


@pytest.mark.parametrize("m, reason", [
    ({"timeout_s": 0}, "timeout_s must be positive"),
    ({"timeout_s": "10"}, "timeout_s"),
    ({"max_attempts": 0}, "max_attempts"),
])
def test_a_bad_task_map_is_refused_with_the_reason(m, reason):
    with pytest.raises(ProtocolError, match=reason):
        TaskDescription.from_map("t", m)


@pytest.mark.parametrize("m, reason", [
    ({"endpoints": []}, "must be a map"),
    ({"endpoints": {1: {}}}, "name must be a non-empty string"),
    ({"endpoints": {"e": {"batchable": "yes"}}}, "endpoint s.e: batchable"),
    ({"tasks": {"t": {"max_attempts": -1}}}, "task t: max_attempts"),
    ({"workers": -1}, "workers"),
])
def test_a_bad_service_map_is_refused_with_the_reason(m, reason):
    with pytest.raises(ProtocolError, match=reason):
        ServiceDescription.from_map("s", m)


_JOB = JobDescription("j", "s", "t", JobState.QUEUED, 0, 3, 0.0, None, 1.0, 1.0).to_map()


@pytest.mark.parametrize("m, reason", [
    ({**_JOB, "state": "lost"}, "unknown state"),
    ({**_JOB, "id": ""}, "job id"),
    ({k: v for k, v in _JOB.items() if k not in ("endpoint", "created_at")},
     "lacks endpoint, created_at"),
    ({**_JOB, "error": 3}, "error"),
    ({**_JOB, "max_attempts": 0}, "max_attempts"),
    ({**_JOB, "started_at": "now"}, "started_at"),
])
def test_a_bad_job_map_is_refused_with_the_reason(m, reason):
    with pytest.raises(ProtocolError, match=reason):
        JobDescription.from_map(m)


def test_one_rule_finds_a_jobs_task_with_the_messages_callers_see():
    score = TaskDescription("score")
    services = {"svc": ServiceDescription("svc", {"rt": EndpointDescription("svc", "rt")},
                                          {"score": score})}
    assert find_task(services, "svc", "score") is score
    for service, task, status, message in [
            ("ghost", "score", Status.NOT_FOUND, "unknown service 'ghost'"),
            ("svc", "nope", Status.NOT_FOUND, "service 'svc' has no task 'nope'"),
            ("svc", "rt", Status.BAD_REQUEST,
             "'svc/rt' is a real-time endpoint, not a task: call it directly")]:
        with pytest.raises(TaskNotFound) as caught:
            find_task(services, service, task)
        assert (caught.value.status, str(caught.value)) == (status, message)


def test_the_job_map_shows_the_brokers_job_fields_and_the_store_keeps_all_but_the_lease():
    record = {f.name for f in fields(Job)}
    assert {f.name for f in fields(JobDescription)} <= record
    assert set(_FIELDS) == record - {"lease_until"}
    job = Job("j1", "svc", "score", JobState.RUNNING, 3, 10.0, 1.0, 2.0, attempts=1,
              worker="w1", lease_until=40.0)
    m = job.describe().to_map()
    assert (m["endpoint"], m["state"], m["attempts"]) == ("score", "running", 1)
    assert "worker" not in m and "lease_until" not in m
