"""Report CLI on recorded fixture tables."""
from __future__ import annotations

import re

from vrt_spike.timing.report import main
from vrt_spike.timing.table import TimingRow, write_meta, write_rows

# Exclusive ms per step of the fixture runs.
BASELINE = {"data": 2.0, "forward.vrt.stage8": 900.0, "forward.vrt.stage2": 250.0,
            "forward.spike_tsa.scale1": 40.0, "backward.vrt.stage8": 700.0,
            "backward.recompute.vrt.stage8": 1500.0, "optimizer_step": 60.0}
FAST = {"data": 2.0, "forward.vrt.stage8": 450.0, "forward.vrt.stage2": 250.0,
        "forward.spike_tsa.scale1": 40.0, "backward.vrt.stage8": 700.0, "optimizer_step": 30.0}


def record(run_dir, self_ms: dict[str, float], steps: int = 4, samples_per_s: float = 1.0):
    """Write a run whose regions have the given exclusive times (parents = sum of children)."""
    rows = []
    for step in range(steps):
        totals: dict[str, float] = {}
        for region, ms in self_ms.items():
            parts = region.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                totals[name] = totals.get(name, 0.0) + ms * (1 + 0.01 * step)
        totals["step"] = sum(v for k, v in totals.items() if "." not in k) + 5.0
        rows += [TimingRow(step, 0, 0, k, v) for k, v in totals.items()]
    write_rows(run_dir / "timing", rows, part=0)
    write_meta(run_dir / "timing", {"warmup": 1, "samples_per_s": samples_per_s})


def test_report_ranks_compares_and_writes(tmp_path, capsys):
    base, fast = tmp_path / "baseline", tmp_path / "fast"
    record(base, BASELINE, samples_per_s=0.5)
    record(fast, FAST, samples_per_s=1.5)
    assert main([str(base), str(fast)]) == 0
    md = (base / "report.md").read_text()
    png = (base / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert md in capsys.readouterr().out  # the CLI prints the report too
    ranking = re.findall(r"^\| (\d+) \| `([^`]+)` \| ([\d.]+) \|", md, flags=re.M)
    assert [r[1] for r in ranking[:3]] == ["backward.recompute.vrt.stage8", "forward.vrt.stage8",
                                           "backward.vrt.stage8"]
    assert float(ranking[0][2]) == 1500.0 * 1.02  # mean of steps 1-3 (warm-up step 0 skipped)
    # Side by side: step-8 forward is 2x faster in `fast`.
    assert re.search(r"\| `forward.vrt.stage8` \| 918.0 \| 459.0 \| 2.00× \|", md)
    assert "throughput 3.00×" in md
    # Levers: stage 8 -> depths/window; recompute-dominated backward -> checkpointing off + 8-bit AdamW.
    assert "`model.vrt.depths` (the stage-8 entries); `model.vrt.window_size`" in md
    assert "`model.vrt.use_checkpoint_attn=false model.vrt.use_checkpoint_ffn=false optim=adamw8bit`" in md
    assert "model.spike_tsa.chunk_size" not in md.split("## Config levers")[1].split("##")[0]


def test_report_levers_for_attention_and_data(tmp_path):
    run = tmp_path / "run"
    record(run, {"forward.spike_tsa.scale1": 500.0, "forward.fusion.stage1": 400.0, "data": 300.0,
                 "forward.vrt.stage1": 10.0})
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out), "--top", "3"]) == 0
    md = (out / "report.md").read_text()
    levers = md.split("## Config levers")[1]
    assert "`model.spike_tsa.chunk_size`; `model.spike_tsa.max_batch_tokens`" in levers
    assert "`model.fusion.*`" in levers
    assert "`data.num_workers`" in levers
    assert (out / "report.png").is_file() and not (run / "report.md").exists()


def test_report_errors_on_missing_table(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no timing rows under" in capsys.readouterr().err
