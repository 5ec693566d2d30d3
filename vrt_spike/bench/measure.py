"""Timing loops over any callable and peak-memory probes, on CUDA or CPU.

CUDA: one pair of events per iteration on the current stream, resolved after the loop (one
synchronisation for the whole loop, none inside it). CPU: `time.perf_counter` around each call.

Peak memory (`PeakMemory`): CUDA allocator high-water mark (`torch.cuda.max_memory_allocated`,
tensors only, reset per phase); on CPU the process resident-set high-water mark (Linux `VmHWM`,
reset per phase by writing 5 to `/proc/self/clear_refs`; where that is not permitted, `ru_maxrss`,
the high-water mark since process start). A phase's tensors peak (`tensors_peak`, what the memory
plan predicts): the CUDA figure, or on a CPU the tensors live at the reset plus the RSS rise.
"""
from __future__ import annotations

import os
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


def _rss_bytes() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Per-phase peak memory of `device`: `reset()` before a phase, `read()` after it; `rise()` is
    how far the peak went above the level at `reset()`.

    On a CPU the rise is the memory the phase's new tensors took only when glibc returns freed
    memory at once: run the process with ``MALLOC_MMAP_THRESHOLD_=8192`` (every buffer of 8 KiB
    or more is then its own mapping, unmapped when freed); otherwise a tensor may reuse memory an
    earlier phase freed and the rise reads low (a tiny training step: 79 MiB instead of 255).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._rss_resettable = False
        self._level = 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._level = int(torch.cuda.memory_allocated(self.device))
            return
        try:
            _CLEAR_REFS.write_text("5")
            self._rss_resettable = _vm_hwm_bytes() is not None
        except OSError:
            self._rss_resettable = False
        self._level = _rss_bytes()

    def rise(self) -> int:
        """Peak bytes since `reset()` above the level at `reset()`."""
        return self.read() - self._level

    def tensors_peak(self, live_bytes: int) -> int:
        """Peak bytes of tensors since `reset()`: the CUDA allocator's high-water mark, or on a CPU
        ``live_bytes`` (what the caller counted as live at `reset()`) plus the RSS rise."""
        return self.read() if self.device.type == "cuda" else live_bytes + self.rise()

    @property
    def kind(self) -> str:
        """What :meth:`tensors_peak` measures."""
        if self.device.type == "cuda":
            return "cuda_max_allocated"
        kind = "cpu_tensors_rss_rise" if self._rss_resettable else "cpu_tensors_rss_rise_since_start"
        return kind if os.environ.get("MALLOC_MMAP_THRESHOLD_") else f"{kind}_unpinned"

    def read(self) -> int:
        """Peak bytes since the last `reset()`: CUDA allocated, or the process's RSS on a CPU."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self._rss_resettable:
            hwm = _vm_hwm_bytes()
            if hwm is not None:
                return hwm
        # Linux reports ru_maxrss in KiB.
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
