"""The on-disk table: schema, round trip, summary arithmetic, atomic writes, clear errors."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from vrt_spike.timing.table import (
    COLUMNS, SUMMARY_COLUMNS, SummaryAccumulator, TimingRow, read_rows, read_summary, summarize,
    write_rows, write_summary,
)


def fixture_rows() -> list[TimingRow]:
    rows = []
    for step, (fwd, stage8, bwd) in enumerate([(50, 30, 80), (40, 20, 60), (60, 40, 100), (45, 25, 70)]):
        for rank in (0, 1):
            total = fwd + bwd + 10 + rank  # + data
            rows += [TimingRow(step, 0, rank, "step", total),
                     TimingRow(step, 0, rank, "data", 10 + rank),
                     TimingRow(step, 0, rank, "forward", fwd, 100.0 + step),
                     TimingRow(step, 0, rank, "forward.vrt.stage8", stage8),
                     TimingRow(step, 0, rank, "backward", bwd),
                     TimingRow(step, 0, rank, "data.decode_spike", 500.0)]
    return rows


def test_schema_and_round_trip(tmp_path):
    rows = fixture_rows()
    path = write_rows(tmp_path / "timing", rows, part=0)
    assert path.name == "part-000000.csv"
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLUMNS == ("step", "epoch", "rank", "region", "ms", "peak_mem_mib")
    write_rows(tmp_path / "timing", rows[:3], part=1)
    back = read_rows(tmp_path)  # the run dir or the timing dir both work
    assert back == rows + rows[:3]
    assert read_rows(tmp_path / "timing") == back
    assert not list((tmp_path / "timing").rglob("*.tmp"))  # atomic: no temp file left behind


def test_summary_arithmetic(tmp_path):
    stats = {s.region: s for s in summarize(fixture_rows(), warmup=1)}
    steps = np.array([110, 111, 170, 171, 125, 126], dtype=float)  # steps 1-3, ranks 0-1
    fwd = np.array([40, 40, 60, 60, 45, 45], dtype=float)
    s = stats["forward"]
    assert s.n == 6
    assert s.mean_ms == pytest.approx(fwd.mean())
    assert s.p50_ms == pytest.approx(np.percentile(fwd, 50))
    assert s.p90_ms == pytest.approx(np.percentile(fwd, 90))
    assert (s.min_ms, s.max_ms) == (40, 60)
    assert s.share_of_step == pytest.approx(fwd.sum() / steps.sum())
    # forward.vrt is absent: forward.vrt.stage8 nests in its nearest recorded ancestor.
    assert s.self_ms == pytest.approx((fwd.sum() - np.array([20, 20, 40, 40, 25, 25]).sum()) / 6)
    assert stats["forward.vrt.stage8"].self_ms == pytest.approx(stats["forward.vrt.stage8"].mean_ms)
    assert s.peak_mem_mib == 103.0
    assert stats["step"].share_of_step == pytest.approx(1.0)
    # Worker stages are not nested in `data`: data's exclusive time stays its own.
    assert stats["data"].self_ms == pytest.approx(stats["data"].mean_ms)
    assert stats["data.decode_spike"].mean_ms == 500
    assert list(stats)[0] == "step"
    write_summary(tmp_path, list(stats.values()))
    back = {s.region: s for s in read_summary(tmp_path)}
    with open(tmp_path / "summary.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == SUMMARY_COLUMNS
    assert back["forward"].p90_ms == pytest.approx(s.p90_ms, rel=1e-5)
    assert back["data"].peak_mem_mib is None


def test_accumulator_matches_one_shot_summary():
    rows = fixture_rows()
    acc = SummaryAccumulator(warmup=1)
    acc.add(rows[:20])
    acc.add(rows[20:])
    assert acc.summary() == summarize(rows, warmup=1)
    assert len(acc) == 6


def test_bad_tables_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="part-"):
        read_rows(tmp_path)
    bad = tmp_path / "timing" / "rows" / "part-000000.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("step,epoch,rank,region,ms\n0,0,0,step,1\n")
    with pytest.raises(ValueError, match=r"part-000000.csv: header .* != expected"):
        read_rows(tmp_path)
    bad.write_text(",".join(COLUMNS) + "\n0,0,0,step,fast,\n")
    with pytest.raises(ValueError, match=r"part-000000.csv:2: column 'ms' expects a number, got 'fast'"):
        read_rows(tmp_path)
