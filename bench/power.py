"""Board power while a cell runs, where the platform reports it: NVML (pynvml) or Jetson's tegrastats.

A sampler thread (or the tegrastats process) reads power during the timed window; energy per
image is mean power x wall time / images. Where no source exists the figure is ``None`` and the
report says n/a: a guessed number would be worse than none.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import threading
import time
from typing import Any

_TEGRA_POWER = re.compile(r"(VDD_IN|POM_5V_IN|VIN_SYS_5V0)\s+(\d+)mW")


def power_source(device: str) -> str | None:
    """Which power source applies to a cell on ``device``: 'nvml', 'tegrastats' or None."""
    if shutil.which("tegrastats") is not None:
        return "tegrastats"
    if device == "cuda" and importlib.util.find_spec("pynvml") is not None:
        return "nvml"
    return None


class PowerMeter:
    """``with PowerMeter(device) as meter: ...``; then ``meter.mean_watts`` (None without a source)."""

    def __init__(self, device: str, interval_s: float = 0.05):
        self.source = power_source(device)
        self.interval_s = interval_s
        self.readings_w: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None
        self._handle: Any = None

    def __enter__(self) -> "PowerMeter":
        if self.source == "nvml":
            import pynvml  # type: ignore[import-not-found,unused-ignore]

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._thread = threading.Thread(target=self._sample_nvml, args=(pynvml,), daemon=True)
            self._thread.start()
        elif self.source == "tegrastats":
            interval_ms = max(int(self.interval_s * 1000), 10)
            self._process = subprocess.Popen(
                ["tegrastats", "--interval", str(interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            self._thread = threading.Thread(target=self._read_tegrastats, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.source == "nvml":
            import pynvml  # type: ignore[import-not-found,unused-ignore]

            pynvml.nvmlShutdown()

    def _sample_nvml(self, pynvml: Any) -> None:
        while not self._stop.is_set():
            self.readings_w.append(pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0)
            time.sleep(self.interval_s)

    def _read_tegrastats(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            match = _TEGRA_POWER.search(line)
            if match:
                self.readings_w.append(int(match.group(2)) / 1000.0)
            if self._stop.is_set():
                break

    @property
    def mean_watts(self) -> float | None:
        return sum(self.readings_w) / len(self.readings_w) if self.readings_w else None

    def joules_per_item(self, wall_s: float, items: int) -> float | None:
        watts = self.mean_watts
        return None if watts is None or items <= 0 else watts * wall_s / items
