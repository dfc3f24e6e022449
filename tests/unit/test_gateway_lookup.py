"""When the gateway answers 404 from its descriptions, and when 503 (gateway.invoke, jobs_calls):
a miss is proof only once the broker's models are settled."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import RequestFailed
from gateway.invoke import find_endpoint, find_model
from gateway.jobs_calls import find_task
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription, TaskDescription
from zeroserve.wire.envelope import Status

CHORES = ServiceDescription("chores", {"ping": EndpointDescription("chores", "ping")},
                            {"mark": TaskDescription("mark")}, workers=1)


class _Link:
    """The part of :class:`gateway.broker_link.BrokerLink` a lookup uses; ``settles_to`` is
    what the broker's models say once they settle (None: they do not settle in time)."""

    address = "tcp://broker"

    def __init__(self, known: bool, alive: bool = True,
                 settles_to: dict[str, ServiceDescription] | None = None) -> None:
        self.descriptions: dict[str, Any] = {"chores": CHORES}
        self.knows_every_service, self.alive, self.settles_to = known, alive, settles_to
        self.settled = 0

    async def refresh_if_stale(self) -> bool:
        return False

    async def settle(self) -> bool:
        self.settled += 1
        if self.settles_to is not None:
            self.descriptions, self.knows_every_service = self.settles_to, True
        return self.knows_every_service


def _fails(call: Any) -> RequestFailed:
    with pytest.raises(RequestFailed) as failed:
        asyncio.run(call)
    return failed.value


def test_a_miss_in_settled_models_is_404_at_once() -> None:
    link = _Link(known=True)
    assert _fails(find_endpoint(link, "ghost", "run")).status is Status.NOT_FOUND
    assert _fails(find_task(link, "chores", "nope")).status is Status.NOT_FOUND
    assert _fails(find_model(link, "ghost", None)).status is Status.NOT_FOUND
    assert link.settled == 0


def test_a_miss_while_the_broker_is_young_waits_for_its_models_to_settle() -> None:
    late = ServiceDescription("late", {"run": EndpointDescription("late", "run")},
                              {"job": TaskDescription("job")}, workers=1)
    link = _Link(known=False, settles_to={"chores": CHORES, "late": late})
    assert asyncio.run(find_endpoint(link, "late", "run")) == late.endpoints["run"]
    link = _Link(known=False, settles_to={"chores": CHORES})
    assert _fails(find_task(link, "late", "job")).status is Status.NOT_FOUND
    assert link.settled == 1


def test_a_miss_in_models_that_do_not_settle_is_503_with_retry_after() -> None:
    for call in (lambda link: find_endpoint(link, "ghost", "run"),
                 lambda link: find_task(link, "ghost", "job"),
                 lambda link: find_model(link, "ghost", "")):
        failure = _fails(call(_Link(known=False)))
        assert (failure.status, failure.retry_after) == (Status.NO_WORKER, 1)
        assert "retry shortly" in str(failure)


def test_without_a_broker_a_miss_is_503_and_a_known_name_is_still_found() -> None:
    link = _Link(known=True, alive=False)
    assert _fails(find_endpoint(link, "ghost", "run")).status is Status.NO_WORKER
    assert asyncio.run(find_task(link, "chores", "mark")) == CHORES.tasks["mark"]


def test_a_real_time_endpoint_named_as_a_task_is_400() -> None:
    failure = _fails(find_task(_Link(known=False), "chores", "ping"))
    assert failure.status is Status.BAD_REQUEST
