"""Helpers of the training-app tests (imported via tests/train on sys.path): tiny run settings."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L

import vrt_spike

ROOT = vrt_spike.PROJECT_ROOT
SYNTH = {"seed": 0, "train_clips": 2, "test_clips": 2, "frames": 6, "height": 64, "width": 64}


def tiny_overrides(root: Path, steps: int = 2) -> list[str]:
    """The tiny preset on 40-px, 2-frame crops: a CPU step in seconds."""
    return [
        "model=tiny", "trainer=cpu", "logger=csv",
        f"data.root={root}", *[f"data.synthetic.{k}={v}" for k, v in SYNTH.items()],
        "data.clip_len=2", "data.crop_size=40", "data.eval_crop_size=40", "data.batch_size=1",
        "data.num_workers=0", "data.persistent_workers=false",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "scheduler.warmup_steps=1", "callbacks.timing.interval=1", "callbacks.timing.console=off", "callbacks.timing.warmup=0",
        f"callbacks.checkpoint_last.every_n_train_steps={steps}",
    ]


def run_script(script: str, args: list[str], cwd: Path, timeout: float = 200) -> subprocess.CompletedProcess:
    """Run ``python <script> <args>`` from ``cwd`` (not the project root) and return its result."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


class SyncDebugSteps(L.Callback):
    """``torch.cuda.set_sync_debug_mode("error")`` from the third training step's start to each
    step's end: a synchronising CUDA call inside those steps raises."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx >= 2:  # the first steps allocate optimizer states and warm the allocator
            import torch

            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import torch

        torch.cuda.set_sync_debug_mode(0)
