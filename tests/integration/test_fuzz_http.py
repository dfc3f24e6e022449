"""HTTP bodies and headers fuzzed against the gateway's own OpenAPI description (schemathesis).

The worker serves a service whose code never fails, so every 5xx would be the
gateway's (or broker's) fault, except a 504 for a fuzzed deadline that ran out;
the daemons must all outlive the run.
"""
from __future__ import annotations

import pytest
import schemathesis
from cluster import ROOT, Cluster
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'oip_services.py'}:FuzzTarget"
EXAMPLES = 40  # per operation


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("fuzz-http"))
    try:
        cluster.broker()
        cluster.gateway(env={"ZEROSERVE_GATEWAY_MAX_BODY_BYTES": str(256 * 1024)})
        cluster.worker(SERVICE)
        cluster.wait_ready(1)
        yield cluster
        for daemon in cluster.daemons:
            assert daemon.alive(), f"{daemon.name} died:\n{daemon.log()[-3000:]}"
    finally:
        cluster.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_no_server_errors(fuzz_cluster: Cluster, mode: GenerationMode) -> None:
    api = schemathesis.openapi.from_url(fuzz_cluster.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 12  # the fuzz service's endpoints, models and the fixed routes
    fuzzed = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            if response.status_code == 504:  # the fuzzed X-Zeroserve-Timeout ran out: correct
                assert "deadline" in response.json()["error"]
            else:
                assert response.status_code < 500, (case.as_curl_command(), response.text)

        try:
            fuzz()
            fuzzed += 1
        except Unsatisfiable:  # nothing to make invalid: a route without parameters or body
            assert mode is GenerationMode.NEGATIVE
    assert fuzzed >= 6


def test_docs_page_lists_every_operation_without_the_network(fuzz_cluster: Cluster) -> None:
    import html
    import json
    import urllib.request

    with urllib.request.urlopen(fuzz_cluster.url + "/openapi.json", timeout=10) as resp:
        spec = json.loads(resp.read())
    with urllib.request.urlopen(fuzz_cluster.url + "/docs", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        page = resp.read().decode()
    for path, item in spec["paths"].items():  # rendered by the gateway, not by a CDN script
        assert f"<code>{html.escape(path)}</code>" in page, path
        for method in set(item) & {"get", "post", "delete"}:
            assert f"<td>{method.upper()}</td>" in page
    assert html.escape('"x"') in page  # the fuzz service's input, in a request body schema
    assert 'href="openapi.json"' in page
