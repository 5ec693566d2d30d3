"""Measure train.py's own training step without data loading (`python -m vrt_spike.bench`'s
training figures and `vrt_spike.bench.gpu_ladder`'s rungs).

Two pieces that plug into the shipped path through the config, so `vrt_spike.lit.training.train` runs
unchanged (the LightningModule's `training_step`, its optimizer and scheduler, the precision
plugin, compile, the timing callback), and :func:`fixed_batch_config`, which puts them into a
composed `conf/train.yaml`:

- :class:`FixedBatchDataModule` as ``data._target_``: one random batch of the data config's shape,
  made once on the training device and served ``steps`` times (the loader costs nothing to
  measure, and nothing is read from disk);
- :class:`StepClock` as a callback: wall time of the warm-up steps (compilation happens there),
  stops the fit once the timed steps have run long enough, the time of each timed step, peak
  memory of the timed steps, which optimizer ran and, on request, the FLOPs of the first step;
  written to a JSON file at the end of the fit.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset

from vrt_spike.data.splits import Split
from vrt_spike.bench.flops import flop_count, flop_counter_mode
from vrt_spike.bench.optimizer import describe_optimizer, optimizer_state_bytes
from vrt_spike.timing.clock import synchronize
from vrt_spike.timing.memory import PeakMemory, storage_bytes
from vrt_spike.atomic import write_text_atomically

__all__ = ["FixedBatchDataModule", "StepClock", "fixed_batch_config"]

FIXED_BATCH = f"{__name__}.FixedBatchDataModule"
STEP_CLOCK = f"{__name__}.StepClock"
CLOCK_FILE = "step_clock.json"


class _Repeat(Dataset):
    def __init__(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class FixedBatchDataModule(L.LightningDataModule):
    """``steps`` training batches that are one and the same random batch on the training device.

    The batch has the training batch's keys and shapes: ``blur``, ``sharp`` ``(B, T, 3, H, W)`` and
    ``spike`` ``(B, T, num_bins, H, W)``, uniform in [0, 1], ``B = batch_size``, ``T = clip_len``,
    ``H = W = crop_size``. The data group's other keys (files, workers, augmentation, caches) do not
    apply to a batch that is never loaded, and are accepted so that the group's config can be reused.
    """

    def __init__(self, batch_size: int, clip_len: int, crop_size: int, num_bins: int, steps: int,
                 seed: int = 0, **unused_data_keys: Any) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("clip_len", clip_len), ("crop_size", crop_size),
                           ("num_bins", num_bins), ("steps", steps)):
            if int(value) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value!r}")
        self.batch_size, self.clip_len, self.crop_size = int(batch_size), int(clip_len), int(crop_size)
        self.num_bins, self.steps, self.seed = int(num_bins), int(steps), int(seed)
        # What train.py's summary says its figures were measured on: no clip of any split.
        self.splits = {role: Split(role=role, directory="fixed random batch", clips=())
                       for role in ("train", "val", "test")}

    def make_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        clip = (self.batch_size, self.clip_len)
        size = (self.crop_size, self.crop_size)
        cpu = {"blur": torch.rand(*clip, 3, *size, generator=generator),
               "sharp": torch.rand(*clip, 3, *size, generator=generator),
               "spike": torch.rand(*clip, self.num_bins, *size, generator=generator)}
        return {k: v.to(device) for k, v in cpu.items()}

    def train_dataloader(self) -> DataLoader:
        batch = self.make_batch(self.trainer.strategy.root_device)
        # batch_size=None: the dataset's items are whole batches, passed through as they are.
        return DataLoader(_Repeat(batch, self.steps), batch_size=None, shuffle=False, num_workers=0)


class StepClock(L.Callback):
    """Warm-up clock, time budget and peak memory of a measured fit.

    Args:
        warmup: training batches before the timed ones (compilation, CUDA-graph recording, the
            optimizer's first step creating its states).
        min_steps, max_steps: timed batches; the fit stops after ``max_steps`` of them, or earlier,
            after ``min_steps``, once ``seconds`` have passed since the end of the warm-up.
        seconds: time budget of the timed batches (host clock, no synchronisation in a step).
        out: JSON file written at the end of the fit: ``warmup_s`` (start of the fit to the end of
            the last warm-up batch, host clock), ``timed_s`` (end of the warm-up to the end of the
            fit, after a synchronisation), ``timed_steps``, ``step_ms`` (each timed step, from the end
            of the batch before it to the end of its own: the whole step as the loop runs it, loader
            included; CUDA events, read after the fit, so no step waits), ``peak_bytes`` and ``mem_kind``
            (the tensors' peak over the timed batches, `vrt_spike.timing.memory.PeakMemory`: the CUDA
            allocator's high-water mark; on a CPU the bytes of the tensors live when the warm-up
            ends (parameters, gradients, optimizer states, the batch) plus the process's RSS rise
            over the timed batches, exact with ``MALLOC_MMAP_THRESHOLD_`` set, see PeakMemory),
            ``planned_peak_bytes`` (the fit's memory plan, ``memory_plan.json``, when it made one),
            ``optimizer``; with ``count_ops``, also
            ``ops_per_step`` (aten operators called from outside another aten operator in the
            first timed step, forward, backward and optimizer: each one a dispatch from the host,
            a kernel launch or more on a GPU), ``cuda_kernels_per_step`` (CUDA kernels the same
            step ran; None on a CPU) and ``inductor_kernels`` (kernels inductor generated for the
            compiled graphs, each run once per step; 0 in eager mode); with ``count_flops``, also
            ``flops_per_step`` and ``flops_by_op`` (`vrt_spike.bench.flops` over the first
            warm-up step: forward, loss, backward with its recomputation, optimizer step).
        count_ops: profile the first timed step (``torch.profiler``) for the counts above.
        count_flops: count the FLOPs of the first warm-up step. A compiled network runs that step
            eagerly (``torch.compiler.set_stance("force_eager")``: the same arithmetic, which the
            counter cannot see inside a compiled graph) and compiles at the next one.
    """

    def __init__(self, warmup: int, min_steps: int, max_steps: int, seconds: float, out: str,
                 count_ops: bool = False, count_flops: bool = False) -> None:
        if warmup < int(count_flops) or min_steps < 1 or max_steps < min_steps or seconds < 0:
            raise ValueError(f"StepClock: need warmup >= 0 (>= 1 with count_flops), 1 <= min_steps <= max_steps "
                             f"and seconds >= 0, got warmup={warmup}, min_steps={min_steps}, max_steps={max_steps}, "
                             f"seconds={seconds}, count_flops={count_flops}")
        self.warmup, self.min_steps, self.max_steps, self.seconds = warmup, min_steps, max_steps, seconds
        self.out = Path(out)
        self.count_ops, self.count_flops = count_ops, count_flops
        self._counting: contextlib.ExitStack | None = None
        self._counter: Any = None
        self._flops: dict[str, Any] = {}
        self._marks: list[Any] = []  # the end of the warm-up, then of each timed batch
        self._profiler: torch.profiler.profile | None = None
        self._ops: dict[str, int | None] = {}
        self._batches = 0
        self._t_start = self._t_warm = 0.0
        self._memory: PeakMemory | None = None
        self._live_bytes = 0  # tensors live when the timed batches start (CPU peak = these + the RSS rise)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._memory = PeakMemory(pl_module.device)
        self._batches = 0
        self._marks = []
        self._t_start = self._t_warm = time.perf_counter()
        if self.warmup == 0:
            self._reset_memory(trainer, pl_module, None)
            self._mark(pl_module.device)

    def _mark(self, device: torch.device) -> None:
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def _step_ms(self, device: torch.device) -> list[float]:
        if device.type == "cuda":  # synchronised in on_train_end
            return [a.elapsed_time(b) for a, b in zip(self._marks, self._marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self._marks, self._marks[1:])]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.count_flops and self._batches == 0:
            self._counting = contextlib.ExitStack()
            self._counter = self._counting.enter_context(flop_counter_mode())
            self._counting.enter_context(torch.compiler.set_stance("force_eager"))
        if self.count_ops and self._batches == self.warmup:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if pl_module.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()

    def _stop_profiler(self, device: torch.device) -> None:
        synchronize(device)
        self._profiler.__exit__(None, None, None)
        events = self._profiler.events()
        self._profiler = None

        def outer_aten(evt: Any) -> bool:
            parent = evt.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            return evt.name.startswith("aten::") and parent is None

        cuda = device.type == "cuda"
        self._ops = {
            "ops_per_step": sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CPU and outer_aten(e)),
            "cuda_kernels_per_step": (sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
                                      if cuda else None),
        }

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._profiler is not None:
            self._stop_profiler(pl_module.device)
        if self._counting is not None:
            self._counting.close()
            self._counting = None
            counted = flop_count(self._counter)
            self._flops = {"flops_per_step": counted.total, "flops_by_op": counted.by_op}
        self._batches += 1
        now = time.perf_counter()
        if self._batches == self.warmup:
            self._t_warm = now
            self._reset_memory(trainer, pl_module, batch)
            self._mark(pl_module.device)
            return
        if self._batches > self.warmup:
            self._mark(pl_module.device)
        timed = self._batches - self.warmup
        if timed >= self.max_steps or (timed >= self.min_steps and now - self._t_warm >= self.seconds):
            trainer.should_stop = True

    def _reset_memory(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        params = list(pl_module.parameters())
        batch_tensors = [v for v in (batch or {}).values() if isinstance(v, torch.Tensor)]
        self._live_bytes = (storage_bytes([*params, *(p.grad for p in params if p.grad is not None), *batch_tensors])
                            + sum(optimizer_state_bytes(opt) for opt in trainer.optimizers))
        self._memory.reset()


    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from vrt_spike.lit.memory_fit import PLAN_FILE

        synchronize(pl_module.device)
        timed = max(self._batches - self.warmup, 0)
        plan = Path(trainer.default_root_dir) / PLAN_FILE
        result = {
            "warmup_s": self._t_warm - self._t_start,
            "timed_s": time.perf_counter() - self._t_warm,
            "timed_steps": timed,
            "step_ms": self._step_ms(pl_module.device),
            "peak_bytes": self._memory.tensors_peak(self._live_bytes) if timed else None,
            "mem_kind": self._memory.kind,
            "planned_peak_bytes": json.loads(plan.read_text())["peak_bytes"] if plan.is_file() else None,
            "optimizer": describe_optimizer(trainer.optimizers[0]) if trainer.optimizers else None,
        }
        if self.count_ops:
            from torch._inductor import metrics

            result.update(self._ops, inductor_kernels=metrics.generated_kernel_count)
        if self.count_flops:
            result.update(self._flops)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.out, json.dumps(result, indent=2) + "\n")


def fixed_batch_config(cfg: DictConfig, *, run_dir: str | Path, warmup: int, min_steps: int, max_steps: int,
                       seconds: float = 0.0, count_ops: bool = False, count_flops: bool = False,
                       timing: bool = True, model: Mapping[str, Any] | None = None,
                       callbacks: Mapping[str, Any] | None = None) -> DictConfig:
    """A copy of the composed `conf/train.yaml` `cfg` that `vrt_spike.lit.training.train` runs as a measurement.

    The data become a :class:`FixedBatchDataModule` of the data config's shape; the fit runs
    ``warmup + max_steps`` batches at most, without validation, checkpoints, progress bar, model
    summary or logger, into ``run_dir``. Callbacks: a :class:`StepClock` writing
    ``<run_dir>/step_clock.json``, the config's ``callbacks.timing`` (the shipped TimingCallback:
    one collection at the end of the fit, no console, the warm-up left out of its summary; not
    attached when ``timing`` is false), and ``callbacks`` (name -> callback config) beside them.
    ``model``: a resolved ``model.*`` to run instead of the config's (checkpointing switched).
    ``memory.check`` becomes true (the pre-flight plans the step on any device and writes
    ``memory_plan.json``) unless it is false. Everything else (model, optimizer, scheduler,
    precision, compile, loss, seed) stays as composed.
    """
    cfg = copy.deepcopy(cfg)
    steps = warmup + max_steps
    with open_dict(cfg):
        if model is not None:
            cfg.model = OmegaConf.create(dict(model))
        cfg.data._target_ = FIXED_BATCH
        cfg.data.steps = steps
        cfg.paths.output_dir = str(run_dir)
        cfg.logger = None
        cfg.test = False
        cfg.ckpt_path = None
        # A measured fit plans its step (memory_plan.json, the planned peak beside the measured
        # one) and stops before it starts if the plan cannot fit; memory.check=false skips both.
        memory = cfg.get("memory") or {}
        cfg.memory = {**memory, "check": memory.get("check", "auto") is not False}
        trainer = cfg.trainer
        trainer.max_steps, trainer.max_epochs = steps, -1
        trainer.limit_val_batches, trainer.num_sanity_val_steps = 0, 0
        trainer.enable_progress_bar = trainer.enable_checkpointing = trainer.enable_model_summary = False
        measured: dict[str, Any] = {}
        if timing:
            shipped = (cfg.get("callbacks") or {}).get("timing")
            if shipped is None:
                raise ValueError("callbacks.timing is missing: the per-stage figures come from the shipped "
                                 "TimingCallback (callbacks=default)")
            shipped = shipped.copy()
            shipped.interval = steps + 1  # one collection, at the end of the fit: no sync in between
            shipped.console = "off"
            shipped.warmup = warmup
            shipped.track_memory = False  # the StepClock reads the allocator's peak over the timed steps
            measured["timing"] = shipped
        measured["step_clock"] = {"_target_": STEP_CLOCK, "warmup": warmup, "min_steps": min_steps,
                                  "max_steps": max_steps, "seconds": seconds,
                                  "out": str(Path(run_dir) / CLOCK_FILE), "count_ops": count_ops,
                                  "count_flops": count_flops}
        measured.update(callbacks or {})
        cfg.callbacks = measured
    return cfg


def read_clock(run_dir: str | Path) -> dict[str, Any]:
    """The StepClock's figures of a :func:`fixed_batch_config` fit run in ``run_dir``."""
    path = Path(run_dir) / CLOCK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the measured fit wrote no step clock (did it run?)")
    return json.loads(path.read_text())
