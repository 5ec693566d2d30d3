"""Measure train.py's own training step without data loading (`python -m vrt_spike.bench`, which
the GPU ladder runs rung by rung).

Two pieces that plug into the shipped path through the config, so `vrt_spike.lit.training.train` runs
unchanged (the LightningModule's `training_step`, its optimizer and scheduler, the precision
plugin, compile, the timing callback), and :func:`fixed_batch_config`, which puts them into a
composed `conf/train.yaml`:

- :class:`FixedBatchDataModule` as ``data._target_``: one random batch of the data config's shape,
  made once on the training device and served ``steps`` times (the loader costs nothing to
  measure, and nothing is read from disk);
- :class:`StepProbe` as a callback: what the timing callback does not measure (the warm-up's wall
  time, where compilation happens; the peak memory of the timed steps; which optimizer ran; the
  FLOPs of the first step and the operators and kernels of the last warm-up step); it stops the
  fit after the timed steps and writes a JSON file at its end.

The step times themselves are the shipped TimingCallback's (`vrt_spike.timing.callback`), as in
every run.
"""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset

from vrt_spike.atomic import write_text_atomically
from vrt_spike.bench.flops import flop_count, flop_counter_mode
from vrt_spike.bench.optimizer import describe_optimizer, optimizer_state_bytes
from vrt_spike.data.splits import Split
from vrt_spike.timing.clock import now_s, synchronize
from vrt_spike.timing.memory import PeakMemory, storage_bytes

__all__ = ["FixedBatchDataModule", "StepProbe", "fixed_batch_config", "read_probe"]

FIXED_BATCH = f"{__name__}.FixedBatchDataModule"
STEP_PROBE = f"{__name__}.StepProbe"
PROBE_FILE = "step_probe.json"


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


class StepProbe(L.Callback):
    """Warm-up time, peak memory, FLOPs and operator counts of a measured fit; stops it after the
    timed steps.

    Args:
        warmup: training batches before the timed ones (compilation, CUDA-graph recording, the
            optimizer's first step creating its states).
        steps: timed batches; the fit stops after them.
        out: JSON file written at the end of the fit: ``warmup_s`` (start of the fit to the end of
            the last warm-up batch, host clock), ``timed_steps``, ``peak_bytes`` and ``mem_kind``
            (the tensors' peak over the timed batches, `vrt_spike.timing.memory.PeakMemory`: the
            CUDA allocator's high-water mark; on a CPU the bytes of the tensors live when the
            warm-up ends (parameters, gradients, optimizer states, the batch) plus the process's RSS
            rise over the timed batches, exact with ``MALLOC_MMAP_THRESHOLD_`` set, see PeakMemory),
            ``planned_peak_bytes`` (the fit's memory plan, ``memory_plan.json``, when it made one),
            ``optimizer``, ``params`` (the network's); with ``count_flops``, ``flops_per_step`` and ``flops_by_op``; with
            ``count_ops``, ``ops_per_step`` and ``kernels_per_step`` (else None).
        count_flops: count the FLOPs of the first warm-up step (`vrt_spike.bench.flops`: forward,
            loss, backward with its recomputation, optimizer step). A compiled network runs that
            step eagerly (``torch.compiler.set_stance("force_eager")``: the same arithmetic, which
            the counter cannot see inside a compiled graph) and compiles at the next one.
        count_ops: profile the last warm-up step (``torch.profiler``; after compilation, never a
            timed step): ``ops_per_step``, the aten operators called from outside another aten
            operator (forward, backward, optimizer: each a dispatch from the host), and
            ``kernels_per_step``, the CUDA kernels that step ran (on a CPU: those operators plus the
            kernels inductor generated, each run once per compiled step). A host-bound step shows
            here: thousands of small launches that compile fuses. Needs a warm-up step of its own.
    """

    def __init__(self, warmup: int, steps: int, out: str, count_flops: bool = False, count_ops: bool = False) -> None:
        if steps < 1 or warmup < int(count_flops) + int(count_ops):
            raise ValueError(f"StepProbe: need steps >= 1 and a warm-up step for each of count_flops and count_ops, got "
                             f"warmup={warmup}, steps={steps}, count_flops={count_flops}, count_ops={count_ops}")
        self.warmup, self.steps, self.out = warmup, steps, Path(out)
        self.count_flops, self.count_ops = count_flops, count_ops
        self._counting: contextlib.ExitStack | None = None
        self._counter: Any = None
        self._profiler: torch.profiler.profile | None = None
        self._figures: dict[str, Any] = {}
        self._batches = 0
        self._t_start = self._t_warm = 0.0
        self._memory: PeakMemory | None = None
        self._live_bytes = 0  # tensors live when the timed batches start (CPU peak = these + the RSS rise)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._memory = PeakMemory(pl_module.device)
        self._batches = 0
        self._t_start = self._t_warm = now_s()
        if self.warmup == 0:
            self._reset_memory(trainer, pl_module, None)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.count_flops and self._batches == 0:
            self._counting = contextlib.ExitStack()
            self._counter = self._counting.enter_context(flop_counter_mode())
            self._counting.enter_context(torch.compiler.set_stance("force_eager"))
        if self.count_ops and self._batches == self.warmup - 1:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if pl_module.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()

    def _count_ops(self, device: torch.device) -> dict[str, int]:
        synchronize(device)
        self._profiler.__exit__(None, None, None)
        events = self._profiler.events()
        self._profiler = None

        def outer_aten(evt: Any) -> bool:
            parent = evt.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            return evt.name.startswith("aten::") and parent is None

        ops = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CPU and outer_aten(e))
        if device.type == "cuda":
            kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        else:
            from torch._inductor import metrics

            kernels = ops + metrics.generated_kernel_count
        return {"ops_per_step": ops, "kernels_per_step": kernels}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._profiler is not None:
            self._figures.update(self._count_ops(pl_module.device))
        if self._counting is not None:
            self._counting.close()
            self._counting = None
            counted = flop_count(self._counter)
            self._figures.update(flops_per_step=counted.total, flops_by_op=counted.by_op)
        self._batches += 1
        if self._batches == self.warmup:
            synchronize(pl_module.device)
            self._t_warm = now_s()
            self._reset_memory(trainer, pl_module, batch)
        if self._batches - self.warmup >= self.steps:
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
            "timed_steps": timed,
            "peak_bytes": self._memory.tensors_peak(self._live_bytes) if timed else None,
            "mem_kind": self._memory.kind,
            "planned_peak_bytes": json.loads(plan.read_text())["peak_bytes"] if plan.is_file() else None,
            "optimizer": describe_optimizer(trainer.optimizers[0]) if trainer.optimizers else None,
            "params": sum(p.numel() for p in getattr(pl_module, "net", pl_module).parameters()),
            "ops_per_step": None, "kernels_per_step": None, "flops_per_step": None, "flops_by_op": {},
            **self._figures,
        }
        write_text_atomically(self.out, json.dumps(result, indent=2) + "\n")


