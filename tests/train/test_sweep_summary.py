"""The sweep summary on hand-made job summaries (Pareto front, table, plot, W&B run), the device pool of
the parallel launcher, and the sweep job's config checks: no training."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from vrt_spike.lit.config import check_config
from vrt_spike.lit.devices import DevicePool, format_cores, parse_cores
from vrt_spike.lit.sweep import PLOT_FILE, log_to_wandb, mark_pareto, write_sweep_summary
from vrt_spike.tables import read_csv
from vrt_spike.lit.sweep_job import _objective_keys, objectives


def _row(job: int, psnr: float | None, sps: float | None, **extra) -> dict:
    return {"job": job, "val_psnr": psnr, "samples_per_s": sps, "status": "ok", **extra}


def test_pareto_front_on_hand_made_rows() -> None:
    rows = [_row(0, 30.0, 1.0),   # best PSNR
            _row(1, 28.0, 3.0),   # fastest
            _row(2, 28.0, 2.0),   # dominated by 1 (same PSNR, slower)
            _row(3, 29.0, 2.0),   # between 0 and 1: on the front
            _row(4, 27.0, 0.5),   # dominated by everything
            _row(5, 29.0, 2.0),   # equal to 3: neither dominates the other
            _row(6, None, None, status="failed"), _row(7, math.nan, 5.0)]
    assert [r["pareto"] for r in mark_pareto(rows)] == [True, True, False, True, False, True, None, None]
    assert mark_pareto([_row(0, 25.0, 1.0)])[0]["pareto"] is True


def _job(sweep: Path, num: int, summary: dict | None) -> None:
    (sweep / str(num) / ".hydra").mkdir(parents=True)
    if summary is not None:
        (sweep / str(num) / "summary.json").write_text(json.dumps(summary))


def test_sweep_summary_table_plot_and_wandb_run(tmp_path: Path) -> None:
    shared = ["model=tiny", "trainer.max_steps=40"]
    _job(tmp_path, 0, _row(0, 30.0, 1.0, overrides=[*shared, "model.vrt.depths=[2,2]"], peak_mem_bytes=2 ** 30))
    _job(tmp_path, 1, _row(1, 28.0, 3.0, overrides=[*shared, "model.vrt.depths=[1,1]"], peak_mem_bytes=2 ** 29))
    _job(tmp_path, 2, {"job": 2, "overrides": [*shared, "model.vrt.depths=[0,0]"], "status": "failed",
                       "error_type": "ValueError", "error": "model.vrt.depths entries must be >= 1 | got 0"})
    _job(tmp_path, 3, None)  # killed before it wrote a summary
    (tmp_path / ".devices").mkdir()  # not a job
    rows, _ = write_sweep_summary(tmp_path)
    assert [r["job"] for r in rows] == [0, 1, 2, 3] and [r["pareto"] for r in rows] == [True, True, None, None]
    with open(tmp_path / "sweep_summary.csv") as f:
        table = list(csv.DictReader(f))
    assert table[0]["overrides"] == "model=tiny trainer.max_steps=40 model.vrt.depths=[2,2]"
    assert (table[0]["val_rank"], table[1]["val_rank"], table[0]["peak_mem_bytes"]) == ("1", "2", str(2 ** 30))
    assert table[2]["error"] == "ValueError: model.vrt.depths entries must be >= 1 | got 0"
    assert table[3]["status"] == "failed" and table[3]["error"].startswith("no summary.json")
    md = (tmp_path / "sweep_summary.md").read_text().splitlines()
    assert md[2].startswith("| 1 | True | 0 | model.vrt.depths=[2,2] | ok |")  # only what tells the jobs apart
    assert "must be >= 1 \\| got 0" in md[4]  # a pipe in an error keeps the table's columns
    with Image.open(tmp_path / PLOT_FILE) as plot:
        assert plot.format == "PNG" and plot.size == (700, 450)
    assert not list(tmp_path.glob(".*tmp*"))  # written through the atomic writer, nothing left behind
    assert not (tmp_path / "sweep_means.csv").exists()  # one seed per setting: no means

    log_to_wandb(tmp_path, rows, OmegaConf.create({"project": "vrt-spike", "offline": True, "tags": ["t"]}))
    run_dir, = (tmp_path / "wandb").glob("offline-run-*")
    tables = list(run_dir.glob("files/media/table/sweep/summary_*.table.json"))
    assert len(tables) == 1 and json.loads(tables[0].read_text())["columns"][:3] == ["val_rank", "pareto", "job"]
    assert list(run_dir.glob("files/media/images/sweep/plot_*.png"))


def test_spikes_help_table_is_a_multirun_read_by_the_summary(tmp_path: Path) -> None:
    """`python train.py -m experiment=spikes_help seed=0,1 model.use_spike=true,false test=true`: each job's test
    PSNR beside the blurry input and the spike floor, and the mean over the seeds of each setting."""
    figures = {(0, "true"): 32.0, (0, "false"): 28.3, (1, "true"): 31.8, (1, "false"): 28.1}
    for job, ((seed, spike), psnr) in enumerate(figures.items()):
        _job(tmp_path, job, _row(job, psnr - 1, 1.0 + job, test_psnr=psnr, test_psnr_input=28.17,
                                 test_psnr_spike_floor=31.19, overrides=["experiment=spikes_help", f"seed={seed}",
                                                                         f"model.use_spike={spike}", "test=true"]))
    _job(tmp_path, 4, {"job": 4, "status": "failed", "error": "killed", "overrides": ["experiment=spikes_help", "seed=2",
                                                                                        "model.use_spike=true", "test=true"]})
    _, text = write_sweep_summary(tmp_path)
    jobs = read_csv(tmp_path / "sweep_summary.csv")
    assert [(r["overrides"].split()[1:3], r["test_psnr"], r["test_psnr_input"], r["test_psnr_spike_floor"])
            for r in jobs[:2]] == [(["seed=0", "model.use_spike=true"], "32.0", "28.17", "31.19"),
                                   (["seed=0", "model.use_spike=false"], "28.3", "28.17", "31.19")]
    means = read_csv(tmp_path / "sweep_means.csv")
    assert [(r["setting"], r["seeds"]) for r in means] == [("model.use_spike=true", "2"), ("model.use_spike=false", "2")]
    assert [float(r["test_psnr"]) for r in means] == pytest.approx([31.9, 28.2])  # the failed seed 2 left out
    assert float(means[0]["test_psnr_spike_floor"]) == 31.19 and float(means[1]["val_psnr"]) == pytest.approx(27.2)
    assert "Mean over the seeds of each setting" in text and "| model.use_spike=true | 2 | 30.90 | 31.90 |" in text


def test_cores_and_device_pool_checks(tmp_path: Path) -> None:
    assert parse_cores("0-3,8") == (0, 1, 2, 3, 8) and format_cores((8, 0, 1, 2, 3)) == "0-3,8"
    with pytest.raises(ValueError, match="cpu cores '3-1'"):
        parse_cores("3-1")
    with pytest.raises(ValueError, match=r"hydra.launcher.devices: expected devices such as cuda:0 or cpu:0-7, got 'gpu0'"):
        DevicePool.from_config(["gpu0"], None, tmp_path)
    with pytest.raises(ValueError, match="cpu:0 and cpu:0 share core 0"):
        DevicePool.from_config(["cpu:0", "cpu:0"], None, tmp_path)
    with pytest.raises(ValueError, match=r"hydra.launcher.n_jobs=2 exceeds the 1 devices \['cpu:0'\]"):
        DevicePool.from_config(["cpu:0"], 2, tmp_path)
    with pytest.raises(ValueError, match="hydra.launcher.devices: cuda:99 is not a visible GPU"):
        DevicePool.from_config(["cuda:99"], None, tmp_path)
    pool = DevicePool.from_config(["cpu:0"], None, tmp_path)
    assert (pool.n_jobs, [d.spec for d in pool.devices]) == (1, ["cpu:0"])


_CLAIM = """
import sys, time
from pathlib import Path
from vrt_spike.lit.devices import Device, DevicePool
pool = DevicePool((Device("cpu", "0"), Device("cpu", "1")), Path(sys.argv[1]), 2)
print(pool.claim().spec, pool.claim().spec, flush=True)  # the same device for every job of a process
time.sleep(float(sys.argv[2]))
"""


def test_processes_claim_distinct_devices_and_a_freed_one_is_taken_again(tmp_path: Path) -> None:
    holders = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    claimed = sorted(h.stdout.readline().split()[0] for h in holders)
    assert claimed == ["cpu:0", "cpu:1"]  # never two processes on one device
    late = subprocess.Popen([sys.executable, "-c", _CLAIM, str(tmp_path), "0"], stdout=subprocess.PIPE, text=True)
    for h in holders:
        h.wait()
    assert late.communicate(timeout=30)[0].split()[0] in claimed  # waited, then took a device its holder freed


def test_objectives_and_spawned_strategy_are_checked() -> None:
    assert _objective_keys(OmegaConf.create({"objectives": ["val_psnr", "samples_per_s"]})) == ["val_psnr", "samples_per_s"]
    with pytest.raises(ValueError, match=r"objectives: 'val_loss' is not a summary.json figure"):
        _objective_keys(OmegaConf.create({"objectives": ["val_loss"]}))
    assert objectives({"val_psnr": 30.5}, ["val_psnr"]) == 30.5
    assert all(math.isnan(v) for v in objectives({"status": "failed"}, ["val_psnr", "samples_per_s"]))
    cfg = OmegaConf.create({"model": {"vrt": {"depths": [1] * 9, "embed_dims": [8] * 9, "num_heads": [1] * 9,
                                              "window_size": [2, 4, 4]}},
                            "trainer": {"strategy": "ddp_spawn"}})
    with pytest.raises(ValueError, match="trainer.strategy=ddp_spawn: expected ddp or auto"):
        check_config(cfg)
