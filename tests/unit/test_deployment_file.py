"""The deployment file: what a good one gives, and every problem of a bad one named by its key
and line before anything starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from zeroserve.deployment import (
    DeploymentError,
    Resources,
    is_deployment_file,
    load_deployment,
    parse_deployment,
)

GOOD = """\
services:
  mlp:
    target: mlp.py:MLP
    workers: 2
    slots: 4
    threads: 2
    job_slots: 0
    version: 3
    batching:
      predict: {max_batch_size: 32, max_latency_ms: 5}
    resources: {gpus: 0.5, cpus: 2}
  text:
    target: examples.text:Text
settings:
  request: {default_timeout_s: 10}
  batching:
    overrides: {other.call: {max_batch_size: 2}}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(DeploymentError) as caught:
        parse_deployment(text, "d.yaml")
    return caught.value.problems


def test_a_good_file_gives_each_service_and_the_settings() -> None:
    deployment = parse_deployment(GOOD, "d.yaml", base=Path("/srv/app"))
    mlp, text = deployment.services
    assert (mlp.name, mlp.target, mlp.workers, mlp.slots, mlp.threads, mlp.job_slots,
            mlp.version, mlp.line) == ("mlp", "/srv/app/mlp.py:MLP", 2, 4, 2, 0, 3, 2)
    assert mlp.resources == Resources(gpus=0.5, cpus=2.0)
    assert mlp.worker_flags() == ["--slots", "4", "--threads", "2", "--job-slots", "0"]
    assert (text.target, text.workers, text.slots, text.version, text.line) == (
        "examples.text:Text", 1, None, 1, 12)
    assert text.worker_flags() == [] and text.resources == Resources()
    assert deployment.settings["request"] == {"default_timeout_s": 10}


def test_services_batching_becomes_the_batching_overrides_over_the_settings_files() -> None:
    overrides = parse_deployment(GOOD).overrides({"mlp.predict": {"max_batch_size": 1},
                                                  "kept.call": {"max_batch_size": 9}})
    assert overrides["request.default_timeout_s"] == 10
    assert overrides["batching.overrides"] == {
        "kept.call": {"max_batch_size": 9}, "other.call": {"max_batch_size": 2},
        "mlp.predict": {"max_batch_size": 32, "max_latency_ms": 5.0}}


def test_a_bare_file_target_is_resolved_against_the_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yml"
    path.write_text("services:\n  mlp: {target: models/mlp.py}\n")
    (service,) = load_deployment(path).services
    assert service.target == str(tmp_path / "models" / "mlp.py")
    absolute = parse_deployment("services:\n  a: {target: /x/a.py:A}\n", base=tmp_path)
    assert absolute.services[0].target == "/x/a.py:A"


