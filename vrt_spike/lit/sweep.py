"""The sweep summary, written when a multirun ends: which job trains fastest at what quality and memory.

``<sweep dir>/sweep_summary.{csv,md}`` (one row per job, failed jobs with their error; each job's test
PSNR beside the blurry input's and the spike floor's when it ran ``test=true``), the ``pareto``
column (not dominated on val PSNR and samples/s, both higher-is-better), with several seeds per
setting ``sweep_means.csv`` and a second table in the ``.md``: the mean over the seeds of each
setting (the "do the spikes help" table: ``python train.py -m experiment=spikes_help seed=0,1,2
model.use_spike=true,false test=true``), ``sweep_plot.png`` (samples/s
against val PSNR, one labelled point per job, the front joined), the same table and plot as one W&B
run in the sweep's group (offline unless ``logger.wandb.offline=false``), and a non-zero exit status
naming the failed jobs.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vrt_spike.atomic import atomic_path, write_text_atomically
from vrt_spike.tables import cell, markdown_table, write_csv

__all__ = ["SUMMARY_FILE", "PLOT_FILE", "COLUMNS", "MEAN_COLUMNS", "SweepSummaryCallback", "write_summary", "read_summary",
           "rank_by_val", "mark_pareto", "read_job_summaries", "format_table", "seed_means", "write_plot",
           "write_sweep_summary"]

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"   # written by every train.py run in its run dir
PLOT_FILE = "sweep_plot.png"
# Jobs are ranked by val_psnr (the selection split) only; the test columns (test=true: each job's
# val-selected checkpoint on the test split) are reported, never ranked on.
COLUMNS = ("val_rank", "pareto", "job", "overrides", "status", "error", "val_split", "val_psnr", "val_psnr_input",
           "val_psnr_spike_floor", "val_ssim", "test_split", "test_psnr", "test_psnr_input", "test_psnr_spike_floor",
           "samples_per_s", "peak_mem_bytes", "params", "world_size", "device", "step_time_s", "steps", "started_at",
           "ended_at", "run_dir")


def write_summary(run_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    path = Path(run_dir) / SUMMARY_FILE
    write_text_atomically(path, json.dumps(summary, indent=2, sort_keys=True))
    return path


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def rank_by_val(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sets ``val_rank`` (1 = best ``val_psnr``; jobs without one get none); rows keep their order."""
    scored = sorted((r for r in rows if _number(r.get("val_psnr"))), key=lambda r: -r["val_psnr"])
    for rank, row in enumerate(scored, 1):
        row["val_rank"] = rank
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value  # not NaN


def mark_pareto(rows: list[dict[str, Any]], keys: tuple[str, str] = ("val_psnr", "samples_per_s")) -> list[dict[str, Any]]:
    """Sets ``pareto``: True for a job no other job dominates on ``keys`` (both higher-is-better: another
    job at least as good on both and better on one), False for a dominated one, None for a job
    without both figures (failed, or no validation / timing)."""
    points = [(r, (r[keys[0]], r[keys[1]])) for r in rows if _number(r.get(keys[0])) and _number(r.get(keys[1]))]
    for row in rows:
        row["pareto"] = None
    for row, (a, b) in points:
        row["pareto"] = not any(x >= a and y >= b and (x > a or y > b) for _, (x, y) in points)
    return rows


