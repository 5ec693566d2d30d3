"""The training step never waits on the host: no tensor value is read back between two batches."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_support import tiny_overrides

from vrt_spike.lit.training import train
from host_syncs import HostSyncCounter, SyncsPerBatch


def fit_counting_syncs(compose_cfg, root: Path, out: Path, steps: int, extra: list[str] = ()) -> SyncsPerBatch:
    """A real tiny fit through train.py's code; logging, timing and progress-bar intervals longer than
    the fit, so what is left is the step itself. One loader worker: the data pipeline's own reads
    (random crops on the CPU) happen in the worker process, off the step, as in training."""
    cfg = compose_cfg("train", [*tiny_overrides(root, steps), f"paths.output_dir={out}",
                                "trainer.log_every_n_steps=1000", "callbacks.timing.interval=1000",
                                "trainer.limit_val_batches=0", "trainer.enable_progress_bar=true",
                                "callbacks.progress_bar.refresh_rate=1000", "data.num_workers=1",
                                "+callbacks.sync_probe._target_=host_syncs.SyncsPerBatch", *extra])
    SyncsPerBatch.runs.clear()
    train(cfg)
    (probe,) = SyncsPerBatch.runs
    return probe


@pytest.mark.parametrize("extra", [[], pytest.param(["optim=adamw8bit", "trainer.precision=bf16-mixed"],
                                                     marks=pytest.mark.slow)], ids=["adamw-fp32", "adamw8bit-bf16"])
def test_no_host_sync_in_a_training_step(compose_cfg, synthetic_root: Path, tmp_path: Path, extra: list[str]) -> None:
    probe = fit_counting_syncs(compose_cfg, synthetic_root, tmp_path, steps=5, extra=extra)
    assert len(probe.at_start) == 5
    per_step, sites = probe.per_step(first=1)  # from the 2nd batch's start to the 5th's: 3 whole steps
    assert per_step == 0, f"{per_step} host syncs per step, from: {dict(sites)}"
    assert probe.counter.count > 0  # the counter sees reads outside the steps (setup, the end of the fit)


def test_the_counter_sees_every_way_of_reading_a_value() -> None:
    t = torch.ones(3)
    with HostSyncCounter(stacks=True) as syncs:
        t.sum().item()
        bool(t[0] > 0)
        float(t[1])
        if t.max() > 0:  # a Python branch on a tensor
            pass
        t.mul(2).add_(1)  # no read
    assert syncs.count == 4
    assert all(site.startswith(__file__) for site in syncs.sites), syncs.sites


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_cuda_steps_run_under_sync_debug_mode(compose_cfg, synthetic_root: Path, tmp_path: Path, precision: str) -> None:
    cfg = compose_cfg("train", [*tiny_overrides(synthetic_root, 5), f"paths.output_dir={tmp_path}",
                                "trainer=gpu", f"trainer.precision={precision}", "trainer.log_every_n_steps=1000",
                                "callbacks.timing.interval=1000", "trainer.limit_val_batches=0",
                                "+callbacks.sync_debug._target_=train_support.SyncDebugSteps"])
    try:
        summary = train(cfg)  # a synchronising CUDA call inside steps 3-5 raises RuntimeError
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert summary["steps"] == 5 and summary["status"] == "ok"
