"""The bench's training figures come from train.py's own step: `measure_training` runs
`vrt_spike.lit.training.train`, so a callback joined through `bench.callbacks` sees the LightningModule's
`training_step` (its loss and its `train/loss` log), the optimizer `configure_optimizers` built,
and Lightning's precision plugin, once per warm-up and timed step."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from vrt_spike.bench.run import measure_training
from vrt_spike.lit.module import DeblurModule
from vrt_spike.lit.optim import build_optimizer

# The smallest input the tiny preset takes (VRT needs >= 40 px at window 4; SpyNet pads to 64).
TINY = ["model=tiny", "data.batch_size=1", "data.clip_len=2", "data.crop_size=40", "data.num_bins=4",
        "bench.device=cpu", "trainer.accelerator=cpu"]


class StepSpy(L.Callback):
    """What each training batch of the measured fit ran (class-level: the fit instantiates it)."""

    seen: list[dict[str, Any]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self._optimizer = optimizer

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        logged = trainer.callback_metrics.get("train/loss")
        StepSpy.seen.append({
            "module": type(pl_module), "loss": outputs["loss"].detach().clone(),
            "logged": None if logged is None else logged.detach().clone(),
            "optimizer": type(getattr(self._optimizer, "optimizer", self._optimizer)).__name__,
            "precision": type(trainer.precision_plugin).__name__,
            "step": trainer.global_step,
            "batch_shape": tuple(batch["blur"].shape),
        })


def test_training_row_runs_the_lightning_modules_training_step(compose_cfg, tmp_path: Path) -> None:
    StepSpy.seen.clear()
    cfg = compose_cfg("bench", [*TINY, "bench.warmup=2", "bench.iters=1", "bench.breakdown=false", "memory.check=false",
                                f"+bench.callbacks.spy._target_={__name__}.StepSpy"])
    figures = measure_training(cfg, tmp_path / "fit")

    seen = StepSpy.seen
    assert len(seen) == 3  # two warm-up steps (FLOP-counted, then profiled), one timed step
    assert all(s["module"] is DeblurModule for s in seen)
    # training_step's own log: the loss it returned is the one it logged
    assert all(s["logged"] is not None and torch.equal(s["logged"], s["loss"]) for s in seen)
    assert [s["step"] for s in seen] == [1, 2, 3]  # the optimizer stepped after each
    expected = type(build_optimizer(torch.nn.Linear(2, 2), cfg.optim)).__name__
    assert {s["optimizer"] for s in seen} == {expected}
    assert {s["precision"] for s in seen} == {"Precision"}  # Lightning's plugin for precision 32
    assert {s["batch_shape"] for s in seen} == {(1, 2, 3, 40, 40)}
    # The step time is the timing callback's (bench.breakdown=false: the step alone, no region)
    assert figures.step_ms.n == 1 and figures.step_ms.median > 0 and [s.region for s in figures.stages] == ["step"]
    assert figures.flops > 0 and 0 < figures.deform_flops < figures.flops
    assert figures.mem_kind.startswith("cpu_tensors") and figures.peak_bytes > 0
    assert figures.planned_bytes is None  # memory.check=false: no plan (the CLI's test reads one)
    # The last warm-up step, profiled: each aten operator a dispatch; on a CPU eager step every one a kernel
    assert figures.kernels_per_step == figures.ops_per_step > 100 and figures.warmup_s > 0
    assert figures.optimizer.startswith(expected) and figures.params > 100_000  # the tiny network's


@pytest.mark.cuda
def test_cuda_training_row_uses_the_mixed_precision_plugin_and_allocator_peak(compose_cfg, tmp_path: Path) -> None:
    StepSpy.seen.clear()
    overrides = [o for o in TINY if not o.startswith(("bench.device", "trainer.accelerator"))]
    cfg = compose_cfg("bench", [*overrides, "bench.device=cuda", "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                                "bench.warmup=1", "bench.iters=2", f"+bench.callbacks.spy._target_={__name__}.StepSpy"])
    figures = measure_training(cfg, tmp_path / "fit")
    assert len(StepSpy.seen) == 3 and {s["precision"] for s in StepSpy.seen} == {"MixedPrecision"}
    assert figures.mem_kind == "cuda_max_allocated" and figures.peak_bytes > 0
    assert figures.step_ms.n == 2 and figures.step_ms.median > 0 and figures.flops > 0
    assert figures.stages and {"step", "backward", "optimizer_step"} <= {st.region for st in figures.stages}
