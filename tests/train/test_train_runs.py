"""train.py end to end from another working directory: DDP on 2 CPU processes and kill-and-resume
equality (sweeps: test_sweeps.py); ckpt_path=last without a checkpoint names the fix."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_support import ROOT, run_script, tiny_overrides


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


# 2: the flow gets requires_grad=False before DDP wraps (slow: the fast suite keeps one DDP fit)
@pytest.mark.parametrize("flow_freeze_steps", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_ddp_two_cpu_processes(synthetic_root: Path, tmp_path: Path, flow_freeze_steps: int) -> None:
    run_dir = tmp_path / "run"
    proc = run_script("train.py", [*tiny_overrides(synthetic_root), "trainer.devices=2", f"hydra.run.dir={run_dir}",
                                   f"optim.flow_freeze_steps={flow_freeze_steps}"], cwd=tmp_path)
    _ok(proc)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["status"] == "ok"
    # rank 1 was started by Lightning with its own job name, in the same run dir
    assert (run_dir / "train_ddp_process_1.log").is_file() and not (run_dir / "train_ddp_process_2.log").exists()
    assert "2 process(es)" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # nothing written relative to the caller's cwd


def _resume_args(root: Path, run_dir: Path) -> list[str]:
    # 2-batch epochs with a checkpoint at every epoch end: a resume restarts on an epoch boundary,
    # where the module reseeds (seed + epoch) exactly as the uninterrupted run does.
    return [*tiny_overrides(root, steps=6), "trainer.limit_train_batches=2", "callbacks.checkpoint_last.every_n_train_steps=2",
            "trainer.deterministic=true", "seed=7", f"hydra.run.dir={run_dir}"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(synthetic_root: Path, tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    _ok(run_script("train.py", _resume_args(synthetic_root, ref_dir), cwd=tmp_path))
    reference = json.loads((ref_dir / "summary.json").read_text())

    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *_resume_args(synthetic_root, run_dir)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not last.is_file():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < 6

    _ok(run_script("train.py", [*_resume_args(synthetic_root, run_dir), "ckpt_path=last"], cwd=tmp_path))
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["steps"] == reference["steps"] == 6
    for key in ("val_psnr", "val_ssim", "val_psnr_input"):
        assert abs(resumed[key] - reference[key]) < 1e-5, (key, resumed[key], reference[key])
    ref_w, res_w = _weights(ref_dir / "checkpoints" / "last.ckpt"), _weights(last)
    assert ref_w.keys() == res_w.keys()
    for name in ref_w:
        torch.testing.assert_close(res_w[name], ref_w[name], rtol=0, atol=1e-6, msg=name)


def test_ckpt_path_last_without_checkpoint_names_the_fix(compose_cfg, synthetic_root: Path, tmp_path: Path) -> None:
    from vrt_spike.lit.training import train

    cfg = compose_cfg("train", [*tiny_overrides(synthetic_root), "ckpt_path=last", f"paths.output_dir={tmp_path / 'new'}"])
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no .*pass the crashed run's directory with "
                                                r"hydra.run.dir=<run dir> ckpt_path=last"):
        train(cfg)
