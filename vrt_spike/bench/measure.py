"""Timing loops over any callable and peak-memory probes, on CUDA or CPU.

CUDA: one pair of events per iteration on the current stream, resolved after the loop (one
synchronisation for the whole loop, none inside it). CPU: `time.perf_counter` around each call.

Peak memory: CUDA allocator high-water mark (`torch.cuda.max_memory_allocated`, tensors only, reset
per phase); on CPU the process resident-set high-water mark (Linux `VmHWM`, reset per phase by
writing 5 to `/proc/self/clear_refs`; where that is not permitted, `ru_maxrss`, the high-water mark
since process start, and the kind says so).
"""
from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Spread:
    """Median and 10th/90th percentiles of a sample of times in milliseconds."""

    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, values_ms: list[float]) -> Spread:
        if not values_ms:
            raise ValueError("no timed iterations: bench.iters must be >= 1")
        arr = np.asarray(values_ms, dtype=np.float64)
        p10, med, p90 = np.percentile(arr, [10, 50, 90])
        return cls(median=float(med), p10=float(p10), p90=float(p90), n=len(values_ms))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Callable[[], Any], *, warmup: int, iters: int,
                  device: torch.device) -> list[float]:
    """Call `fn` `warmup` times untimed, then `iters` times timed; per-call times in ms."""
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _vm_hwm_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Per-phase peak memory of `device`: `reset()` before a phase, `read()` after it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._rss_resettable = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
            self._rss_resettable = _vm_hwm_bytes() is not None
        except OSError:
            self._rss_resettable = False

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "cuda_max_allocated"
        return "cpu_rss_hwm" if self._rss_resettable else "cpu_rss_hwm_since_start"

    def read(self) -> int:
        """Peak bytes since the last `reset()` (see `kind` for what is measured)."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self._rss_resettable:
            hwm = _vm_hwm_bytes()
            if hwm is not None:
                return hwm
        # Linux reports ru_maxrss in KiB.
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
