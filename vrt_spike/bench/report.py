"""The bench's tables, written by `vrt_spike.tables`: one configuration's summary and the comparison
of several rows (a multirun, `bench.compare`, the GPU ladder). The per-stage profile of the measured
fit is the timing callback's own summary, which the fit prints."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vrt_spike.tables import cell, markdown_table, si

# (column, title, number format) of the comparison table; `train_speedup`, `infer_speedup` and
# `mem_saving` are computed against the first measured row, the rest are `results.FIELDS`.
COMPARISON = (
    ("label", "configuration", None), ("model", "model", None), ("precision", "precision", None),
    ("optimizer", "optim", None), ("batch_size", "batch", None), ("crop_size", "crop", None),
    ("checkpointing", "ckpt", None), ("compile", "compile", None),
    ("train_step_ms_median", "train ms", ".1f"), ("train_speedup", "speedup", ".2f"),
    ("train_samples_per_s", "samples/s", ".3f"), ("train_peak_mem_mib", "peak MiB", ".0f"),
    ("train_planned_mem_mib", "planned MiB", ".0f"), ("mem_saving", "memory saving", "+.1%"),
    ("train_mfu", "MFU", ".1%"), ("top_regions", "top regions (self ms/step)", None),
    ("kernels_per_step", "kernels/step", "d"), ("warmup_s", "warm-up s", ".1f"),
    ("infer_ms_median", "infer ms", ".1f"), ("infer_speedup", "infer speedup", ".2f"), ("status", "status", None),
)
COMPARISON_COLUMNS = tuple(c for c, _, _ in COMPARISON)
NUMBERS = {c for c, _, spec in COMPARISON if spec is not None}


def _num(value: Any) -> float | None:
    """A row value as a float; None where nothing was measured (None, a CSV blank, NaN)."""
    if value is None or value == "":
        return None
    v = float(value)
    return None if v != v else v


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def compare_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each row's `COMPARISON_COLUMNS`: speedup (baseline time / time) and memory saving against the
    first row that measured a training step (the baseline); None where either did not."""
    if not rows:
        raise ValueError("nothing to compare: no benchmark rows")
    base = next((r for r in rows if _num(r.get("train_step_ms_median")) is not None), rows[0])
    out = []
    for r in rows:
        row = {c: r.get(c) for c in COMPARISON_COLUMNS}
        row.update({c: _num(r.get(c)) for c in NUMBERS if c in r})
        train, mem = _num(r.get("train_step_ms_median")), _num(r.get("train_peak_mem_mib"))
        base_mem = _num(base.get("train_peak_mem_mib"))
        row["train_speedup"] = _ratio(_num(base.get("train_step_ms_median")), train)
        row["infer_speedup"] = _ratio(_num(base.get("infer_ms_median")), _num(r.get("infer_ms_median")))
        row["mem_saving"] = None if mem is None or not base_mem else 1.0 - mem / base_mem
        if row.get("kernels_per_step") is not None:
            row["kernels_per_step"] = int(row["kernels_per_step"])
        if row.get("checkpointing"):  # vrt.use_checkpoint_attn+fusion.use_checkpoint -> vrt.attn+fusion
            row["checkpointing"] = str(row["checkpointing"]).replace(".use_checkpoint_", ".").replace(".use_checkpoint", "")
        out.append(row)
    return out


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown of `compare_rows(rows)` (first measured row = baseline), without the columns no row
    measured (the inference columns of a ladder, MFU without a peak)."""
    compared = compare_rows(rows)
    columns = [c for c in COMPARISON_COLUMNS if any(r[c] is not None for r in compared)]
    return markdown_table(columns, compared, formats={c: spec for c, _, spec in COMPARISON if spec},
                          headers={c: title for c, title, _ in COMPARISON}, right=NUMBERS)


def summary_table(row: Mapping[str, Any]) -> str:
    """One configuration: timings with spread, throughput, memory, FLOPs, MFU (markdown)."""
    def ms(prefix: str) -> str:
        if row.get(f"{prefix}_median") is None:
            return "n/a"
        return f"{row[f'{prefix}_median']:.1f} ms [{row[f'{prefix}_p10']:.1f}, {row[f'{prefix}_p90']:.1f}]"

    def pct(value: Any) -> str:
        return cell(value, ".1%", missing="n/a")

    planned = _num(row.get("train_planned_mem_mib"))
    lines = [
        ("time / call  median [p10, p90]", ms("train_step_ms"), ms("infer_ms")),
        ("samples/s", cell(row["train_samples_per_s"], ".3f"), cell(row["infer_samples_per_s"], ".3f", missing="n/a")),
        ("frames/s", cell(row["train_frames_per_s"], ".2f"), cell(row["infer_frames_per_s"], ".2f", missing="n/a")),
        (f"peak memory ({row['mem_kind']})", f"{row['train_peak_mem_mib']:.0f} MiB",
         cell(row["infer_peak_mem_mib"], ".0f", missing="n/a") + " MiB"),
        ("FLOPs / call", si(row["train_flops_per_step"], "FLOP"), si(row["infer_flops_per_forward"], "FLOP")),
        ("  of which deform conv (analytic)", si(row["train_deform_flops"], "FLOP"), ""),
        ("achieved", si(row["train_tflops_per_s"] * 1e12, "FLOP/s"),
         si(None if row["infer_tflops_per_s"] is None else row["infer_tflops_per_s"] * 1e12, "FLOP/s")),
        ("MFU", pct(row["train_mfu"]), pct(row["infer_mfu"])),
        ("ops / kernels per step (last warm-up step)",
         f"{cell(row['ops_per_step'], missing='n/a')} / {cell(row['kernels_per_step'], missing='n/a')}", ""),
        ("warm-up (compilation included)", cell(row["warmup_s"], ".1f", missing="n/a") + " s", ""),
    ]
    if planned is not None:
        error = planned / row["train_peak_mem_mib"] - 1
        lines.insert(4, ("  planned (python -m vrt_spike.bench.memory)", f"{planned:.0f} MiB ({100 * error:+.1f} %)", ""))
    caption = (f"{row['device_name']} | model={row['model']} precision={row['precision']} optim={row['optimizer']} "
               f"ckpt={row['checkpointing']} | B={row['batch_size']} T={row['clip_len']} crop={row['crop_size']} "
               f"K={row['num_bins']} | {row['warmup']} warm-up + {row['iters']} timed | {si(row['params'], '')}params | "
               f"MFU peak: {row['peak_source']}")
    return (f"vrt_spike.bench  {row['label']}\n\n" + markdown_table(("metric", "train step", "inference"), lines)
            + f"\n{caption}\n")
