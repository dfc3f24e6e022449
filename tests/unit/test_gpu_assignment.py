"""GPUs per worker: whole devices never shared, fractions packed onto one device, a clear
refusal when they do not fit; the device lists of --gpus and nvidia-smi -L."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeroserve.cli.gpus import (
    WHOLE,
    GpuRequest,
    GpuShortage,
    assign,
    detect_devices,
    listed_devices,
    parse_devices,
    share,
    visible_devices,
)

FOUR = ["0", "1", "2", "3"]


def _asks(*gpus: float) -> list[GpuRequest]:
    return [GpuRequest(f"w{i + 1}", g) for i, g in enumerate(gpus)]


def test_whole_gpu_workers_each_get_their_own_devices_in_order() -> None:
    assert assign(_asks(1, 2, 1), FOUR) == {"w1": ("0",), "w2": ("1", "2"), "w3": ("3",)}


def test_workers_that_ask_for_no_gpu_get_none() -> None:
    chosen = assign(_asks(0, 1), ["0", "1"])
    assert chosen == {"w2": ("0",)}
    assert visible_devices(chosen, "w1") == "" and visible_devices(chosen, "w2") == "0"


def test_fractional_workers_share_a_device_that_whole_ones_never_get() -> None:
    chosen = assign(_asks(0.5, 1, 0.5, 0.5), ["0", "1", "2"])
    assert chosen["w2"] == ("0",)
    assert chosen["w1"] == chosen["w3"] == ("1",) and chosen["w4"] == ("2",)


def test_thirds_fit_three_to_a_device_and_larger_shares_are_placed_first() -> None:
    chosen = assign(_asks(0.333, 0.333, 0.333, 0.7), ["0", "1"])
    assert chosen["w4"] == ("0",)
    assert {chosen[w] for w in ("w1", "w2", "w3")} == {("1",)}


def test_too_few_devices_is_refused_naming_what_is_asked_and_what_there_is() -> None:
    with pytest.raises(GpuShortage) as caught:
        assign(_asks(1, 1, 1), ["0", "1"])
    message = str(caught.value)
    assert "3 worker(s) ask for 3 in all" in message and "w3 (gpus: 1)" in message
    assert "2 device(s) (0, 1)" in message


def test_no_device_at_all_says_how_to_name_them() -> None:
    with pytest.raises(GpuShortage, match="no device .*--gpus"):
        assign(_asks(0.5), [])


def test_fractions_that_overflow_a_device_take_another_or_are_refused() -> None:
    assert assign(_asks(0.6, 0.6), ["0", "1"]) == {"w1": ("0",), "w2": ("1",)}
    with pytest.raises(GpuShortage):
        assign(_asks(0.6, 0.6), ["0"])


def test_devices_in_use_are_not_given_again() -> None:
    assert assign(_asks(1), ["0", "1"], in_use={"0": WHOLE}) == {"w1": ("1",)}
    assert assign(_asks(0.5), ["0", "1"], in_use={"0": 500}) == {"w1": ("0",)}
    assert assign(_asks(1), ["0", "1"], in_use={"0": 500}) == {"w1": ("1",)}
    with pytest.raises(GpuShortage, match="1 of them in use already"):
        assign(_asks(1), ["0"], in_use={"0": 250})


@given(st.lists(st.sampled_from([0, 0.25, 0.5, 0.75, 1, 2]), max_size=12),
       st.integers(min_value=0, max_value=6))
def test_no_device_is_over_given_and_whole_devices_are_never_shared(
        gpus: list[float], count: int) -> None:
    devices = [str(i) for i in range(count)]
    requests = _asks(*gpus)
    try:
        chosen = assign(requests, devices)
    except GpuShortage:
        return
    load = {d: 0 for d in devices}
    holders: dict[str, set[str]] = {d: set() for d in devices}
    for request in requests:
        mine = chosen.get(request.worker, ())
        assert len(mine) == (0 if request.gpus == 0 else max(1, int(request.gpus)))
        for device in mine:
            load[device] += share(request.gpus) // len(mine)
            holders[device].add(request.worker)
    assert all(used <= WHOLE for used in load.values())
    for request in requests:
        if request.gpus >= 1:
            assert all(holders[d] == {request.worker} for d in chosen[request.worker])


def test_the_gpus_option_lists_devices() -> None:
    assert parse_devices("0,1, 2") == ["0", "1", "2"]
    assert parse_devices("GPU-abc") == ["GPU-abc"]
    for bad in ("", "0,,1", " "):
        with pytest.raises(ValueError, match="separated by commas"):
            parse_devices(bad)
    with pytest.raises(ValueError, match="device.s. 1 more than once"):
        parse_devices("1,0,1")


NVIDIA_SMI = """\
GPU 0: NVIDIA H200 (UUID: GPU-1a2b)
GPU 1: NVIDIA H200 (UUID: GPU-3c4d)
  MIG 1g.18gb     Device  0: (UUID: MIG-5e6f)
"""


def test_nvidia_smi_listing_gives_the_device_indexes() -> None:
    assert listed_devices(NVIDIA_SMI) == ["0", "1"]

    def runs(argv: list[str], **_: object) -> subprocess.CompletedProcess:
        assert argv == ["nvidia-smi", "-L"]
        return subprocess.CompletedProcess(argv, 0, NVIDIA_SMI, "")

    assert detect_devices(runs) == ["0", "1"]


def test_a_missing_or_failing_nvidia_smi_means_no_device() -> None:
    def missing(argv: list[str], **_: object) -> subprocess.CompletedProcess:
        raise FileNotFoundError("nvidia-smi")

    def failing(argv: list[str], **_: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(argv, 9, "", "NVIDIA-SMI has failed")

    assert detect_devices(missing) == [] and detect_devices(failing) == []
