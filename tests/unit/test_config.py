"""Settings: defaults, then YAML, then environment, then flags; typed sections; old names."""
import dataclasses
import logging

import pytest

from zeroserve.config import (
    RENAMED,
    ConfigError,
    GatewaySettings,
    HeartbeatSettings,
    Settings,
    WorkerSettings,
    load_settings,
)
from zeroserve.container import Container


def test_layers_override_in_order(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("heartbeat:\n  interval_s: 2\nbroker:\n  max_queue: 10\n")
    s = load_settings(str(cfg), {"broker.max_queue": 30},
                      environ={"ZEROSERVE_HEARTBEAT_INTERVAL_S": "0.5",
                               "ZEROSERVE_BROKER_MAX_QUEUE": "20"})
    assert s.heartbeat.interval_s == 0.5
    assert s.broker.max_queue == 30
    assert s.heartbeat.liveness == 3


def test_each_layer_alone_overrides_the_defaults(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("worker:\n  slots: 7\n")
    assert load_settings(str(cfg), environ={}).worker.slots == 7
    assert load_settings(environ={"ZEROSERVE_WORKER_SLOTS": "8"}).worker.slots == 8
    assert load_settings(overrides={"worker.slots": 9}, environ={}).worker.slots == 9
    assert load_settings(overrides={"worker.slots": None}, environ={}).worker.slots == 2


def test_unknown_setting_is_an_error(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("broker:\n  max_queeu: 10\n")
    with pytest.raises(ConfigError, match="broker.max_queeu"):
        load_settings(str(cfg), environ={})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="max_queue must be int"):
        load_settings(environ={"ZEROSERVE_BROKER_MAX_QUEUE": "lots"})


def test_settings_are_independent_instances():
    a = load_settings(overrides={"worker.slots": 5}, environ={})
    b = load_settings(environ={})
    assert a.worker.slots == 5 and b.worker.slots == 2


def test_the_defaults_are_the_sections_defaults():
    assert load_settings(environ={}) == Settings()
    assert Settings().gateway == GatewaySettings()


def test_sections_are_typed_and_frozen():
    s = load_settings(environ={"ZEROSERVE_HEARTBEAT_INTERVAL_S": "1",
                               "ZEROSERVE_GATEWAY_PUBLIC_PATHS": "[/a, /b]"})
    assert isinstance(s.worker, WorkerSettings)
    assert s.heartbeat.interval_s == 1.0 and isinstance(s.heartbeat.interval_s, float)
    assert s.gateway.public_paths == ("/a", "/b")
    assert s.heartbeat.liveness_s == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.worker.slots = 3  # type: ignore[misc]


def test_as_dict_is_plain_data_that_loads_back(tmp_path):
    import yaml

    cfg = tmp_path / "all.yaml"
    cfg.write_text(yaml.safe_dump(Settings().as_dict()))
    assert load_settings(str(cfg), environ={}) == Settings()


@pytest.mark.parametrize("old, new", sorted(RENAMED.items()))
def test_an_old_name_in_a_file_is_read_with_one_warning(tmp_path, caplog, old, new):
    section, _, key = old.partition(".")
    value = 5 if key == "max_attempts" else "tcp://10.0.0.1:7000"
    cfg = tmp_path / "old.yaml"
    cfg.write_text(f"{section}:\n  {key}: '{value}'\n" if isinstance(value, str)
                   else f"{section}:\n  {key}: {value}\n")
    with caplog.at_level(logging.WARNING, logger="zeroserve.config"):
        s = load_settings(str(cfg), environ={})
    new_section, _, new_key = new.partition(".")
    assert getattr(getattr(s, new_section), new_key) == value
    warnings = [r.getMessage() for r in caplog.records if old in r.getMessage()]
    assert len(warnings) == 1 and new in warnings[0] and "deprecated" in warnings[0]


def test_an_old_environment_variable_is_read_with_one_warning_for_the_whole_load(
        tmp_path, caplog):
    cfg = tmp_path / "old.yaml"
    cfg.write_text("gateway:\n  broker: tcp://10.0.0.1:1\n")
    with caplog.at_level(logging.WARNING, logger="zeroserve.config"):
        s = load_settings(str(cfg), environ={"ZEROSERVE_GATEWAY_BROKER": "tcp://10.0.0.2:2"})
    assert s.gateway.frontend == "tcp://10.0.0.2:2"  # the environment still wins over the file
    assert len([r for r in caplog.records if "gateway.broker" in r.getMessage()]) == 1


def test_the_new_name_wins_over_the_old_one_in_the_same_layer(caplog):
    s = load_settings(environ={"ZEROSERVE_WORKER_JOBS_HOST": "10.0.0.1",
                               "ZEROSERVE_WORKER_JOB_HOST": "10.0.0.2"})
    assert s.worker.job_host == "10.0.0.2"


def test_new_names_give_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="zeroserve.config"):
        load_settings(environ={"ZEROSERVE_BROKER_MAX_DISPATCHES": "4"})
    assert not caplog.records


def test_container_sections_follow_the_settings_unless_overridden():
    parts = Container.of(load_settings(overrides={"heartbeat.liveness": 5}, environ={}))
    assert parts.heartbeat.get().liveness == 5
    assert parts.worker.get() == WorkerSettings()
    parts.heartbeat.set(HeartbeatSettings(interval_s=0.1))
    assert parts.heartbeat.get().interval_s == 0.1
    parts.heartbeat.reset()
    assert parts.heartbeat.get().liveness == 5


def test_containers_are_independent():
    a, b = Container(), Container()
    a.clock.set(lambda: 42.0)
    assert a.clock.get()() == 42.0 and b.clock.get() is not a.clock.get()
    assert a.zmq_context.get() is a.zmq_context.get()
    assert a.zmq_context.get() is not b.zmq_context.get()
    a.zmq_context.get().term()
    b.zmq_context.get().term()


def test_every_setting_and_old_name_is_documented():
    from pathlib import Path

    from zeroserve.config import env_name

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for section, values in Settings().as_dict().items():
        for key in values:
            assert f"| `{section}.{key}` |" in doc and env_name(f"{section}.{key}") in doc
    for old in RENAMED:
        assert f"`{old}`" in doc
