"""TimingCallback: StageTimer wired into a Lightning fit, with table, loggers and console.

Regions the callback adds around the network's own: ``data`` (from the end of one training batch
to the start of the next: the wait for the loader plus the host-to-device copy), ``backward``
(``on_before_backward`` .. ``on_after_backward``), ``optimizer_step`` (``on_before_optimizer_step``
.. the optimizer's step post-hook), and ``data.<stage>`` from ``batch["timings"]`` (each stage's
per-sample milliseconds, host floats, summed over the batch: time spent in the loader workers,
which may overlap the step, so not nested in ``data``). Validation and epoch boundaries are left out.

Every step time the package reports (``summary.json``'s ``step_time_s`` and ``samples_per_s``, the
end-of-run summary, the sweep summary, a bench row) is this callback's ``step``: the wall time from
the end of one training batch to the end of the next, on the device clock. ``breakdown=False``
times that step alone: no hook on the network, no region (the cost of the breakdown is the
difference, ``python -m vrt_spike.bench -m bench.breakdown=false,true``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from vrt_spike.timing.console import ConsoleView, top_regions, unattributed_ms
from vrt_spike.timing.table import (
    TIMING_DIR, RegionStats, SummaryAccumulator, TimingRow, summarize, write_meta, write_rows,
    write_summary,
)
from vrt_spike.timing.regions import find_regions
from vrt_spike.timing.timer import StageTimer


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for key in ("blur", "rgb"):
            if isinstance(batch.get(key), torch.Tensor):
                return int(batch[key].shape[0])
        values = batch.values()
    elif isinstance(batch, (list, tuple)):
        values = batch
    else:
        values = (batch,)
    for v in values:
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
    raise ValueError(f"timing: cannot infer the batch size from a batch of type {type(batch).__name__}")


def is_compiled(net: torch.nn.Module) -> bool:
    """``net.compile()`` (in place: ``nn.Module`` keeps the compiled call in ``_compiled_call_impl``)
    or a ``torch.compile(net)`` wrapper."""
    return (getattr(net, "_compiled_call_impl", None) is not None
            or isinstance(net, torch._dynamo.eval_frame.OptimizedModule))


def _loader_ms(timings: Any, bsz: int) -> dict[str, float]:
    """``batch["timings"]`` (``{stage: [ms per sample]}``, host floats) -> ``{stage: ms summed over the batch}``."""
    if not isinstance(timings, dict):
        raise TypeError(f"timing: batch['timings'] must be a dict of per-sample ms lists, got {type(timings).__name__}")
    out = {}
    for stage, value in timings.items():
        if (not isinstance(value, (list, tuple)) or len(value) != bsz
                or not all(isinstance(v, (int, float)) for v in value)):
            raise ValueError(
                f"timing: batch['timings']['{stage}'] must be a list of {bsz} per-sample ms (host floats, as "
                f"vrt_spike.data.dataset.collate_samples makes them; a tensor would travel to the device and be read "
                f"back in every step), got {type(value).__name__} {getattr(value, 'shape', '')}")
        out[stage] = float(sum(value))
    return out


class TimingCallback(Callback):
    """Per-stage step timings of a fit: every `interval` training batches, rows to
    ``<log_dir>/timing/``, ``timing/<region>`` scalars, a W&B table and bar chart, console view.

    Args:
        interval: training batches per collect/gather/write/log (one host sync per interval).
        enabled: False makes every hook a no-op (no timer, no hooks on the network).
        console: ``"auto"`` (live view on a TTY, one plain line per interval otherwise),
            ``"live"``, ``"plain"`` or ``"off"`` (bools accepted).
        top_n: regions shown in the console view.
        flops_per_step: FLOPs of one training step (forward+backward) on one process; with
            `peak_flops` (the device's peak FLOP/s) gives MFU.
        warmup: first training batches left out of the summary (still in the rows).
        track_memory: per-region peak memory (default: on CUDA).
        breakdown: the per-region breakdown; False times the whole step only.
    """

    def __init__(self, interval: int = 20, enabled: bool = True, console: str | bool = "auto",
                 top_n: int = 8, flops_per_step: float | None = None,
                 peak_flops: float | None = None, warmup: int = 1,
                 track_memory: bool | None = None, breakdown: bool = True) -> None:
        if interval < 1:
            raise ValueError(f"timing: interval must be >= 1, got {interval}")
        if (flops_per_step is None) != (peak_flops is None):
            raise ValueError("timing: MFU needs both flops_per_step and peak_flops, got "
                             f"flops_per_step={flops_per_step}, peak_flops={peak_flops}")
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"timing: peak_flops must be > 0, got {peak_flops}")
        self.interval = interval
        self.enabled = enabled
        self.console_mode = console
        self.top_n = top_n
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self.warmup = warmup
        self.track_memory = track_memory
        self.breakdown = breakdown
        self.timer: StageTimer | None = None
        self.timing_dir: Path | None = None
        self.samples_per_s: float | None = None
        self.mfu: float | None = None
        self._acc = SummaryAccumulator(warmup)
        self._console: ConsoleView | None = None
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self._data_block = self._fwd_block = self._bwd_block = self._opt_block = None
        self.compiled = False
        self.regions_not_seen: list[str] = []
        self._step_info: dict[int, tuple[int, int]] = {}  # timer step -> (epoch, batch size)
        self._worker: dict[int, dict[str, float]] = {}  # timer step -> loader stage -> ms
        self._opt_handles: list[Any] = []
        self._part = 0
        self._batch_size: int | None = None
        self._rank = 0
        self._world = 1

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled:
            return
        net = getattr(pl_module, "net", None)
        if not isinstance(net, torch.nn.Module):
            raise AttributeError(
                f"timing: TimingCallback needs the LightningModule's network at `.net` "
                f"(an nn.Module), got {type(net).__name__} on {type(pl_module).__name__}")
        self._reset_run_state()
        self._acc = SummaryAccumulator(self.warmup)
        self._rank, self._world = trainer.global_rank, trainer.world_size
        self.timer = StageTimer(pl_module.device, track_memory=self.track_memory)
        self.compiled = is_compiled(net)
        if self.breakdown and self.compiled:
            # Hooks inside a compiled graph would break it apart (or be traced into it): time the
            # whole forward from outside (batch start -> backward: forward, loss, zero_grad) and
            # name what the table cannot show.
            regions = [r for r in find_regions(net) if r.suffix]
            self.regions_not_seen = [r.forward_name for r in regions] + [r.backward_name for r in regions]
        elif self.breakdown:
            self.timer.attach(net)
        for opt in trainer.optimizers:
            self._opt_handles.append(opt.register_step_post_hook(self._after_optimizer_step))
        self.timing_dir = Path(trainer.log_dir or trainer.default_root_dir) / TIMING_DIR
        # A resumed run appends parts after the existing ones instead of overwriting them.
        rows_dir = self.timing_dir / "rows"
        self._part = len(list(rows_dir.glob("part-*.csv"))) if rows_dir.is_dir() else 0
        if self._rank == 0:
            self._console = ConsoleView(self.console_mode, self.top_n)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.timer is None:
            return
        self._close_blocks()
        self.timer.discard_step()
        self._flush(trainer, log=False)
        self._teardown_hooks()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._teardown_hooks()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._teardown_hooks()

    def _teardown_hooks(self) -> None:
        for h in self._opt_handles:
            h.remove()
        self._opt_handles = []
        if self.timer is not None:
            self.timer.detach()
        if self._console is not None:
            self._console.close()

    # ------------------------------------------------------------------ regions
    def _close_blocks(self) -> None:
        for attr in ("_data_block", "_fwd_block", "_bwd_block", "_opt_block"):
            block = getattr(self, attr)
            if block is not None:
                block.__exit__(None, None, None)
                setattr(self, attr, None)

    def _region(self, name: str) -> Any:
        """An open ``region(name)`` block, or None when only the step is timed."""
        return self.timer.region(name).__enter__() if self.breakdown else None

    def _open_data(self) -> None:
        """The wait for the next training batch: the ``data`` region, or the step's start."""
        self._data_block = self._region("data")
        if self._data_block is None:
            self.timer.start_step()

    def _skip_gap(self) -> None:
        """Validation or an epoch boundary: not part of any training step."""
        if self.timer is not None:
            self._data_block = self._fwd_block = self._bwd_block = self._opt_block = None
            self.timer.discard_step()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.timer is not None:
            self._skip_gap()
            self._open_data()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._skip_gap()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._skip_gap()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.timer is not None and not trainer.sanity_checking:
            self._skip_gap()
            self._open_data()  # the wait for the next training batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.timer is None:
            return
        if self._data_block is not None:
            self._data_block.__exit__(None, None, None)
            self._data_block = None
        step = self.timer.step
        bsz = self._batch_size = _batch_size(batch)
        self._step_info[step] = (trainer.current_epoch, bsz)
        timings = batch.get("timings") if isinstance(batch, dict) else None
        if timings is not None and self.breakdown:
            self._worker[step] = _loader_ms(timings, bsz)
        if self.compiled:
            self._fwd_block = self._region("forward")

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if self._fwd_block is not None:
            self._fwd_block.__exit__(None, None, None)
            self._fwd_block = None
        if self.timer is not None:
            self._bwd_block = self._region("backward")

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bwd_block is not None:
            self._bwd_block.__exit__(None, None, None)
            self._bwd_block = None

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if self.timer is not None:
            self._opt_block = self._region("optimizer_step")

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        if self._opt_block is not None:
            self._opt_block.__exit__(None, None, None)
            self._opt_block = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.timer is None:
            return
        for attr in ("_fwd_block", "_opt_block"):  # no backward (no loss) / no post-hook (AMP inf/nan)
            block = getattr(self, attr)
            if block is not None:
                block.__exit__(None, None, None)
                setattr(self, attr, None)
        self.timer.end_step()
        if self.timer.step % self.interval == 0:
            self._flush(trainer, log=True)
        self._open_data()

    # ------------------------------------------------------------------ output
    def _local_rows(self) -> tuple[list[TimingRow], int, float]:
        rows: list[TimingRow] = []
        samples, step_ms = 0, 0.0
        for step, region, ms, peak in self.timer.collect(with_memory=True):
            epoch, bsz = self._step_info.get(step, (-1, 0))
            rows.append(TimingRow(step, epoch, self._rank, region, ms, peak))
            if region == "step" and step >= self.warmup:
                samples += bsz
                step_ms += ms
        for step in sorted(self._worker):
            epoch = self._step_info.get(step, (-1, 0))[0]
            for stage, ms in self._worker[step].items():
                rows.append(TimingRow(step, epoch, self._rank, f"data.{stage}", ms))
        self._worker.clear()
        self._step_info = {k: v for k, v in self._step_info.items() if k >= self.timer.step}
        return rows, samples, step_ms

    def _flush(self, trainer: Trainer, log: bool) -> None:
        """Collect, gather from every rank (one collective), write on rank 0, log, show."""
        local, samples, step_ms = self._local_rows()
        gathered = [(local, samples, step_ms)]
        dist = torch.distributed
        if self._world > 1 and dist.is_available() and dist.is_initialized():
            gathered = [None] * self._world
            dist.all_gather_object(gathered, (local, samples, step_ms))
        rows = [r for part in gathered for r in part[0]]
        if not rows:
            return
        self._acc.add(rows)
        # Global throughput: each rank's samples over its own time, summed.
        rates = [s / (ms / 1000) for _, s, ms in gathered if ms > 0]
        if rates:
            self.samples_per_s = sum(rates)
            if self.flops_per_step is not None:
                n_steps = sum(1 for r in rows if r.region == "step" and r.step >= self.warmup)
                mean_step_s = sum(ms for *_, ms in gathered) / 1000 / n_steps
                self.mfu = self.flops_per_step / mean_step_s / self.peak_flops
        interval_stats = summarize(rows, self.warmup)
        if self._rank == 0:
            write_rows(self.timing_dir, rows, self._part)
            write_summary(self.timing_dir, self._acc.summary())
            write_meta(self.timing_dir, self._meta(trainer))
        self._part += 1
        if not any(s.region == "step" for s in interval_stats):  # only warm-up steps so far
            return
        if log:
            self._log(trainer, interval_stats)
        if self._console is not None:
            self._console.update(self.timer.step, interval_stats, self.samples_per_s, self.mfu)

    def _meta(self, trainer: Trainer) -> dict[str, Any]:
        return {"world_size": self._world, "interval": self.interval, "warmup": self.warmup,
                "device": str(self.timer.device), "samples_per_s": self.samples_per_s,
                "mfu": self.mfu, "flops_per_step": self.flops_per_step,
                "peak_flops": self.peak_flops, "steps": self.timer.step,
                "batch_size": self._batch_size, "compiled": self.compiled, "breakdown": self.breakdown,
                "regions_not_seen": self.regions_not_seen}

    def _log(self, trainer: Trainer, stats: list[RegionStats]) -> None:
        """Rank 0 hands the interval's scalars straight to every logger.

        Not ``LightningModule.log``: the values are already gathered from every rank, and its
        per-key bookkeeping cost ~1.8 ms per scalar (~65 scalars an interval), which was the
        largest part of the callback's overhead (docs/PERFORMANCE.md, "Timing overhead").
        """
        if self._rank != 0 or not trainer.loggers:
            return
        metrics = {f"timing/{s.region}": s.mean_ms for s in stats}
        if self.samples_per_s is not None:
            metrics["timing/samples_per_s"] = self.samples_per_s
        if self.mfu is not None:
            metrics["timing/mfu"] = self.mfu
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                import wandb

                cumulative = self._acc.summary()
                table = wandb.Table(
                    columns=["region", "mean_ms", "p90_ms", "self_ms", "share_of_step"],
                    data=[[s.region, s.mean_ms, s.p90_ms, s.self_ms, s.share_of_step]
                          for s in cumulative if s.region != "step"])
                bars = wandb.Table(columns=["region", "self_ms"],
                                   data=[[s.region, s.self_ms] for s in top_regions(cumulative, 15)])
                logger.log_metrics({
                    "timing/summary": table,
                    "timing/top_regions": wandb.plot.bar(bars, "region", "self_ms",
                                                         title="Exclusive ms per step by region"),
                }, step=trainer.global_step)

    # ------------------------------------------------------------------ summary
    def step_stats(self) -> RegionStats | None:
        """The whole training step over the fit, warm-up left out, every rank's steps (its
        ``peak_mem_mib`` is the highest per-step allocator peak of any rank, measured on CUDA); None
        before a step was recorded. The one source of a run's step time."""
        return next((s for s in self._acc.summary() if s.region == "step"), None)

    def summary(self) -> str:
        """Human-readable summary of the whole fit (what the training app prints at the end)."""
        if not self.enabled:
            return "timing: disabled"
        stats = self._acc.summary()
        if not stats:
            return "timing: no training steps recorded"
        step = next(s for s in stats if s.region == "step")
        lines = [f"Timing summary ({len(self._acc)} steps after {self.warmup} warm-up, "
                 f"{self._world} process(es)): {step.mean_ms:.1f} ms/step "
                 f"(p50 {step.p50_ms:.1f}, p90 {step.p90_ms:.1f})"]
        if self.samples_per_s is not None:
            lines[0] += f", {self.samples_per_s:.2f} samples/s"
        if self.mfu is not None:
            lines[0] += f", MFU {100 * self.mfu:.1f}%"
        lines.append(f"{'region':<36} {'self ms':>9} {'self %':>7} {'incl. ms':>9} {'p90 ms':>9}")
        for s in top_regions(stats, max(self.top_n, 10)):
            lines.append(f"{s.region:<36} {s.self_ms:9.1f} {100 * s.self_share:6.1f}% "
                         f"{s.mean_ms:9.1f} {s.p90_ms:9.1f}")
        lines.append(f"{'(unattributed)':<36} {unattributed_ms(stats):9.1f}")
        if self.compiled and self.breakdown:
            lines.append(f"compiled network: {len(self.regions_not_seen)} per-stage regions run inside the compiled "
                         f"graph and are not timed ({', '.join(self.regions_not_seen[:3])}, ...); 'forward' here is "
                         "batch start -> backward. For the per-stage breakdown run once with model.compile=false.")
        if self.timing_dir is not None:
            lines.append(f"table: {self.timing_dir}  (report: python -m vrt_spike.timing.report "
                         f"{self.timing_dir.parent})")
        return os.linesep.join(lines)
