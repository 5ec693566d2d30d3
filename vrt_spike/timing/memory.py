"""The one peak-memory probe: a phase's peak on CUDA or on a CPU, and the bytes of live tensors.

CUDA: the allocator's high-water mark (`torch.cuda.max_memory_allocated`, tensors only, reset per
phase). CPU: the process's resident-set high-water mark (Linux `VmHWM`, reset per phase by
writing 5 to `/proc/self/clear_refs`; where that is not permitted, `ru_maxrss`, the high-water mark
since the process started). A phase's tensors peak (`tensors_peak`, what the memory plan
predicts): the CUDA figure, or on a CPU the tensors live at the reset plus the RSS rise.

Imports torch only: the timer, summary.json's figures (`vrt_spike.lit.run_figures`), predict and
the bench all use it.
"""
from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = ["PeakMemory", "storage_bytes"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int | None:
    """A ``/proc/self/status`` figure (``VmHWM``, ``VmRSS``) in bytes; None where unreadable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages under ``tensors`` (views and shared buffers count once)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


class PeakMemory:
    """Per-phase peak memory of `device`: `reset()` before a phase, `read()` after it; `level` is
    the memory in use at `reset()` and `rise()` how far the peak went above it.

    On a CPU the rise is the memory the phase's new tensors took only when glibc returns freed
    memory at once: run the process with ``MALLOC_MMAP_THRESHOLD_=8192`` (every buffer of 8 KiB
    or more is then its own mapping, unmapped when freed); otherwise a tensor may reuse memory an
    earlier phase freed and the rise reads low (a tiny training step: 79 MiB instead of 255).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._rss_resettable = False
        self.level = 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.level = int(torch.cuda.memory_allocated(self.device))
            return
        try:
            _CLEAR_REFS.write_text("5")
            self._rss_resettable = _status_bytes("VmHWM") is not None
        except OSError:
            self._rss_resettable = False
        self.level = _status_bytes("VmRSS") or 0

    def read(self) -> int:
        """Peak bytes since the last `reset()`: CUDA allocated, or the process's RSS on a CPU."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self._rss_resettable:
            hwm = _status_bytes("VmHWM")
            if hwm is not None:
                return hwm
        # Linux reports ru_maxrss in KiB.
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def rise(self) -> int:
        """Peak bytes since `reset()` above the level at `reset()`."""
        return self.read() - self.level

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
