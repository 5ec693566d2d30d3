"""Console tables for one benchmark row and for a comparison of several rows (rich)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def fmt_si(value: float | None, unit: str) -> str:
    """`1.5e12, "FLOP"` -> `"1.50 TFLOP"`."""
    if value is None:
        return "n/a"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _num(value: Any) -> float | None:
    """A row value as float; None for empty/None (CSV blanks) and NaN."""
    if value is None or value == "":
        return None
    v = float(value)
    return None if math.isnan(v) else v


def _add_row(table: Table, *cells: str) -> None:
    """Add cells as literal text (values like "[1.0, 2.0]" must not be read as rich markup)."""
    table.add_row(*(Text(c) for c in cells))


def summary_table(row: Mapping[str, Any]) -> Table:
    """One configuration: timings with spread, throughput, memory, FLOPs, MFU."""
    t = Table(title=f"vrt_spike.bench  {row['label']}", title_justify="left")
    t.add_column("metric")
    t.add_column("train step", justify="right")
    t.add_column("inference", justify="right")
    _add_row(
        t,
        "time / call  median [p10, p90]",
        f"{row['train_step_ms_median']:.1f} ms [{row['train_step_ms_p10']:.1f}, "
        f"{row['train_step_ms_p90']:.1f}]",
        f"{row['infer_ms_median']:.1f} ms [{row['infer_ms_p10']:.1f}, {row['infer_ms_p90']:.1f}]",
    )
    _add_row(t, "samples/s", f"{row['train_samples_per_s']:.3f}", f"{row['infer_samples_per_s']:.3f}")
    _add_row(t, "frames/s", f"{row['train_frames_per_s']:.2f}", f"{row['infer_frames_per_s']:.2f}")
    _add_row(t, f"peak memory ({row['mem_kind']})", f"{row['train_peak_mem_mib']:.0f} MiB",
              f"{row['infer_peak_mem_mib']:.0f} MiB")
    planned = _num(row.get("train_planned_mem_mib"))
    if planned is not None:
        error = planned / row["train_peak_mem_mib"] - 1
        _add_row(t, "  planned (python -m vrt_spike.bench.memory)", f"{planned:.0f} MiB ({100 * error:+.1f} %)", "")
    _add_row(t, "FLOPs / call", fmt_si(row["train_flops_per_step"], "FLOP"),
              fmt_si(row["infer_flops_per_forward"], "FLOP"))
    _add_row(t, "  of which deform conv (analytic)", fmt_si(row["train_deform_flops"], "FLOP"), "")
    _add_row(t, "achieved", fmt_si(row["train_tflops_per_s"] * 1e12, "FLOP/s"),
             fmt_si(row["infer_tflops_per_s"] * 1e12, "FLOP/s"))
    _add_row(t, "MFU", fmt_pct(_num(row["train_mfu"])),
              fmt_pct(_num(row["infer_mfu"])))
    t.caption = Text(
        f"{row['device_name']} | model={row['model']} precision={row['precision']} "
        f"optim={row['optimizer']} ckpt={row['checkpointing']} | B={row['batch_size']} "
        f"T={row['clip_len']} crop={row['crop_size']} K={row['num_bins']} | "
        f"{row['warmup']} warm-up + {row['iters']} timed | {fmt_si(row['params'], '')}params | "
        f"MFU peak: {row['peak_source']}"
    )
    return t


@dataclass(frozen=True)
class Comparison:
    """One configuration against the baseline (the first row)."""

    label: str
    train_step_ms: float
    train_speedup: float
    train_samples_per_s: float
    infer_ms: float
    infer_speedup: float
    train_peak_mem_mib: float
    mem_saving: float  # 1 - mem / baseline mem; negative when it uses more


def compare_rows(rows: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """Speedup (baseline time / time) and memory saving of each row against the first one."""
    if not rows:
        raise ValueError("nothing to compare: no benchmark rows")
    base = rows[0]
    base_train = float(base["train_step_ms_median"])
    base_infer = float(base["infer_ms_median"])
    base_mem = float(base["train_peak_mem_mib"])
    out = []
    for r in rows:
        train = float(r["train_step_ms_median"])
        infer = float(r["infer_ms_median"])
        mem = float(r["train_peak_mem_mib"])
        out.append(Comparison(
            label=str(r["label"]), train_step_ms=train, train_speedup=base_train / train,
            train_samples_per_s=float(r["train_samples_per_s"]), infer_ms=infer,
            infer_speedup=base_infer / infer, train_peak_mem_mib=mem,
            mem_saving=1.0 - mem / base_mem,
        ))
    return out


def comparison_table(comparisons: Sequence[Comparison], mem_kind: str) -> Table:
    t = Table(title=f"comparison against the first configuration ({comparisons[0].label})",
              title_justify="left")
    for col, justify in (("configuration", "left"), ("train ms", "right"), ("speedup", "right"),
                         ("samples/s", "right"), ("infer ms", "right"), ("infer speedup", "right"),
                         (f"peak MiB ({mem_kind})", "right"), ("memory saving", "right")):
        t.add_column(col, justify=justify)
    for c in comparisons:
        _add_row(t, c.label, f"{c.train_step_ms:.1f}", f"{c.train_speedup:.2f}x",
                  f"{c.train_samples_per_s:.3f}", f"{c.infer_ms:.1f}", f"{c.infer_speedup:.2f}x",
                  f"{c.train_peak_mem_mib:.0f}", f"{100 * c.mem_saving:+.1f} %")
    return t


def render_text(*tables: Table, width: int = 160) -> str:
    """Plain-text rendering of rich tables (for files and logs)."""
    console = Console(width=width, record=True, file=None, force_terminal=False,
                      color_system=None)
    with console.capture() as cap:
        for table in tables:
            console.print(table)
    return cap.get()
