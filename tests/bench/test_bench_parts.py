"""Peak table and MFU, the timing loop, result files and the comparison table."""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from vrt_spike.timing.clock import Spread, time_callable
from vrt_spike.timing.memory import PeakMemory
from vrt_spike.bench.peaks import compute_dtype_for, lookup_peak, mfu, resolve_peak
from vrt_spike.bench.report import compare_rows, comparison_table
from vrt_spike.bench.results import FIELDS, append_csv, append_row, read_jsonl, unmeasured_row


@pytest.mark.parametrize(
    ("name", "expected", "bf16"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", "H100 NVL", 835.5),
        ("NVIDIA H200", "H200 SXM", 989.4),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
        ("NVIDIA A100 80GB PCIe", "A100", 312.0),
        ("NVIDIA RTX A6000", "RTX A6000", 154.8),
        ("NVIDIA L40S", "L40S", 362.05),
        ("NVIDIA L40", "L40", 181.05),
        ("NVIDIA A10", "A10", 125.0),
        ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090", 165.2),
        ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090", 71.0),
    ],
)
def test_peak_table_matches_device_names(name: str, expected: str, bf16: float) -> None:
    peak = lookup_peak(name)
    assert peak is not None and peak.name == expected
    assert peak.tflops("bf16") == bf16
    assert peak.fp32 < peak.tflops("bf16")


def test_unknown_gpu_and_unsupported_type() -> None:
    assert lookup_peak("NVIDIA GeForce RTX 3090 Ti") is None
    assert lookup_peak("Some Accelerator 9000") is None
    assert lookup_peak("Tesla V100-SXM2-16GB").tflops("bf16") is None


def test_precision_to_compute_dtype() -> None:
    assert compute_dtype_for("bf16-mixed") == "bf16"
    assert compute_dtype_for("16-mixed") == "fp16"
    assert compute_dtype_for("32", "highest") == "fp32"
    assert compute_dtype_for(32, "high") == "tf32"
    with pytest.raises(ValueError, match="trainer.precision"):
        compute_dtype_for("64")


def test_mfu_and_peak_resolution_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_peak(cpu, "fp32").tflops is None
    assert "n/a on cpu" in resolve_peak(cpu, "fp32").source
    over = resolve_peak(cpu, "fp32", override_tflops=2.0)
    assert over.tflops == 2.0 and "override" in over.source
    with pytest.raises(ValueError, match="bench.peak_tflops"):
        resolve_peak(cpu, "fp32", override_tflops=0.0)
    assert mfu(1e12, 0.5, 4.0) == pytest.approx(0.5)
    assert mfu(1e12, 0.5, None) is None


def test_time_callable_counts_calls_and_measures_sleep() -> None:
    import time

    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.002)

    times = time_callable(fn, warmup=2, iters=4, device=torch.device("cpu"))
    assert len(calls) == 6 and len(times) == 4
    assert all(t >= 2.0 for t in times)
    s = Spread.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.p10 < s.median < s.p90 and s.n == 5
    with pytest.raises(ValueError, match="iters"):
        time_callable(fn, warmup=0, iters=0, device=torch.device("cpu"))


