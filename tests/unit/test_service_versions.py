"""A service's version: declared on the class, replaced by a deployment file, announced in
READY's endpoint descriptions."""
from __future__ import annotations

import pytest

import zeroserve
from zeroserve.cli.serve_plan import daemons
from zeroserve.cli.traffic import answer_line, parse_weights
from zeroserve.deployment import Deployment, ServiceDeployment
from zeroserve.service import service_spec
from zeroserve.traffic import TrafficError


@zeroserve.service(name="ranker", version=3)
class Ranker:
    @zeroserve.api
    def which(self) -> int:
        return 3


def test_a_declared_version_reaches_every_endpoint_description():
    spec = service_spec(Ranker)
    assert spec.version == 3
    assert {d.version for d in spec.describe().values()} == {3}


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.0])
def test_a_version_must_be_an_integer_of_at_least_1(bad):
    with pytest.raises(ValueError, match="version must be an integer of at least 1"):
        zeroserve.service(name="x", version=bad)


def test_a_deployment_version_other_than_1_is_passed_to_its_workers():
    plan = daemons(Deployment((ServiceDeployment("ranker", "r.py:R", version=2),
                               ServiceDeployment("other", "o.py:O"))),
                   "tcp://*:1", "tcp://*:2", None, {}, None)
    workers = {d.name: d.argv for d in plan if d.name.startswith("worker")}
    ranker, other = workers["worker-ranker-1"], workers["worker-other-1"]
    assert ranker[ranker.index("--service-version") + 1] == "2"
    assert "--service-version" not in other


def test_the_traffic_command_reads_version_percent_pairs():
    assert parse_weights(["1=90", "2=10"]) == {1: 90, 2: 10}
    for bad, reason in ((["1:90"], "VERSION=PERCENT"), (["1=90", "1=10"], "named twice"),
                        (["1=90"], "sum to 100")):
        with pytest.raises(TrafficError, match=reason):
            parse_weights(bad)
    assert answer_line({"service": "r", "traffic": {"1": 90, "2": 10}}) == \
        "r: traffic split set to 1=90 2=10"
    assert "cleared" in answer_line({"service": "r", "traffic": {}})
    with pytest.raises(TrafficError, match="nope"):
        answer_line({"error": "nope", "code": 400})
