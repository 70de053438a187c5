"""How many of the machine's cores a stage kept busy: CPU seconds per wall second, from the kernel's counters.

Machine-wide on purpose: a stage's work runs in Ray actors and engine subprocesses that come and go, and a
per-process sum would miss the ones that exit. On a machine running nothing else it is the stage's own use;
the report says it is machine-wide.
"""

from __future__ import annotations

import time

import psutil


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle


class CpuMeter:
    """`with CpuMeter() as meter: ...` then `meter.cores_busy` (0..cores) over the block's wall time."""

    def __enter__(self) -> CpuMeter:
        self._busy, self._wall = _busy_seconds(), time.perf_counter()
        self.cores_busy = 0.0
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        self.cores_busy = (_busy_seconds() - self._busy) / wall if wall > 0 else 0.0
