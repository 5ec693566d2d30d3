"""Bottleneck report from recorded timing tables.

    python -m vrt_spike.timing.report RUN_DIR [RUN_DIR ...] [--out DIR] [--labels a,b] [--top N]

Ranks the first run's regions by exclusive time (time not spent in a nested region), shows each
one's share of the step, compares every run side by side with per-region speedups over the first
run, names the config levers for the top regions, and writes ``report.md`` and ``report.png``
into the first RUN_DIR (or ``--out``). RUN_DIR is a run directory holding ``timing/`` or the
``timing`` directory itself.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vrt_spike.atomic import atomic_path, write_text_atomically
from vrt_spike.tables import cell, markdown_table
from vrt_spike.timing.console import top_regions, unattributed_ms
from vrt_spike.timing.table import (
    WORKER_PREFIX, RegionStats, TimingRow, read_meta, read_rows, summarize,
)

TOP_LEVEL = ("data", "forward", "backward", "optimizer_step")
RECOMPUTE_DOMINANT = 0.25  # recompute share of backward above which checkpointing is the lever


@dataclass
class Run:
    label: str
    path: Path
    rows: list[TimingRow]
    stats: dict[str, RegionStats]
    meta: dict

    @property
    def step_ms(self) -> float:
        return self.stats["step"].mean_ms


def load_run(path: str | Path, label: str, warmup: int | None) -> Run:
    rows = read_rows(path)
    meta = read_meta(path)
    if warmup is None:
        warmup = int(meta.get("warmup", 0))
    stats = summarize(rows, warmup)
    if not any(s.region == "step" for s in stats):
        raise ValueError(f"{path}: no 'step' rows after {warmup} warm-up step(s); "
                         "record more steps or pass --warmup 0")
    return Run(label, Path(path), rows, {s.region: s for s in stats}, meta)


def levers(region: str, run: Run) -> list[str]:
    """Config keys that move `region`'s time, most direct first."""
    name = region.removeprefix("backward.recompute.").removeprefix("backward.").removeprefix("forward.")
    if region.startswith("backward.recompute") or region == "backward":
        bwd = run.stats.get("backward")
        rec = run.stats.get("backward.recompute")
        if bwd and rec and bwd.mean_ms and rec.mean_ms / bwd.mean_ms >= RECOMPUTE_DOMINANT:
            return ["model.vrt.use_checkpoint_attn=false model.vrt.use_checkpoint_ffn=false optim=adamw8bit "
                "(no recompute; 8-bit AdamW makes room for the activations)"]
    if region == "data" or region.startswith(WORKER_PREFIX):
        return ["data.num_workers (more loader workers)", "the data cache (decode spikes once)"]
    if region == "optimizer_step":
        return ["optim=adamw8bit (8-bit states: less memory traffic)"]
    if region == "backward.ddp_sync":
        return ["data.batch_size (more compute per all-reduce)"]
    m = re.match(r"vrt\.stage(\d+)", name)
    if m:
        i = int(m.group(1))
        which = "the stage-8 entries" if i == 8 else f"stage {i}'s entry"
        return [f"model.vrt.depths ({which})", "model.vrt.window_size"]
    if name.startswith("vrt.spynet"):
        return ["optim.flow_freeze_steps >= trainer.max_steps (a flow frozen for the fit runs no SpyNet backward)"]
    if name.startswith("spike_tsa"):
        return ["model.spike_tsa.chunk_size", "model.spike_tsa.max_batch_tokens",
                "model.spike_tsa.chunk_shape"]
    if name.startswith("fusion"):
        return ["model.fusion.* (chunk_size, max_batch_tokens, heads)", "model.fuse_stages"]
    if name.startswith("spike_encoder"):
        return ["model.spike_encoder.channels_per_scale"]
    return []


def _ms(stats: dict[str, RegionStats], region: str) -> float | None:
    s = stats.get(region)
    return None if s is None else s.mean_ms


def _code(lever: str) -> str:
    """`key=value ...` (note) -> markdown with the config part as code."""
    key, sep, note = lever.partition(" (")
    return f"`{key}`" + (f" ({note}" if sep else "")


def rank_bottlenecks(run: Run, top: int) -> list[RegionStats]:
    return top_regions(list(run.stats.values()), top)


