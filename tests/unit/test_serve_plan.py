"""What `zeroserve serve` starts for a deployment: each service's workers with their own flags
and devices, and the names a deployment's entries must carry."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zeroserve.cli.embedded import child_env
from zeroserve.cli.serve_plan import (
    command_line_deployment,
    daemons,
    named,
    plan_gpus,
    worker_names,
)
from zeroserve.cli.targets import LoadedTarget, TargetError, load_targets
from zeroserve.deployment import parse_deployment
from zeroserve.service import load_service

ROOT = Path(__file__).resolve().parents[2]
TWO = parse_deployment("""\
services:
  mlp: {target: /m/mlp.py, workers: 2, slots: 3, resources: {gpus: 1}}
  text: {target: pkg.text:Text}
""", "d.yaml")


def test_each_service_gets_its_workers_with_its_own_flags() -> None:
    plan = daemons(TWO, "tcp://0.0.0.0:7000", "tcp://*:7001", "s.yaml", {"A": "1"}, None)
    assert [d.name for d in plan] == ["broker", "gateway", "worker-mlp-1", "worker-mlp-2",
                                      "worker-text-1"]
    broker, gateway, worker, _, text = plan
    assert broker.argv == (sys.executable, "-m", "broker", "--frontend", "tcp://0.0.0.0:7000",
                           "--backend", "tcp://*:7001", "--config", "s.yaml")
    assert gateway.argv[3:5] == ("--frontend", "tcp://127.0.0.1:7000")
    assert worker.argv[2:] == ("worker", "/m/mlp.py", "--backend", "tcp://127.0.0.1:7001",
                               "--frontend", "tcp://127.0.0.1:7000", "--slots", "3",
                               "--config", "s.yaml")
    assert text.argv[2:6] == ("worker", "pkg.text:Text", "--backend", "tcp://127.0.0.1:7001")
    assert all(d.env == {"A": "1"} for d in plan)  # no GPU asked for: CUDA_* left alone


def test_gpu_workers_see_their_devices_and_the_others_none() -> None:
    gpus = plan_gpus(TWO, ["0", "1"])
    assert gpus == {"worker-mlp-1": ("0",), "worker-mlp-2": ("1",)}
    env = {d.name: d.env.get("CUDA_VISIBLE_DEVICES")
           for d in daemons(TWO, "tcp://a:1", "tcp://a:2", None, {}, gpus)}
    assert env == {"broker": None, "gateway": None, "worker-mlp-1": "0", "worker-mlp-2": "1",
                   "worker-text-1": ""}
    assert plan_gpus(command_line_deployment(["a.py"], 3), []) is None


def test_the_workers_of_a_run_of_one_service_are_numbered_alone() -> None:
    one = named(command_line_deployment(["a.py"], 2), {"a.py": LoadedTarget("a", "a.py:A")})
    assert [n for _, n in worker_names(one)] == ["worker-1", "worker-2"]


def test_command_line_services_are_named_by_what_their_targets_declare() -> None:
    deployment = named(command_line_deployment(["a.py", "b.py:B"], 3),
                       {"a.py": LoadedTarget("alpha", "a.py:A"),
                        "b.py:B": LoadedTarget("beta", "b.py:B")})
    assert [s.target for s in deployment.services] == ["a.py:A", "b.py:B"]
    assert [(s.name, n) for s, n in worker_names(deployment)] == [
        ("alpha", "worker-alpha-1"), ("alpha", "worker-alpha-2"), ("alpha", "worker-alpha-3"),
        ("beta", "worker-beta-1"), ("beta", "worker-beta-2"), ("beta", "worker-beta-3")]


def test_an_entry_named_otherwise_than_its_service_or_a_service_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"d.yaml:3: services.text: pkg.text:Text serves "
                                         r"'words'; name the entry 'words'"):
        named(TWO, {"/m/mlp.py": LoadedTarget("mlp", "/m/mlp.py:MLP"),
                     "pkg.text:Text": LoadedTarget("words", "pkg.text:Text")})
    with pytest.raises(ValueError, match="a.py:A and b.py:B both serve 'same'"):
        named(command_line_deployment(["a.py", "b.py"], 1),
              {"a.py": LoadedTarget("same", "a.py:A"), "b.py": LoadedTarget("same", "b.py:B")})


def test_settings_reach_the_daemons_as_variables_the_settings_read_back() -> None:
    env = child_env({"batching.overrides": {"mlp.predict": {"max_batch_size": 4}},
                     "worker__slots": 3, "cluster__name": "c", "log__level": None})
    assert env["ZEROSERVE_BATCHING_OVERRIDES"] == '{"mlp.predict": {"max_batch_size": 4}}'
    assert env["ZEROSERVE_WORKER_SLOTS"] == "3" and env["ZEROSERVE_CLUSTER_NAME"] == "c"
    assert env.get("ZEROSERVE_LOG_LEVEL") != "None"  # an unset flag sets nothing


def test_a_file_with_one_service_may_be_named_alone() -> None:
    assert load_service(str(ROOT / "examples" / "mlp.py")).name == "mlp"
    assert load_service(str(ROOT / "tests" / "deploy_services.py")).name == "devices"


def test_a_file_with_several_services_lists_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        load_service(str(ROOT / "tests" / "services.py"))
    message = str(caught.value)
    assert "services.py defines" in message and "services; name one:" in message
    assert f"{ROOT / 'tests' / 'services.py'}:Probe" in message and ":Batchy" in message


def test_imported_services_do_not_count_and_a_file_without_one_is_refused(
        tmp_path: Path) -> None:
    own = tmp_path / "own.py"
    own.write_text("import zeroserve\nfrom deploy_services import Devices\n\n"
                   "@zeroserve.service(name='own')\nclass Own:\n"
                   "    @zeroserve.api\n    def run(self) -> int:\n        return 1\n")
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        assert load_service(str(own)).name == "own"
    finally:
        sys.path.remove(str(ROOT / "tests"))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ValueError, match="defines no @zeroserve.service class"):
        load_service(str(empty))
    with pytest.raises(ValueError, match="must look like"):
        load_service("just_a_module")


def test_targets_are_loaded_in_a_child_that_names_their_services() -> None:
    mlp, text = str(ROOT / "examples" / "mlp.py"), f"{ROOT / 'examples' / 'text.py'}:Text"
    assert load_targets([mlp, text]) == {mlp: LoadedTarget("mlp", f"{mlp}:MLP"),
                                         text: LoadedTarget("text", text)}
    with pytest.raises(TargetError, match="cannot load service .*services.py: .* defines"):
        load_targets([str(ROOT / "tests" / "services.py")])
