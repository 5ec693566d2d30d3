"""Do the spikes help? The headline table is a multirun of ``train.py`` read by the sweep summary:

    python train.py -m experiment=spikes_help seed=0,1,2 model.use_spike=true,false test=true

(``experiment=spikes_help``: 1200 steps of the tiny preset per run, hours on 2 shared cores), each run's
checkpoint selected on the val split and scored on the whole test split at full frames, beside the
blurry input and the spike floor. The targets (issue #16) hold per seed. The fast suite's
``tests/train/test_sweep_summary.py`` checks the summary's table and means on hand-made jobs, and
``tests/train/test_train_evaluate.py`` that ``test=true`` scores the val-selected checkpoint as
``evaluate.py`` does.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrt_spike import PROJECT_ROOT
from vrt_spike.tables import read_csv

SEEDS = (0, 1, 2)
FLOOR_MARGIN_DB = 0.5  # VRT+Spike >= spike floor + this
RGB_MARGIN_DB = 2.5  # VRT+Spike >= RGB-only + this


@pytest.mark.slow
@pytest.mark.timeout(12 * 3600)
def test_vrt_spike_beats_the_floor_and_rgb_only_on_every_seed(tmp_path: Path) -> None:
    sweep = tmp_path / "spikes_help"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "train.py", "-m", "experiment=spikes_help", f"seed={','.join(map(str, SEEDS))}",
                           "model.use_spike=true,false", "test=true", "logger=csv", "trainer.enable_progress_bar=false",
                           "callbacks.timing.console=off", f"hydra.sweep.dir={sweep}"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print((sweep / "sweep_summary.md").read_text())  # the table docs/PERFORMANCE.md quotes (pytest -s shows it)
    jobs = {}
    for row in read_csv(sweep / "sweep_summary.csv"):
        overrides = dict(o.split("=", 1) for o in row["overrides"].split())
        jobs[int(overrides["seed"]), overrides["model.use_spike"]] = row
        assert row["status"] == "ok" and row["steps"] == "1200"
        assert (row["val_split"], row["test_split"]) == ("val", "test")  # selected on val, scored on test
    for seed in SEEDS:
        spike, rgb = jobs[seed, "true"], jobs[seed, "false"]
        blur, floor = float(spike["test_psnr_input"]), float(spike["test_psnr_spike_floor"])
        assert (rgb["test_psnr_input"], rgb["test_psnr_spike_floor"]) == (spike["test_psnr_input"], spike["test_psnr_spike_floor"])
        assert float(spike["test_psnr"]) >= floor + FLOOR_MARGIN_DB, (seed, spike)
        assert float(spike["test_psnr"]) >= float(rgb["test_psnr"]) + RGB_MARGIN_DB, (seed, spike, rgb)
        assert float(rgb["test_psnr"]) > blur, (seed, rgb)
    means = {r["setting"]: r for r in read_csv(sweep / "sweep_means.csv")}
    assert {k: v["seeds"] for k, v in means.items()} == {"model.use_spike=true": "3", "model.use_spike=false": "3"}