def test_every_problem_is_reported_at_once_with_its_key_and_line() -> None:
    problems = _problems("""\
services:
  mlp:
    target: mlp.py:MLP
    workers: -1
    slots: 1.5
    colour: blue
  text:
    workers: 1
settings:
  request: {default_timeout_s: soon}
""")
    assert problems == [
        "d.yaml:4: services.mlp.workers: must be 0 or more, not -1",
        "d.yaml:5: services.mlp.slots: must be an integer, not 1.5",
        "d.yaml:6: services.mlp.colour: unknown key (known: target, workers, slots, threads, "
        "job_slots, version, batching, resources)",
        "d.yaml:7: services.text.target: missing: the service's file.py[:Class] or "
        "module:Class",
        "d.yaml:10: settings.request.default_timeout_s: request.default_timeout_s must be "
        "float, got 'soon'",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "d.yaml:1: empty: a deployment needs `services`"),
    ("services: [a, b]\n", "d.yaml:1: services: must be a mapping, not a list"),
    ("services: {}\n", "d.yaml:1: services: empty: a deployment needs at least one service"),
    ("settings: {}\n", "d.yaml:1: services: missing: a deployment needs at least one service"),
    ("services:\n  a: {target: a.py}\nextra: 1\n",
     "d.yaml:3: extra: unknown key (known: services, settings)"),
    ("services:\n  a: {target: a.py}\n  a: {target: b.py}\n",
     "d.yaml:3: services.a: given twice (first on line 2)"),
    ("services:\n  a: a.py\n", "d.yaml:2: services.a: must be a mapping, not 'a.py'"),
    ("services:\n  a: {target: [a.py]}\n",
     "d.yaml:2: services.a.target: must be a single value, not a list"),
    ("services:\n  a: {target: ''}\n",
     "d.yaml:2: services.a.target: must be file.py[:Class] or module:Class, not ''"),
    ("services:\n  a: {target: 3}\n",
     "d.yaml:2: services.a.target: must be file.py[:Class] or module:Class, not 3"),
    ("services:\n  a: {target: a.py, workers: two}\n",
     "d.yaml:2: services.a.workers: must be an integer, not 'two'"),
    ("services:\n  a: {target: a.py, workers: true}\n",
     "d.yaml:2: services.a.workers: must be an integer, not True"),
    ("services:\n  a: {target: a.py, version: 0}\n",
     "d.yaml:2: services.a.version: must be 1 or more, not 0"),
    ("services:\n  a: {target: a.py, threads: 0}\n",
     "d.yaml:2: services.a.threads: must be 1 or more, not 0"),
    ("services:\n  a:\n    target: a.py\n    resources: {gpus: 1.5}\n",
     "d.yaml:4: services.a.resources.gpus: must be 0, a whole number, or a fraction below 1 "
     "(a share of one device), not 1.5"),
    ("services:\n  a:\n    target: a.py\n    resources: {gpus: -1}\n",
     "d.yaml:4: services.a.resources.gpus: must be 0, a whole number, or a fraction below 1 "
     "(a share of one device), not -1"),
    ("services:\n  a:\n    target: a.py\n    resources: {cpus: .nan}\n",
     "d.yaml:4: services.a.resources.cpus: must be more than 0, not nan"),
    ("services:\n  a:\n    target: a.py\n    resources: {memory: 1}\n",
     "d.yaml:4: services.a.resources.memory: unknown key (known: gpus, cpus)"),
    ("services:\n  a:\n    target: a.py\n    batching:\n      run: {max_batch_size: 0}\n",
     "d.yaml:5: services.a.batching.run.max_batch_size: must be 1 or more, not 0"),
    ("services:\n  a:\n    target: a.py\n    batching:\n      run: {max_latency_ms: -2}\n",
     "d.yaml:5: services.a.batching.run.max_latency_ms: must be 0 or more, not -2"),
    ("services:\n  a:\n    target: a.py\n    batching:\n      run: {size: 2}\n",
     "d.yaml:5: services.a.batching.run.size: unknown key (known: max_batch_size, "
     "max_latency_ms)"),
    ("services:\n  a:\n    target: a.py\n    batching:\n      run: {}\n",
     "d.yaml:5: services.a.batching.run: empty: give max_batch_size and/or max_latency_ms"),
    ("services:\n  a: {target: a.py}\nsettings:\n  nope: {x: 1}\n",
     "d.yaml:4: settings.nope: unknown key (known: broker, gateway, worker, jobs, curve, "
     "heartbeat, request, batching, stream, cluster, tracing, log)"),
    ("services:\n  a: {target: a.py}\nsettings:\n  broker: {max_queue: many}\n",
     "d.yaml:4: settings.broker.max_queue: broker.max_queue must be int, got 'many'"),
    ("services:\n  a: {target: a.py}\nsettings:\n  broker: {colour: red}\n",
     "d.yaml:4: settings.broker.colour: unknown key (known: frontend, backend, max_queue, "
     "retry_after_s, max_dispatches, metrics_host, metrics_port)"),
    ("services:\n  a: {target: a.py, workers: !!python/name:os.system }\n",
     "d.yaml:2: services.a.workers: not a plain value (could not determine a constructor for "
     "the tag 'tag:yaml.org,2002:python/name:os.system')"),
    ("services:\n  a: {target: a.py}\nsettings:\n  request: {default_timeout_s: }\n",
     "d.yaml:4: settings.request.default_timeout_s: empty: give a value"),
    ("services:\n  a: {target: a.py}\n  {x: 1}: {target: b.py}\n",
     "d.yaml:3: services: keys must be names, not a mapping"),
    ("services:\n  a: {target: a.py\n", "d.yaml:3: not YAML: expected ',' or '}', but got "
                                        "'<stream end>'"),
])
def test_each_kind_of_mistake_names_its_key_and_line(text: str, expected: str) -> None:
    assert _problems(text) == [expected]


def test_the_error_message_lists_every_problem_in_line_order() -> None:
    with pytest.raises(DeploymentError) as caught:
        parse_deployment("services:\n  b: {target: b.py, workers: x}\n  a: {workers: 1}\n",
                         "d.yaml")
    message = str(caught.value)
    assert message.startswith("d.yaml: 2 problem(s) in the deployment file:")
    assert message.index("d.yaml:2:") < message.index("d.yaml:3:")


def test_deployment_files_are_named_by_their_suffix() -> None:
    assert is_deployment_file("deploy.yaml") and is_deployment_file("a/B.YML")
    assert not is_deployment_file("mlp.py") and not is_deployment_file("pkg.mod:Cls")
