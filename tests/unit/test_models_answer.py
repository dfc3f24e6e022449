"""How a gateway reads the broker's MODELS answer: a young broker's answer is provisional,
so services it lacks stay known (with no workers) until an answer is settled."""
from __future__ import annotations

import pytest

from gateway.broker_link import ModelsAnswer, known_services
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import ProtocolError

MLP = ServiceDescription("mlp", {"predict": EndpointDescription("mlp", "predict")}, workers=2)
CHORES = ServiceDescription("chores", {"ping": EndpointDescription("chores", "ping")},
                            workers=1)


def _answer(uptime_s: float, *services: ServiceDescription, grace_s: float = 1.2) -> dict:
    return {"broker_id": "b2", "uptime_s": uptime_s, "grace_s": grace_s,
            "services": {s.name: s.to_map() for s in services}}


def test_an_answer_is_settled_once_the_broker_is_past_its_grace() -> None:
    assert not ModelsAnswer.read(_answer(0.3, MLP)).settled
    settled = ModelsAnswer.read(_answer(1.2, MLP))
    assert settled.settled and settled.broker_id == "b2"
    assert settled.services == {"mlp": MLP}


def test_a_bad_service_is_left_out_and_an_answer_without_services_is_refused() -> None:
    answer = _answer(5.0, MLP)
    answer["services"]["bad"] = {"endpoints": {"e": {"max_batch_size": 0}}}
    assert ModelsAnswer.read(answer).services == {"mlp": MLP}
    with pytest.raises(ProtocolError):
        ModelsAnswer.read({"broker_id": "b2"})


def test_a_provisional_answer_keeps_the_services_it_lacks_without_workers() -> None:
    known = {"mlp": MLP, "chores": CHORES}
    young = ModelsAnswer.read(_answer(0.2, CHORES))
    assert list(known_services(known, young).items()) == [
        ("chores", CHORES), ("mlp", ServiceDescription("mlp", MLP.endpoints, workers=0))]


def test_a_settled_answer_replaces_what_was_known() -> None:
    known = {"mlp": MLP, "chores": CHORES}
    assert known_services(known, ModelsAnswer.read(_answer(3.0, CHORES))) == {"chores": CHORES}
    assert known_services(known, ModelsAnswer.read(_answer(3.0))) == {}
