"""Hydra callback that writes the sweep summary table after a multirun."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vrt_spike.atomic import write_text_atomically

__all__ = ["SUMMARY_FILE", "SweepSummaryCallback", "write_summary", "rank_by_val", "read_job_summaries", "format_table"]

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"   # written by every train.py job in its run dir
# Jobs are ranked by val_psnr (the selection split) only; the test columns (test=true: each job's
# val-selected checkpoint on the test split) are reported, never ranked on.
COLUMNS = ("val_rank", "job", "overrides", "val_split", "val_psnr", "val_psnr_input", "val_psnr_spike_floor", "val_ssim",
           "test_split", "test_psnr", "test_psnr_input", "test_psnr_spike_floor", "step_time_s", "steps", "status",
           "run_dir")


def write_summary(run_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    path = Path(run_dir) / SUMMARY_FILE
    write_text_atomically(path, json.dumps(summary, indent=2, sort_keys=True))
    return path


def rank_by_val(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sets ``val_rank`` (1 = best ``val_psnr``; jobs without one get none); rows keep their order."""
    scored = sorted((r for r in rows if isinstance(r.get("val_psnr"), (int, float))), key=lambda r: -r["val_psnr"])
    for rank, row in enumerate(scored, 1):
        row["val_rank"] = rank
    return rows


def read_job_summaries(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per job directory under ``sweep_dir`` (a job without a summary counts as failed), ranked by val."""
    rows = []
    for job_dir in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        if not job_dir.is_dir() or not (job_dir / ".hydra").is_dir():
            continue
        path = job_dir / SUMMARY_FILE
        if path.is_file():
            row = json.loads(path.read_text())
        else:
            row = {"job": job_dir.name, "status": "no summary (crashed or still running)"}
        row["run_dir"] = str(job_dir)
        rows.append(row)
    return rank_by_val(rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of ``rows`` (columns :data:`COLUMNS`)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


class SweepSummaryCallback(Callback):
    """After ``-m``: ``<sweep dir>/sweep_summary.csv`` and ``.md`` (rank on val, job, overrides, the val and test
    figures with the split each was measured on, step time)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = read_job_summaries(sweep_dir)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: _fmt(r.get(c)) if c == "overrides" else r.get(c) for c in COLUMNS} for r in rows)
        write_text_atomically(sweep_dir / "sweep_summary.csv", buf.getvalue())
        table = format_table(rows)
        write_text_atomically(sweep_dir / "sweep_summary.md", table + "\n")
        print(f"\nSweep summary ({sweep_dir}/sweep_summary.csv):\n{table}\n", flush=True)
