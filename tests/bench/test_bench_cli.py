"""The real CLI on CPU: `python -m vrt_spike.bench model=tiny ...` writes complete, sane rows; a
multirun ends with the comparison table; `bench.compare` re-reads stored rows."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrt_spike.bench.results import FIELDS, read_jsonl

# Two real CLI runs of the tiny preset cost ~125 s of CPU (SpyNet's fixed cost dominates even at
# the smallest legal input): over the area's 60 s fast budget, so `make test-all` runs them.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The smallest input the tiny preset takes (VRT needs >= 40 px at window 4; SpyNet pads to 64).
SHAPE = ["data.batch_size=1", "data.clip_len=2", "data.crop_size=40", "data.num_bins=4"]
MODEL = ["model=tiny"]
LOOP = ["bench.warmup=2", "bench.iters=1", "bench.peak_tflops=1.0"]  # the breakdown on (its default)
CONFIG = ["bench.device=cpu"]
LABELS = [" ".join([*MODEL, *SHAPE, *CONFIG, f"optim={o}"]) for o in ("adamw", "adamw8bit")]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # glibc's mmap threshold pinned: the measured CPU peak is then the tensors' (PeakMemory)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2", MALLOC_MMAP_THRESHOLD_="8192")
    proc = subprocess.run([sys.executable, "-m", "vrt_spike.bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One CLI multirun of two configurations (AdamW, 8-bit AdamW) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("bench_cli")
    proc = _run(["-m", *MODEL, *SHAPE, *CONFIG, *LOOP, "optim=adamw,adamw8bit",
                 f"bench.out={tmp}/stable/results.csv", f"hydra.sweep.dir={tmp}/sweep"], tmp)
    return tmp, proc


def test_cli_rows_every_field_filled_and_sane(sweep) -> None:
    tmp, proc = sweep
    with open(tmp / "stable" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and tuple(rows[0]) == FIELDS
    assert [r["label"] for r in rows] == LABELS
    assert [r["optimizer"] for r in rows] == ["AdamW (fused)", "AdamW8bit"] and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert [k for k, v in row.items() if v == ""] == []
        assert int(row["kernels_per_step"]) >= int(row["ops_per_step"]) > 100 and float(row["warmup_s"]) > 0
        step_ms = float(row["train_step_ms_median"])
        assert step_ms > 0 and float(row["infer_ms_median"]) > 0
        assert float(row["train_step_ms_p10"]) <= step_ms <= float(row["train_step_ms_p90"])
        assert float(row["train_samples_per_s"]) == pytest.approx(1 / (step_ms / 1e3), rel=1e-6)
        assert float(row["train_frames_per_s"]) == pytest.approx(2 / (step_ms / 1e3), rel=1e-6)
        flops = int(row["train_flops_per_step"])
        assert flops > 2 * int(row["infer_flops_per_forward"]) > 0
        assert 0 < int(row["train_deform_flops"]) < flops  # VRT's DCN alignment, analytic
        assert float(row["train_mfu"]) == pytest.approx(flops / (step_ms / 1e3) / 1e12, rel=1e-6)
        assert row["peak_source"].startswith("override")
        assert float(row["train_peak_mem_mib"]) > 20 and row["mem_kind"] == "cpu_tensors_rss_rise"
        # The measured fit's memory plan, beside the measured peak. At this smallest input (about 80 MiB
        # of tensors) many buffers are under glibc's 8 KiB mmap threshold and reuse heap the warm-up
        # freed, so the RSS rise reads up to ~15 % low (measured: +9.6 % AdamW, +15 % 8-bit); the plan's
        # +-10 % is checked at sizes where the CPU measure is exact (tests/train/test_memory_plan.py).
        planned, measured = float(row["train_planned_mem_mib"]), float(row["train_peak_mem_mib"])
        assert 0.95 * measured <= planned <= 1.25 * measured
        assert row["device"] == "cpu" and row["precision"] == "32" and row["model"] == "tiny"
        assert row["checkpointing"] == "off"
        assert (row["batch_size"], row["clip_len"], row["crop_size"], row["num_bins"]) == (
            "1", "2", "40", "4")
    # same arithmetic whatever the optimizer (optimizer updates are not counted)
    assert rows[0]["train_flops_per_step"] == rows[1]["train_flops_per_step"]
    # JSON-lines sibling and run dirs hold the same rows, with the per-stage breakdown
    js = read_jsonl(tmp / "stable" / "results.jsonl")
    assert [r["train_flops_per_step"] for r in js] == [int(r["train_flops_per_step"]) for r in rows]
    stages = js[0]["stage_ms"]
    assert stages["step"] > 0 and stages["backward"] > 0 and stages["optimizer_step"] > 0
    assert {f"forward.vrt.stage{i}" for i in range(1, 9)} <= set(stages)
    assert "forward.spike_encoder" in stages and "forward.fusion.stage1" in stages
    for job in (0, 1):
        assert read_jsonl(tmp / "sweep" / str(job) / "bench.jsonl")[0]["job_num"] == job
    assert "samples/s" in proc.stdout and "Timing summary" in proc.stdout


def test_cli_sweep_ends_with_comparison_table(sweep) -> None:
    tmp, proc = sweep
    sweep_dir = tmp / "sweep"
    assert "comparison against the first configuration" in proc.stdout
    with open(sweep_dir / "comparison.csv") as f:
        cmp = list(csv.DictReader(f))
    assert [c["label"] for c in cmp] == LABELS
    assert float(cmp[0]["train_speedup"]) == 1.0 and float(cmp[0]["mem_saving"]) == 0.0
    rows = read_jsonl(tmp / "stable" / "results.jsonl")
    assert float(cmp[1]["train_speedup"]) == pytest.approx(
        rows[0]["train_step_ms_median"] / rows[1]["train_step_ms_median"])
    assert float(cmp[1]["mem_saving"]) == pytest.approx(
        1 - rows[1]["train_peak_mem_mib"] / rows[0]["train_peak_mem_mib"])
    assert {r["sweep_id"] for r in rows} == {str(sweep_dir.resolve())}
    assert [r["job_num"] for r in rows] == [0, 1]
    table = (sweep_dir / "comparison.md").read_text()
    assert table in proc.stdout

    again = _run([f"bench.compare={sweep_dir}"], tmp)
    assert table in again.stdout
