"""Measured energy of a piece of work, where the machine can tell: an :class:`EnergyMeter` per phase.

- :class:`NvmlMeter`: the GPU's cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
  millijoules since the driver loaded; Volta or newer) read at ``start()`` and ``stop()``. Needs
  ``pynvml`` (the ``nvidia-ml-py`` package) and a CUDA device.
- :class:`PowerSamplingMeter`: the fallback when the energy counter is missing (older GPUs, or no
  ``pynvml`` but a ROCm build): a background thread samples ``torch.cuda.power_draw`` (milliwatts; torch
  has no energy counter, only this power reading) and integrates it over time (trapezoids). Coarser: the
  sensor averages over 1/6 .. 1 s.
- :class:`NullMeter`: a CPU-only machine (or no working meter): ``stop()`` returns ``None`` and
  :attr:`~NullMeter.reason` says why.

:func:`best_meter` picks the first that works. Usage::

    meter = best_meter()
    meter.start(); work(); joules = meter.stop()   # None when no meter is available

The meters measure the whole device (every process on it), not one process.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from typing import Any, Protocol, runtime_checkable

__all__ = ["EnergyMeter", "NvmlMeter", "PowerSamplingMeter", "NullMeter", "best_meter", "NO_METER"]

#: what a :class:`NullMeter` reports (the measured section's ``energy_meter`` field)
NO_METER = "none available"


@runtime_checkable
class EnergyMeter(Protocol):
    """Measures the energy between :meth:`start` and :meth:`stop`."""

    name: str

    def start(self) -> None:
        """Begin a measurement (restarts one in progress)."""

    def stop(self) -> float | None:
        """End the measurement; joules since :meth:`start`, or ``None`` when this meter cannot measure."""

    def describe(self) -> str:
        """One line: what is measured, or why nothing is."""


class NullMeter:
    """No energy meter on this machine: every measurement is ``None``."""

    name = "none"

    def __init__(self, reason: str = "no energy meter available") -> None:
        self.reason = reason

    def start(self) -> None:
        return None

    def stop(self) -> float | None:
        return None

    def describe(self) -> str:
        return self.reason


def _nvml_index(cuda_index: int) -> int:
    """The NVML index of CUDA device ``cuda_index`` (NVML ignores ``CUDA_VISIBLE_DEVICES``; numeric lists only)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        ids = [s.strip() for s in visible.split(",") if s.strip()]
        if all(s.isdigit() for s in ids) and cuda_index < len(ids):
            return int(ids[cuda_index])
    return cuda_index


class NvmlMeter:
    """GPU energy from NVML's cumulative counter (millijoules) read at start and stop.

    Raises at construction when ``pynvml`` cannot be imported, NVML fails to initialise or the device has
    no energy counter (pre-Volta): :func:`best_meter` then falls back.
    """

    name = "nvml"

    def __init__(self, index: int = 0, *, nvml: Any | None = None) -> None:
        self._nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        self._nvml.nvmlInit()
        self.index = index
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
        self._start_mj: float | None = None
        self._read()  # probe: raises when the counter is not supported

    def _read(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def start(self) -> None:
        self._start_mj = self._read()

    def stop(self) -> float | None:
        if self._start_mj is None:
            raise RuntimeError("NvmlMeter.stop() without start()")
        joules = (self._read() - self._start_mj) / 1000.0
        self._start_mj = None
        return joules

    def describe(self) -> str:
        return f"NVML total energy counter of GPU {self.index} (nvmlDeviceGetTotalEnergyConsumption, mJ)"


class PowerSamplingMeter:
    """GPU energy as the time integral of sampled power (``torch.cuda.power_draw``, milliwatts)."""

    name = "power-sampling"

    def __init__(self, device: Any = None, interval_s: float = 0.05, *, read_mw: Any | None = None) -> None:
        if read_mw is None:
            import torch

            def read_mw() -> float:
                return float(torch.cuda.power_draw(device))

        self._read_mw = read_mw
        self.interval_s = interval_s
        self._read_mw()  # probe: raises when no power reading is possible
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        self._samples.append((time.perf_counter(), self._read_mw() / 1000.0))

    def start(self) -> None:
        if self._thread is not None:
            self.stop()
        self._samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="power-sampling", daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        if self._thread is None:
            raise RuntimeError("PowerSamplingMeter.stop() without start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()
        s = self._samples
        return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(s, s[1:]))

    def describe(self) -> str:
        return f"torch.cuda.power_draw sampled every {self.interval_s:g} s and integrated (coarse)"


def best_meter(device: Any = None, *, cuda_available: bool | None = None) -> EnergyMeter:
    """The best energy meter for ``device`` (default: the current CUDA device): NVML's energy counter,
    else sampled power, else a :class:`NullMeter` saying why there is none.

    ``cuda_available`` overrides ``torch.cuda.is_available()`` (tests).
    """
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return NullMeter(f"{NO_METER}: CPU-only machine (no CUDA device)")
    if device is not None and torch.device(device).type != "cuda":
        return NullMeter(f"{NO_METER}: {device} is not a CUDA device (no energy counter for CPUs here)")
    index = torch.device(device).index if device is not None else None
    if index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    reasons = []
    try:
        return NvmlMeter(_nvml_index(index))
    except Exception as exc:  # noqa: BLE001 - import errors, NVMLError_NotSupported, driver problems alike
        reasons.append(f"NVML energy counter: {type(exc).__name__}: {exc}")
    try:
        return PowerSamplingMeter(index)
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"torch.cuda.power_draw: {type(exc).__name__}: {exc}")
    return NullMeter(f"{NO_METER}: " + "; ".join(reasons))