def build_report(runs: Sequence[Run], top: int, chart_name: str) -> str:
    base = runs[0]
    parts = [f"# Timing report: {', '.join(r.label for r in runs)}", ""]
    info = []
    for r in runs:
        steps = r.stats["step"].n
        sps = r.meta.get("samples_per_s")
        mfu = r.meta.get("mfu")
        ranks = sorted({row.rank for row in r.rows})
        info.append([r.label, str(r.path), str(steps), f"{r.step_ms:.1f}", cell(sps, ".2f", missing="–"),
                     "–" if mfu is None else f"{100 * mfu:.1f}%", str(len(ranks))])
    parts += [markdown_table(["run", "dir", "steps", "ms/step", "samples/s", "MFU", "ranks"], info), ""]

    ranked = rank_bottlenecks(base, top)
    parts += [f"## Bottlenecks of `{base.label}` (exclusive time, largest first)", ""]
    parts.append(markdown_table(
        ["#", "region", "self ms", "% of step", "incl. ms", "p50 ms", "p90 ms", "peak MiB"],
        [[str(i), f"`{s.region}`", f"{s.self_ms:.1f}", f"{100 * s.self_share:.1f}",
          f"{s.mean_ms:.1f}", f"{s.p50_ms:.1f}", f"{s.p90_ms:.1f}", cell(s.peak_mem_mib, ".0f", missing="–")]
         for i, s in enumerate(ranked, start=1)]))
    parts += ["", f"Unattributed (loss, Python, Lightning): {unattributed_ms(list(base.stats.values())):.1f} ms/step.", ""]

    parts += ["## Where the step goes", ""]
    rows = []
    for region in (*TOP_LEVEL, "backward.recompute", "backward.ddp_sync"):
        if region in base.stats:
            s = base.stats[region]
            rows.append([f"`{region}`", f"{s.mean_ms:.1f}", f"{100 * s.share_of_step:.1f}"])
    parts += [markdown_table(["region", "ms", "% of step"], rows), ""]
    workers = [s for s in base.stats.values() if s.region.startswith(WORKER_PREFIX)]
    if workers:
        parts += ["Loader-worker stages (per batch, summed over samples; they overlap the step "
                  "when workers prefetch):", ""]
        parts += [markdown_table(["stage", "ms/batch", "p90"],
                            [[f"`{s.region}`", f"{s.mean_ms:.1f}", f"{s.p90_ms:.1f}"]
                             for s in sorted(workers, key=lambda s: -s.mean_ms)]), ""]
    by_rank: dict[int, list[float]] = defaultdict(list)
    for row in base.rows:
        if row.region == "step":
            by_rank[row.rank].append(row.ms)
    if len(by_rank) > 1:
        parts += ["Per-rank mean step (stragglers stand out):", ""]
        parts += [markdown_table(["rank", "ms/step"], [[str(k), f"{sum(v) / len(v):.1f}"]
                                                  for k, v in sorted(by_rank.items())]), ""]

    parts += ["## Config levers for the top regions", ""]
    for s in ranked[:5]:
        lv = levers(s.region, base)
        if lv:
            parts.append(f"- `{s.region}` ({100 * s.self_share:.1f}% of the step): "
                         + "; ".join(_code(x) for x in lv))
    bwd, rec = base.stats.get("backward"), base.stats.get("backward.recompute")
    if bwd and rec and bwd.mean_ms and rec.mean_ms / bwd.mean_ms >= RECOMPUTE_DOMINANT:
        parts.append(f"- backward is {100 * rec.mean_ms / bwd.mean_ms:.0f}% recompute: "
                     "`model.vrt.use_checkpoint_attn=false model.vrt.use_checkpoint_ffn=false` "
                     "with `optim=adamw8bit` to make room")
    parts.append("")

    if len(runs) > 1:
        parts += [f"## Side by side (speedup = `{base.label}` ms / run ms)", ""]
        regions = ["step", *TOP_LEVEL]
        for s in ranked:
            if s.region not in regions:
                regions.append(s.region)
        for r in runs[1:]:
            for s in rank_bottlenecks(r, top):
                if s.region not in regions:
                    regions.append(s.region)
        header = ["region"] + [f"{r.label} ms (incl.)" for r in runs] + [f"speedup {r.label}" for r in runs[1:]]
        table = []
        for region in regions:
            vals = [_ms(r.stats, region) for r in runs]
            if all(v is None for v in vals):
                continue
            b = vals[0]
            speed = [("–" if (b is None or v is None or v <= 0) else f"{b / v:.2f}×") for v in vals[1:]]
            table.append([f"`{region}`"] + [cell(v, ".1f", missing="–") for v in vals] + speed)
        parts += [markdown_table(header, table), ""]
        for r in runs[1:]:
            sps0, sps = base.meta.get("samples_per_s"), r.meta.get("samples_per_s")
            line = f"- `{r.label}`: step {base.step_ms / r.step_ms:.2f}× faster than `{base.label}`"
            if sps0 and sps:
                line += f"; throughput {sps / sps0:.2f}×"
            parts.append(line)
        parts.append("")
    parts += [f"![top regions]({chart_name})", ""]
    return "\n".join(parts)


def plot(runs: Sequence[Run], top: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    regions = [s.region for s in rank_bottlenecks(runs[0], top)][::-1]
    y = np.arange(len(regions))
    height = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(regions) + 1.5))
    for k, r in enumerate(runs):
        vals = [r.stats[g].self_ms if g in r.stats else 0.0 for g in regions]
        ax.barh(y + k * height - 0.4 + height / 2, vals, height, label=r.label)
    ax.set_yticks(y, regions, fontsize=8)
    ax.set_xlabel("exclusive ms per step")
    ax.set_title(f"Top regions of {runs[0].label}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _labels(paths: Sequence[Path]) -> list[str]:
    names = [p.resolve().name if p.name != "timing" else p.resolve().parent.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{n}" for p, n in zip(paths, names)]
    return names


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vrt_spike.timing.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (holding timing/)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: first run)")
    ap.add_argument("--labels", default=None, help="comma-separated run labels")
    ap.add_argument("--top", type=int, default=12, help="regions in the ranking and chart")
    ap.add_argument("--warmup", type=int, default=None,
                    help="steps to skip (default: the run's recorded warm-up)")
    args = ap.parse_args(argv)
    labels = args.labels.split(",") if args.labels else _labels(args.runs)
    if len(labels) != len(args.runs):
        ap.error(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    try:
        runs = [load_run(p, lab, args.warmup) for p, lab in zip(args.runs, labels)]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.runs[0]
    md = build_report(runs, args.top, "report.png")
    write_text_atomically(out / "report.md", md)
    plot(runs, args.top, out / "report.png")
    print(md)
    print(f"wrote {out / 'report.md'} and {out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