def read_job_summaries(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per job directory under ``sweep_dir`` (a job without a summary counts as failed), ranked by val,
    with the Pareto column."""
    rows = []
    for job_dir in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        if not job_dir.is_dir() or not (job_dir / ".hydra").is_dir():
            continue
        row = read_summary(job_dir) or {"job": _job_number(job_dir.name), "status": "failed",
                                        "error": f"no {SUMMARY_FILE}: killed, crashed or still running"}
        row["run_dir"] = str(job_dir)
        rows.append(row)
    return mark_pareto(rank_by_val(rows))


def _job_number(name: str) -> int | str:
    return int(name) if name.isdigit() else name


def _error(row: dict[str, Any]) -> str | None:
    if row.get("error") is None:
        return None
    return f"{row['error_type']}: {row['error']}" if row.get("error_type") else str(row["error"])


def _cell(row: dict[str, Any], column: str) -> Any:
    return _error(row) if column == "error" else row.get(column)


def _data_cell(row: dict[str, Any], column: str) -> Any:
    """A W&B table cell: numbers as they are, lists (overrides) as one string."""
    value = _cell(row, column)
    return cell(value) if isinstance(value, list) else value


def _varying(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each row's overrides that not every job shares (what tells the jobs apart)."""
    overrides = [list(r.get("overrides") or []) for r in rows]
    known = [set(o) for o in overrides if o]  # a job that wrote no summary has none
    shared = set.intersection(*known) if known else set()
    return [[o for o in own if o not in shared] for own in overrides]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``rows`` (columns :data:`COLUMNS`; ``overrides``: those that differ between the jobs,
    the CSV has them all)."""
    return markdown_table(COLUMNS, ([varying if c == "overrides" else _cell(row, c) for c in COLUMNS]
                                    for row, varying in zip(rows, _varying(rows))), missing="")


def _labels(rows: list[dict[str, Any]]) -> list[str]:
    """Each job's number and the overrides that differ between the jobs (the last part of each key)."""
    return [" ".join([f"#{row.get('job')}", *(o.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + o.split("=", 1)[-1]
                                               for o in varying)])
            for row, varying in zip(rows, _varying(rows))]


def write_plot(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """samples/s against val PSNR, one labelled point per job with both figures, the Pareto front joined."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    measured = [r for r in rows if r.get("pareto") is not None]
    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for row, label in zip(measured, _labels(measured)):
        ax.scatter(row["val_psnr"], row["samples_per_s"], color="tab:red" if row["pareto"] else "tab:gray", zorder=3)
        ax.annotate(label, (row["val_psnr"], row["samples_per_s"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    front = sorted((r for r in measured if r["pareto"]), key=lambda r: r["val_psnr"])
    if front:
        ax.plot([r["val_psnr"] for r in front], [r["samples_per_s"] for r in front], color="tab:red", lw=1,
                label="Pareto front (not dominated)")
        ax.legend(loc="best", fontsize=8)
    failed = len(rows) - len(measured)
    ax.set_title(f"{len(measured)} jobs" + (f" ({failed} without both figures: failed or not measured)" if failed else ""),
                 fontsize=9)
    ax.set_xlabel("val PSNR (dB)")
    ax.set_ylabel("training samples/s")
    ax.grid(alpha=0.3)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return path


MEAN_COLUMNS = ("setting", "seeds", "val_psnr", "test_psnr", "test_psnr_input", "test_psnr_spike_floor", "samples_per_s")


def seed_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting (the overrides that tell the jobs apart, ``seed=`` left out), the mean over its
    finished seeds of each figure of :data:`MEAN_COLUMNS`; empty unless a setting ran two seeds or more."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row, varying in zip(rows, _varying(rows)):
        if row.get("status") == "ok":
            setting = " ".join(o for o in varying if not o.startswith("seed=")) or "(every job)"
            groups.setdefault(setting, []).append(row)
    if all(len(group) < 2 for group in groups.values()):
        return []

    def mean(group: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in group if _number(r.get(key))]
        return sum(values) / len(values) if values else None

    return [{"setting": setting, "seeds": len(group), **{k: mean(group, k) for k in MEAN_COLUMNS[2:]}}
            for setting, group in groups.items()]


def write_sweep_summary(sweep_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], str]:
    """``sweep_summary.{csv,md}``, ``sweep_means.csv`` (several seeds per setting) and ``sweep_plot.png``
    of the jobs under ``sweep_dir``; returns the rows and the markdown."""
    sweep_dir = Path(sweep_dir)
    rows = read_job_summaries(sweep_dir)
    write_csv(sweep_dir / "sweep_summary.csv", COLUMNS, ([_cell(r, c) for c in COLUMNS] for r in rows))
    text = format_table(rows) + "\n"
    means = seed_means(rows)
    if means:
        write_csv(sweep_dir / "sweep_means.csv", MEAN_COLUMNS, means)
        text += "\nMean over the seeds of each setting:\n\n" + markdown_table(MEAN_COLUMNS, means) + "\n"
    write_text_atomically(sweep_dir / "sweep_summary.md", text)
    write_plot(sweep_dir / PLOT_FILE, rows)
    return rows, text


def log_to_wandb(sweep_dir: Path, rows: list[dict[str, Any]], wandb_cfg: DictConfig) -> None:
    """The table and the plot as one W&B run in the sweep's group (the sweep directory's name, as its jobs)."""
    import wandb

    run = wandb.init(project=wandb_cfg.get("project"), group=sweep_dir.name, name=f"{sweep_dir.name}-summary",
                     job_type="sweep_summary", tags=list(wandb_cfg.get("tags") or []), dir=str(sweep_dir),
                     mode="offline" if wandb_cfg.get("offline", True) else "online")
    try:
        table = wandb.Table(columns=list(COLUMNS), data=[[_data_cell(r, c) for c in COLUMNS] for r in rows])
        run.log({"sweep/summary": table, "sweep/plot": wandb.Image(str(sweep_dir / PLOT_FILE))})
    finally:
        run.finish()


class SweepSummaryCallback(Callback):
    """After ``-m``: the sweep summary (see the module), then exit status 1 when a job failed.

    A Hydra callback cannot fail a run by raising (Hydra turns that into a warning), so a failed job
    ends the multirun with ``SystemExit``, after everything is written."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows, text = write_sweep_summary(sweep_dir)
        print(f"\nSweep summary ({sweep_dir}/sweep_summary.md, {PLOT_FILE}):\n{text}", flush=True)
        wandb_cfg = (config.get("logger") or {}).get("wandb")
        if wandb_cfg is not None:
            log_to_wandb(sweep_dir, rows, wandb_cfg)
        failed = [r for r in rows if r.get("status") != "ok"]
        if failed:
            names = "; ".join(f"job {r.get('job')} ({_error(r) or r.get('status')})" for r in failed)
            sys.exit(f"{len(failed)} of {len(rows)} jobs failed: {names}. Their rows are in {sweep_dir}/sweep_summary.md, "
                     f"their tracebacks in their logs; re-run the same command with hydra.sweep.dir={sweep_dir} to run "
                     "only the jobs that are not complete")
