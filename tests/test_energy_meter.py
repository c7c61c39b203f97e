"""Energy meters. Only the library boundary is faked — ``pynvml``'s calls (a stand-in module with scripted
counter readings), ``torch.cuda.power_draw`` and the clock — and the meters' own arithmetic is checked
against hand-computed joules."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

import incremental.train.energy_meter as em
from incremental.train.energy_meter import (
    NO_METER,
    EnergyMeter,
    NullMeter,
    NvmlMeter,
    PowerSamplingMeter,
    best_meter,
)


def scripted_pynvml(readings_mj: list[int] | None = None, error: str | None = None) -> types.ModuleType:
    """A stand-in ``pynvml`` whose energy counter returns ``readings_mj`` in turn (or raises ``error``)."""
    mod = types.ModuleType("pynvml")
    state = {"init": 0, "handles": [], "reads": list(readings_mj or [])}

    class NVMLError(Exception):
        pass

    def nvmlInit() -> None:
        state["init"] += 1

    def nvmlDeviceGetHandleByIndex(i: int) -> tuple[str, int]:
        state["handles"].append(i)
        return ("handle", i)

    def nvmlDeviceGetTotalEnergyConsumption(handle: tuple[str, int]) -> int:
        if error is not None:
            raise NVMLError(error)
        return state["reads"].pop(0)

    mod.NVMLError = NVMLError
    mod.nvmlInit = nvmlInit
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    mod.nvmlDeviceGetTotalEnergyConsumption = nvmlDeviceGetTotalEnergyConsumption
    mod.state = state
    return mod


def test_nvml_meter_is_the_counter_difference_in_joules() -> None:
    # probe 1,000,000 mJ; first run 1,234,567 -> 1,240,067 mJ = 5.5 J; second 1,240,067 -> 2,240,067 = 1000 J
    nvml = scripted_pynvml([1_000_000, 1_234_567, 1_240_067, 1_240_067, 2_240_067])
    meter = NvmlMeter(2, nvml=nvml)
    assert isinstance(meter, EnergyMeter)
    assert nvml.state["init"] == 1 and nvml.state["handles"] == [2]
    meter.start()
    assert meter.stop() == 5.5
    meter.start()
    assert meter.stop() == 1000.0
    assert nvml.state["reads"] == []  # exactly one read at each start and stop (plus the probe)
    assert "NVML" in meter.describe() and "GPU 2" in meter.describe()


def test_nvml_meter_stop_without_start_is_an_error() -> None:
    meter = NvmlMeter(0, nvml=scripted_pynvml([5, 6]))
    with pytest.raises(RuntimeError, match="without start"):
        meter.stop()


def test_best_meter_uses_nvml_on_the_visible_device(monkeypatch) -> None:
    nvml = scripted_pynvml([0, 10_000, 12_500])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    meter = best_meter(cuda_available=True)  # CUDA device 0 is NVML device 3
    assert type(meter) is NvmlMeter and nvml.state["handles"] == [3]
    meter.start()
    assert meter.stop() == 2.5


def _power(monkeypatch, result: float | None) -> None:
    def power_draw(device=None) -> float:
        if result is None:
            raise RuntimeError("no power reading on this machine")
        return result

    monkeypatch.setattr(torch.cuda, "power_draw", power_draw)


def test_without_the_energy_counter_best_meter_samples_power(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", scripted_pynvml(error="Not Supported"))
    _power(monkeypatch, 150_000.0)  # 150 W, in milliwatts
    meter = best_meter(cuda_available=True)
    assert type(meter) is PowerSamplingMeter


def test_with_neither_meter_best_meter_says_why(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", scripted_pynvml(error="Not Supported"))
    _power(monkeypatch, None)
    meter = best_meter(cuda_available=True)
    assert type(meter) is NullMeter and meter.stop() is None
    text = meter.describe()
    assert text.startswith(NO_METER)
    assert "NVML energy counter" in text and "Not Supported" in text
    assert "torch.cuda.power_draw" in text and "no power reading" in text


def test_without_pynvml_best_meter_reports_the_import_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    _power(monkeypatch, None)
    meter = best_meter(cuda_available=True)
    assert type(meter) is NullMeter and "ModuleNotFoundError" in meter.describe()


def test_cpu_only_machine_has_null_meter() -> None:
    meter = best_meter(cuda_available=False)
    assert type(meter) is NullMeter
    meter.start()
    assert meter.stop() is None
    assert meter.describe() == f"{NO_METER}: CPU-only machine (no CUDA device)"


def test_cpu_device_has_null_meter() -> None:
    meter = best_meter("cpu", cuda_available=True)
    assert type(meter) is NullMeter and meter.stop() is None
    assert meter.describe() == f"{NO_METER}: cpu is not a CUDA device (no energy counter for CPUs here)"


def test_power_sampling_integrates_by_trapezoids(monkeypatch) -> None:
    # scripted clock and power: samples (10 s, 100 W) and (12 s, 200 W): (12 − 10) · (100 + 200) / 2 = 300 J
    clock = iter([10.0, 12.0])
    powers = iter([50_000.0, 100_000.0, 200_000.0])  # the first reading is the constructor's probe
    monkeypatch.setattr(em.time, "perf_counter", lambda: next(clock))
    meter = PowerSamplingMeter(interval_s=3600, read_mw=lambda: next(powers))
    meter.start()
    deadline = time.monotonic() + 10
    while not meter._samples and time.monotonic() < deadline:  # the sampling thread's first sample
        time.sleep(0.001)
    assert meter.stop() == 300.0
    with pytest.raises(RuntimeError, match="without start"):
        meter.stop()
