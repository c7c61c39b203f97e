"""Energy meters: the NVML path with only the NVML calls faked (a fake ``pynvml`` module), and the CPU path."""

from __future__ import annotations

import sys
import types

import pytest

from incremental.energy_meter import (
    NO_METER,
    EnergyMeter,
    NullMeter,
    NvmlMeter,
    PowerSamplingMeter,
    best_meter,
)


def fake_pynvml(step_mj: int = 2500, supported: bool = True) -> types.ModuleType:
    """A stand-in ``pynvml``: the energy counter rises by ``step_mj`` millijoules per read."""
    mod = types.ModuleType("pynvml")
    state = {"mj": 1_000_000, "init": 0, "handles": []}

    class NVMLError(Exception):
        pass

    def nvmlInit() -> None:
        state["init"] += 1

    def nvmlDeviceGetHandleByIndex(i: int) -> object:
        state["handles"].append(i)
        return ("handle", i)

    def nvmlDeviceGetTotalEnergyConsumption(handle: object) -> int:
        assert handle[0] == "handle"
        if not supported:
            raise NVMLError("Not Supported")
        state["mj"] += step_mj
        return state["mj"]

    mod.NVMLError = NVMLError
    mod.nvmlInit = nvmlInit
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    mod.nvmlDeviceGetTotalEnergyConsumption = nvmlDeviceGetTotalEnergyConsumption
    mod.state = state
    return mod


def test_nvml_meter_reads_counter_difference_in_joules(monkeypatch):
    fake = fake_pynvml(step_mj=2500)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = NvmlMeter(0)
    assert isinstance(meter, EnergyMeter)
    assert fake.state["init"] == 1 and fake.state["handles"] == [0]
    meter.start()
    assert meter.stop() == pytest.approx(2.5)  # one read at start, one at stop: 2500 mJ apart
    meter.start()
    assert meter.stop() == pytest.approx(2.5)
    assert "NVML" in meter.describe()


def test_nvml_meter_stop_without_start_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    with pytest.raises(RuntimeError):
        NvmlMeter(0).stop()


def test_best_meter_prefers_nvml_when_cuda_and_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(step_mj=1000))
    meter = best_meter(cuda_available=True)
    assert isinstance(meter, NvmlMeter)
    meter.start()
    assert meter.stop() == pytest.approx(1.0)


def test_best_meter_falls_back_when_counter_unsupported(monkeypatch):
    # pre-Volta: the energy counter raises; then power sampling (also via pynvml here: no GPU) or nothing
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(supported=False))
    meter = best_meter(cuda_available=True)
    assert not isinstance(meter, NvmlMeter)
    if isinstance(meter, NullMeter):
        assert meter.stop() is None
        assert "NVML energy counter" in meter.describe() and "Not Supported" in meter.describe()


def test_best_meter_without_pynvml_and_cuda_reports_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    meter = best_meter(cuda_available=True)
    assert not isinstance(meter, NvmlMeter)


def test_cpu_only_machine_has_null_meter():
    meter = best_meter(cuda_available=False)
    assert isinstance(meter, NullMeter)
    assert isinstance(meter, EnergyMeter)
    meter.start()
    assert meter.stop() is None
    assert meter.describe().startswith(NO_METER)
    assert "CPU" in meter.describe()


def test_cpu_device_has_null_meter():
    meter = best_meter("cpu", cuda_available=True)
    assert isinstance(meter, NullMeter) and meter.stop() is None


def test_power_sampling_integrates_power():
    meter = PowerSamplingMeter(interval_s=0.005, read_mw=lambda: 2000.0)  # a constant 2 W
    meter.start()
    import time

    t0 = time.perf_counter()
    time.sleep(0.05)
    joules = meter.stop()
    elapsed = time.perf_counter() - t0
    assert joules == pytest.approx(2.0 * elapsed, rel=0.3)
