"""Settings: defaults, then YAML, then environment, then flags."""
import pytest

from zeroserve.config import ConfigError, load_settings


def test_layers_override_in_order(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("heartbeat:\n  interval_s: 2\nbroker:\n  max_queue: 10\n")
    s = load_settings(str(cfg), {"broker.max_queue": 30},
                      environ={"ZEROSERVE_HEARTBEAT_INTERVAL_S": "0.5",
                               "ZEROSERVE_BROKER_MAX_QUEUE": "20"})
    assert s.get("heartbeat.interval_s") == 0.5
    assert s.get("broker.max_queue") == 30
    assert s.get("heartbeat.liveness") == 3


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
    assert a.get("worker.slots") == 5 and b.get("worker.slots") == 2