def test_cpu_peak_memory_sees_a_large_allocation() -> None:
    mem = PeakMemory(torch.device("cpu"))
    live = torch.ones(1024)
    mem.reset()
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched (above glibc's largest mmap threshold: unmapped when freed)
    block += 1
    del block
    assert mem.rise() >= 60 * 1024 * 1024
    assert 60 * 1024 * 1024 + 4096 <= mem.tensors_peak(live_bytes=4096) <= mem.read()
    assert mem.kind.startswith("cpu_tensors_rss_rise")


@pytest.mark.cuda
def test_cuda_peak_memory_and_event_timing() -> None:
    dev = torch.device("cuda")
    mem = PeakMemory(dev)
    mem.reset()
    x = torch.empty(32 * 1024 * 1024, device=dev)  # 128 MiB
    assert mem.read() >= 128 * 1024 * 1024 and mem.kind == "cuda_max_allocated"
    del x
    mem.reset()
    a = torch.rand(1024, 1024, device=dev)
    times = time_callable(lambda: a @ a, warmup=1, iters=3, device=dev)
    assert len(times) == 3 and all(t > 0 for t in times)


def _row(label: str, step_ms: float, mem: float, job: int = 0) -> dict:
    row = {k: 1 for k in FIELDS}
    row.update(label=label, job_num=job, train_step_ms_median=step_ms, infer_ms_median=step_ms / 3,
               train_samples_per_s=1000 / step_ms, train_peak_mem_mib=mem, mem_kind="cpu_rss_hwm",
               stage_ms={"step": step_ms}, train_mfu=None)
    return row


def test_append_csv_and_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "res" / "results.csv"
    append_row(out, _row("a", 10.0, 100.0))
    append_row(out, _row("b", 5.0, 50.0))
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["a", "b"]
    assert tuple(rows[0]) == FIELDS
    assert rows[0]["train_mfu"] == ""  # None -> empty cell
    assert json.loads(rows[1]["stage_ms"]) == {"step": 5.0}
    js = read_jsonl(out.with_suffix(".jsonl"))
    assert [r["label"] for r in js] == ["a", "b"] and js[0]["stage_ms"] == {"step": 10.0}


def test_append_refuses_foreign_header_and_bad_rows(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="results.csv.*header"):
        append_csv(out, _row("a", 1.0, 1.0))
    assert out.read_text() == "a,b\n1,2\n"  # untouched
    bad = _row("a", 1.0, 1.0)
    del bad["label"]
    with pytest.raises(ValueError, match="missing keys \\['label'\\]"):
        append_csv(tmp_path / "new.csv", bad)
    with pytest.raises(ValueError, match="bench.out must name a .csv"):
        append_row(tmp_path / "results.txt", _row("a", 1.0, 1.0))


def _append_many(path: str, start: int) -> None:
    for i in range(start, start + 10):
        append_row(path, _row(f"r{i}", 1.0 + i, 1.0))


def test_concurrent_appends_lose_no_row(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(out), 10 * k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    with open(out) as f:
        labels = sorted(r["label"] for r in csv.DictReader(f))
    assert labels == sorted(f"r{i}" for i in range(30))
    assert len(read_jsonl(out.with_suffix(".jsonl"))) == 30


def test_comparison_against_first_row() -> None:
    rows = [_row("fp32", 100.0, 400.0), _row("bf16", 50.0, 300.0), _row("ckpt", 125.0, 500.0)]
    cmp = compare_rows(rows)
    assert [c["train_speedup"] for c in cmp] == pytest.approx([1.0, 2.0, 0.8])
    assert [c["mem_saving"] for c in cmp] == pytest.approx([0.0, 0.25, -0.25])
    text = comparison_table(rows)
    assert "| 2.00 |" in text and "| +25.0% |" in text and "| -25.0% |" in text
    with pytest.raises(ValueError, match="no benchmark rows"):
        compare_rows([])
    # A row that measured nothing (out of memory, a ladder rung past its time) compares as n/a, and
    # the baseline is the first row that measured a step.
    oom = unmeasured_row("oom: MemoryPlanError: needs 90 GiB", label="big", model="baseline")
    cmp = compare_rows([oom, *rows])
    assert cmp[0]["train_speedup"] is None and cmp[1]["train_speedup"] == 1.0 and cmp[2]["train_speedup"] == 2.0
    line = next(line for line in comparison_table([oom, *rows]).splitlines() if line.startswith("| big |"))
    assert "| n/a |" in line and line.endswith("| oom: MemoryPlanError: needs 90 GiB |")
    assert "MFU" not in comparison_table(rows)  # a column no row measured is left out