def fixed_batch_config(cfg: DictConfig, *, run_dir: str | Path, warmup: int, steps: int, breakdown: bool = True,
                       count_flops: bool = False, count_ops: bool = False, model: Mapping[str, Any] | None = None,
                       callbacks: Mapping[str, Any] | None = None) -> DictConfig:
    """A copy of the composed `conf/train.yaml` `cfg` that `vrt_spike.lit.training.train` runs as a measurement.

    The data become a :class:`FixedBatchDataModule` of the data config's shape; the fit runs
    ``warmup + steps`` batches, without validation, checkpoints, progress bar, model summary or
    logger, into ``run_dir``. Callbacks: a :class:`StepProbe` writing ``<run_dir>/step_probe.json``
    (first, so that its work at a batch's end falls before the timing callback's mark of that end),
    the config's ``callbacks.timing`` (the shipped TimingCallback, the source of the step times: one
    collection at the end of the fit, no console, the warm-up left out of its summary, the
    per-region breakdown as ``breakdown`` says), and ``callbacks`` (name -> callback config) after
    them. ``model``: a resolved ``model.*`` to run instead of the config's (checkpointing switched).
    ``memory.check`` becomes true (the pre-flight plans the step on any device and writes
    ``memory_plan.json``) unless it is false. Everything else (model, optimizer, scheduler,
    precision, compile, loss, seed) stays as composed.
    """
    shipped = (cfg.get("callbacks") or {}).get("timing")
    if shipped is None:
        raise ValueError("callbacks.timing is missing: a measured fit's step times come from the shipped "
                         "TimingCallback (callbacks=default)")
    cfg = copy.deepcopy(cfg)
    total = warmup + steps
    with open_dict(cfg):
        if model is not None:
            cfg.model = OmegaConf.create(dict(model))
        cfg.data._target_ = FIXED_BATCH
        cfg.data.steps = total
        cfg.paths.output_dir = str(run_dir)
        cfg.logger = None
        cfg.test = False
        cfg.ckpt_path = None
        # A measured fit plans its step (memory_plan.json, the planned peak beside the measured
        # one) and stops before it starts if the plan cannot fit; memory.check=false skips both.
        memory = cfg.get("memory") or {}
        cfg.memory = {**memory, "check": memory.get("check", "auto") is not False}
        trainer = cfg.trainer
        trainer.max_steps, trainer.max_epochs = total, -1
        trainer.limit_val_batches, trainer.num_sanity_val_steps = 0, 0
        trainer.enable_progress_bar = trainer.enable_checkpointing = trainer.enable_model_summary = False
        timing = OmegaConf.create(OmegaConf.to_container(shipped))
        timing.interval = total + 1  # one collection, at the end of the fit: no sync in between
        timing.console = "off"
        timing.warmup = warmup
        timing.breakdown = breakdown
        timing.track_memory = False  # the StepProbe reads the allocator's peak over the timed steps
        cfg.callbacks = {
            "step_probe": {"_target_": STEP_PROBE, "warmup": warmup, "steps": steps,
                           "out": str(Path(run_dir) / PROBE_FILE), "count_flops": count_flops,
                           "count_ops": count_ops},
            "timing": timing, **(callbacks or {})}
    return cfg


def read_probe(run_dir: str | Path) -> dict[str, Any]:
    """The StepProbe's figures of a :func:`fixed_batch_config` fit run in ``run_dir``."""
    path = Path(run_dir) / PROBE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the measured fit wrote no step probe (did it run?)")
    return json.loads(path.read_text())
