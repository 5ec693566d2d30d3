"""Sweeps end to end (train.py -m from another working directory): parallel jobs on devices of their own,
DDP jobs under torchrun, a failing job as a row and the resumed sweep, an Optuna search."""
from __future__ import annotations

import csv
import json
import os
import sqlite3
from pathlib import Path

import pytest
from train_support import run_script, tiny_overrides


def _rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv") as f:
        return list(csv.DictReader(f))


def _summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "summary.json").read_text())


def _ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two CPU devices need two cores")
def test_parallel_jobs_overlap_on_devices_of_their_own(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", *tiny_overrides(synthetic_root, steps=3), "optim.lr=0.001,0.002",
                                   "data.num_workers=1",  # a job's loader workers start inside a launcher worker
                                   "hydra/launcher=parallel", "hydra.launcher.devices=[cpu:0,cpu:1]",
                                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    _ok(proc)
    jobs = [_summary(sweep / j) for j in ("0", "1")]
    assert sorted(j["device"] for j in jobs) == ["cpu:0", "cpu:1"]  # each job bound to its own core
    assert [j["job"] for j in jobs] == [0, 1] and all(j["status"] == "ok" and j["steps"] == 3 for j in jobs)
    overlap = min(j["ended_at"] for j in jobs) - max(j["started_at"] for j in jobs)
    shortest = min(j["ended_at"] - j["started_at"] for j in jobs)
    assert overlap > 0.5 * shortest, (overlap, jobs)  # they ran at the same time, not one after the other
    assert sorted(p.name for p in (sweep / ".devices").iterdir()) == ["cpu_0.lock", "cpu_1.lock"]


def test_ddp_jobs_in_a_multirun(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", *tiny_overrides(synthetic_root, steps=1), "trainer.devices=2",
                                   "optim.lr=0.001,0.002", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    _ok(proc)
    for job in (0, 1):
        summary = _summary(sweep / str(job))
        assert summary["world_size"] == 2 and summary["job"] == job and summary["steps"] == 1
        assert f"optim.lr={0.001 * (job + 1):g}" in summary["overrides"]
        assert summary["samples_per_s"] > 0 and summary["peak_mem_bytes"] > 0 and summary["params"] > 0
        assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / str(job) / "train_ddp_rank1.log").is_file()  # each rank a single run under torchrun
    rows = _rows(sweep)
    assert [r["job"] for r in rows] == ["0", "1"] and [r["world_size"] for r in rows] == ["2", "2"]
    assert sorted(r["val_rank"] for r in rows) == ["1", "2"]
    best = max(rows, key=lambda r: float(r["val_psnr"]))
    assert best["val_rank"] == "1" and best["pareto"] == "True"  # ranked on val only


def test_failing_job_is_a_row_and_the_sweep_resumes(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *tiny_overrides(synthetic_root), "data.crop_size=8,40", f"hydra.sweep.dir={sweep}"]
    proc = run_script("train.py", args, cwd=tmp_path)
    assert proc.returncode == 1
    assert "1 of 2 jobs failed: job 0 (ValueError: data.crop_size=8 does not fit" in proc.stderr
    failed, done = _rows(sweep)
    assert failed["status"] == "failed" and failed["error"].startswith("ValueError: data.crop_size=8 does not fit")
    assert failed["val_psnr"] == "" and failed["pareto"] == ""
    assert done["status"] == "ok" and float(done["val_psnr"]) > 0 and done["pareto"] == "True"
    assert "data.crop_size=40" in done["overrides"] and done["error"] == ""
    log = (sweep / "0" / "train.log").read_text()
    assert "Traceback" in log and "check_config" in log  # the traceback is kept in the job's log
    assert "| data.crop_size=8 | failed |" in (sweep / "sweep_summary.md").read_text()
    assert (sweep / "sweep_plot.png").stat().st_size > 0
    finished = _summary(sweep / "1")

    again = run_script("train.py", args, cwd=tmp_path)  # the same sweep into the same directory
    assert again.returncode == 1 and "1 of 2 jobs failed" in again.stderr
    assert _summary(sweep / "1") == finished  # not run again
    assert "job 1 is complete" in (sweep / "1" / "train.log").read_text()
    assert _summary(sweep / "0")["started_at"] > finished["ended_at"]  # the failed one ran again


def test_optuna_search_two_trials_and_resume(synthetic_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=optuna", *tiny_overrides(synthetic_root),
            'model.vrt.depths=choice("[1,1,1,1,1,1,1,1,1]","[2,2,2,2,2,2,2,1,1]")', "model.vrt.window_size=[2,4,4]",
            "model.spike_tsa.chunk_size=choice(32,64)", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"]
    _ok(run_script("train.py", args, cwd=tmp_path))
    with sqlite3.connect(sweep / "optuna.db") as db:
        values = db.execute("SELECT t.number, v.objective, v.value FROM trials t JOIN trial_values v "
                            "ON t.trial_id = v.trial_id WHERE t.state = 'COMPLETE'").fetchall()
    assert len(values) == 4
    for number, objective, value in values:  # the study holds both objectives of each job's summary
        summary = _summary(sweep / str(number))
        assert value == pytest.approx(summary[("val_psnr", "samples_per_s")[objective]])
        assert summary["model"] == "tiny" and summary["status"] == "ok"
    rows = _rows(sweep)
    assert {r["pareto"] for r in rows} <= {"True", "False"} and "True" in {r["pareto"] for r in rows}
    assert (sweep / "optimization_results.yaml").is_file()

    again = run_script("train.py", args, cwd=tmp_path)  # the study is complete: nothing runs again
    _ok(again)
    assert "2 trials finished of n_trials=2" in again.stdout + again.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1"]
