"""The figures every run's ``summary.json`` carries for the sweep summary: devices, world size, wall-clock
span, step time, throughput, peak memory, parameter count. Each comes from an existing measurement: the
timing callback's (the step time, samples/s, the CUDA allocator peak of its steps) and
``vrt_spike.timing.memory.PeakMemory`` (the process RSS peak on a CPU)."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from vrt_spike.timing.memory import PeakMemory
from vrt_spike.lit.runtime import device_label
from vrt_spike.timing.callback import TimingCallback

__all__ = ["RunFigures"]

MIB = 1 << 20


class RunFigures:
    """Started before a fit, collected after it."""

    def __init__(self) -> None:
        self.started_at = time.time()
        # A sweep worker process runs many jobs: the RSS high-water mark starts again with each.
        self._rss = PeakMemory(torch.device("cpu"))
        self._rss.reset()

    def collect(self, trainer: L.Trainer, net: torch.nn.Module, callbacks: list[Callback]) -> dict[str, Any]:
        """``world_size``, ``device``, ``started_at`` / ``ended_at`` (epoch seconds), ``step_time_s`` (the
        TimingCallback's median step, warm-up left out), ``samples_per_s`` (the TimingCallback's: every
        rank's samples over its step time, warm-up left out), ``peak_mem_bytes`` and
        ``peak_mem_kind`` (CUDA: the highest per-step allocator peak of any rank, from the timing
        callback, which resets the allocator's peak at every span; CPU: this process's RSS peak) and
        ``params``. Figures that were not measured (no timing callback) are None."""
        timing = next((c for c in callbacks if isinstance(c, TimingCallback) and c.enabled), None)
        root = trainer.strategy.root_device
        step = timing.step_stats() if timing is not None else None
        if root.type == "cuda":
            peak = None if step is None or step.peak_mem_mib is None else int(round(step.peak_mem_mib * MIB))
            kind = "cuda_max_allocated_per_step"
        else:
            peak, kind = self._rss.read(), self._rss.kind
        return {
            "world_size": int(trainer.world_size),
            "device": device_label(root, list(trainer.device_ids)),
            "started_at": self.started_at,
            "ended_at": time.time(),
            "step_time_s": None if step is None else step.p50_ms / 1e3,
            "samples_per_s": timing.samples_per_s if timing is not None else None,
            "peak_mem_bytes": peak,
            "peak_mem_kind": kind,
            "params": sum(p.numel() for p in net.parameters()),
        }
