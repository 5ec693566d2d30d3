"""The bench's row from measured figures: every field filled and consistent (throughput, MFU and
the per-stage table from the step times and FLOPs); the checkpointing switches; bad keys named."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.bench.run import InferFigures, TrainFigures, failure, make_row, measure_training, print_report
from vrt_spike.timing.clock import Spread
from vrt_spike.bench.results import FIELDS
from vrt_spike.timing.table import TimingRow, summarize

META = dict(label="toy", model="toy", optimizer="adamw", checkpointing="off", compile=False)
SHAPE = dict(batch_size=2, clip_len=3, crop_size=8, num_bins=4)


def _figures() -> tuple[TrainFigures, InferFigures]:
    stages = summarize(TimingRow(step=s, epoch=0, rank=0, region=r, ms=ms) for s in range(3)
                       for r, ms in (("step", 40.0 + s), ("backward", 20.0), ("optimizer_step", 5.0),
                                     ("forward.vrt", 12.0)))
    train = TrainFigures(step_ms=Spread.of([40.0, 41.0, 42.0]), flops=6_000_000, deform_flops=1000,
                         peak_bytes=300 * 2**20, mem_kind="cpu_tensors_rss_rise", stages=stages,
                         planned_bytes=290 * 2**20, warmup_s=3.5, ops_per_step=900, kernels_per_step=950,
                         optimizer="AdamW (fused)", params=1234)
    infer = InferFigures(ms=Spread.of([10.0, 11.0, 12.0]), flops=2_000_000, peak_bytes=100 * 2**20, params=1234)
    return train, infer


def test_row_complete_consistent(capsys: pytest.CaptureFixture) -> None:
    train, infer = _figures()
    row = make_row(META, SHAPE, device=torch.device("cpu"), precision="32", warmup=1, train=train, infer=infer,
                   peak_tflops=0.5)
    assert tuple(row) == FIELDS
    blanks = [k for k, v in row.items() if v is None or v == "" or v == {}]
    assert blanks == ["sweep_id", "overrides"]  # no sweep, no overrides
    assert row["status"] == "ok" and row["optimizer"] == "AdamW (fused)"  # what ran, not the group's name
    assert (row["warmup_s"], row["ops_per_step"], row["kernels_per_step"]) == (3.5, 900, 950)
    assert row["top_regions"] == "backward 20.0; forward.vrt 12.0; optimizer_step 5.0"  # by exclusive ms
    assert row["train_step_ms_p10"] <= row["train_step_ms_median"] == 41.0 <= row["train_step_ms_p90"]
    step_s = 41.0 / 1e3
    assert row["iters"] == 3 and row["warmup"] == 1
    assert row["train_samples_per_s"] == pytest.approx(2 / step_s)
    assert row["train_frames_per_s"] == pytest.approx(2 * 3 / step_s)
    assert row["infer_samples_per_s"] == pytest.approx(2 / (11.0 / 1e3))
    assert row["train_flops_per_step"] == 6_000_000 and row["train_deform_flops"] == 1000
    assert row["infer_flops_per_forward"] == 2_000_000
    assert row["train_mfu"] == pytest.approx(6e6 / step_s / 0.5e12)
    assert row["infer_mfu"] == pytest.approx(2e6 / 0.011 / 0.5e12)
    assert row["train_peak_mem_mib"] == 300 and row["infer_peak_mem_mib"] == 100
    assert row["params"] == 1234 and row["mem_kind"] == "cpu_tensors_rss_rise"
    assert row["compute_dtype"] in ("tf32", "fp32") and row["peak_source"].startswith("override")
    assert row["stage_ms"] == {"step": 41.0, "backward": 20.0, "optimizer_step": 5.0, "forward.vrt": 12.0}

    text = print_report(row)
    assert "samples/s" in text and "[p10, p90]" in text and "MFU" in text and "950" in text
    assert text in capsys.readouterr().out


def test_training_only_row_and_failure_status() -> None:
    """`bench.inference=false`: the inference columns stay empty; a configuration that ran out of
    memory (or that its memory plan refused) is `oom`, anything else `failed`, with the reason."""
    train, _ = _figures()
    row = make_row(META, SHAPE, device=torch.device("cpu"), precision="32", warmup=1, train=train, infer=None)
    assert row["infer_ms_median"] is None and row["params"] == 1234 and row["train_step_ms_median"] == 41.0
    assert "n/a" in print_report(row)

    class MemoryPlanError(RuntimeError):
        pass

    try:
        raise ValueError("wrapped") from MemoryPlanError("memory plan: the step needs 90 GiB\n(table)")
    except ValueError as err:
        assert failure(err) == "oom: MemoryPlanError: memory plan: the step needs 90 GiB"
    assert failure(RuntimeError("CUDA out of memory. Tried to allocate")).startswith("oom: RuntimeError: CUDA out")
    assert failure(KeyError("x")) == "failed: KeyError: 'x'"


def test_bf16_row_has_no_cpu_peak() -> None:
    train, infer = _figures()
    row = make_row(META, SHAPE, device=torch.device("cpu"), precision="bf16-mixed", warmup=2, train=train,
                   infer=infer)
    assert row["compute_dtype"] == "bf16"
    assert row["train_mfu"] is None and "n/a on cpu" in row["peak_source"]


def test_bad_bench_keys_are_named(compose_cfg, tmp_path) -> None:
    cfg = compose_cfg("bench", ["bench.iters=0"])
    with pytest.raises(ValueError, match="bench.iters must be >= 1"):
        measure_training(cfg, tmp_path)
    cfg = compose_cfg("bench", ["trainer.precision=64x"])
    train, infer = _figures()
    with pytest.raises(ValueError, match="trainer.precision"):
        make_row(META, SHAPE, device=torch.device("cpu"), precision=str(cfg.trainer.precision), warmup=1,
                 train=train, infer=infer)
