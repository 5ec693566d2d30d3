"""The real CLI on CPU: `python -m vrt_spike.bench model=tiny ...` writes complete, sane rows; a
multirun ends with the comparison table; `bench.compare` re-reads stored rows."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrt_spike.profiling.results import FIELDS, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
# Small enough for the 60 s budget on 2 shared cores, large enough for every stage to run.
SHAPE = ["data.batch_size=1", "data.clip_len=2", "data.crop_size=32", "data.num_bins=4"]
LOOP = ["bench.warmup=1", "bench.iters=2", "bench.breakdown_steps=1", "bench.device=cpu"]


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "vrt_spike.bench", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("bench_single")
    proc = _run(["model=tiny", *SHAPE, *LOOP, "bench.peak_tflops=1.0",
                 f"bench.out={tmp}/stable/results.csv", f"hydra.run.dir={tmp}/run"], tmp)
    return tmp, proc


def test_cli_row_every_field_filled_and_sane(single_run) -> None:
    tmp, proc = single_run
    with open(tmp / "stable" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and tuple(rows[0]) == FIELDS
    row = rows[0]
    blank = [k for k, v in row.items() if v == ""]
    assert blank == ["sweep_id"]  # a single run belongs to no sweep
    step_ms = float(row["train_step_ms_median"])
    assert step_ms > 0 and float(row["infer_ms_median"]) > 0
    assert float(row["train_step_ms_p10"]) <= step_ms <= float(row["train_step_ms_p90"])
    assert float(row["train_samples_per_s"]) == pytest.approx(1 / (step_ms / 1e3), rel=1e-6)
    assert float(row["train_frames_per_s"]) == pytest.approx(2 / (step_ms / 1e3), rel=1e-6)
    flops = int(row["train_flops_per_step"])
    assert flops > int(row["infer_flops_per_forward"]) > 0
    assert 0 < int(row["train_deform_flops"]) < flops  # VRT's DCN alignment, counted analytically
    assert float(row["train_mfu"]) == pytest.approx(flops / (step_ms / 1e3) / 1e12, rel=1e-6)
    assert row["peak_source"].startswith("override")
    assert float(row["train_peak_mem_mib"]) > 50 and row["mem_kind"].startswith("cpu_rss")
    assert row["model"] == "tiny" and row["device"] == "cpu"
    assert (row["batch_size"], row["clip_len"], row["crop_size"], row["num_bins"]) == ("1", "2", "32", "4")
    # the run dir holds the same row, the JSON-lines sibling the per-stage breakdown
    js = read_jsonl(tmp / "stable" / "results.jsonl")[0]
    assert js["train_flops_per_step"] == flops
    assert any(k.startswith("forward.vrt.stage") for k in js["stage_ms"])
    assert js["stage_ms"]["backward"] > 0
    assert (tmp / "run" / "bench.csv").exists() and (tmp / "run" / "bench.jsonl").exists()
    assert "samples/s" in proc.stdout and "per-stage breakdown" in proc.stdout


def test_cli_sweep_ends_with_comparison_table(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = _run(["-m", "model=tiny", *SHAPE, *LOOP, "bench.breakdown_steps=0",
                 "trainer.precision=32,bf16-mixed", f"bench.out={tmp_path}/results.csv",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert "comparison against the first configuration" in proc.stdout
    with open(sweep / "comparison.csv") as f:
        cmp = list(csv.DictReader(f))
    assert [c["label"] for c in cmp] == ["model=tiny trainer.precision=32",
                                         "model=tiny trainer.precision=bf16-mixed"][: len(cmp)]
    assert len(cmp) == 2
    assert float(cmp[0]["train_speedup"]) == 1.0 and float(cmp[0]["mem_saving"]) == 0.0
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert float(cmp[1]["train_speedup"]) == pytest.approx(
        rows[0]["train_step_ms_median"] / rows[1]["train_step_ms_median"])
    assert {r["sweep_id"] for r in rows} == {str(sweep.resolve())}
    assert [r["job_num"] for r in rows] == [0, 1]
    assert (sweep / "comparison.txt").read_text() in proc.stdout

    again = _run([f"bench.compare={sweep}"], tmp_path)
    assert (sweep / "comparison.txt").read_text() in again.stdout
