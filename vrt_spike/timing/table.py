"""The on-disk timing table of a run: long rows plus a per-region summary, written atomically.

Layout under ``<run_dir>/timing/``:

- ``rows/part-<NNNNNN>.csv`` -- one file per logging interval, columns :data:`COLUMNS`
  (``step`` is the 0-based training-batch index of the fit, ``rank`` the process rank,
  ``peak_mem_mib`` empty where not measured);
- ``summary.csv`` -- one line per region, columns :data:`SUMMARY_COLUMNS`;
- ``meta.json`` -- run facts (world size, batch size, samples/s, MFU, device, interval).

Every file is written to a temporary name and moved into place with ``os.replace``.
"""
from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrt_spike.atomic import write_text_atomically
from vrt_spike.tables import read_csv, write_csv
from vrt_spike.timing.regions import parent

COLUMNS = ("step", "epoch", "rank", "region", "ms", "peak_mem_mib")
SUMMARY_COLUMNS = ("region", "n", "mean_ms", "p10_ms", "p50_ms", "p90_ms", "min_ms", "max_ms",
                   "share_of_step", "self_ms", "self_share", "peak_mem_mib")
TIMING_DIR = "timing"
# `data.<stage>` rows are the Dataset's per-sample stages summed over a batch: worker time,
# which may run in parallel with the step, so they are not nested inside `data`.
WORKER_PREFIX = "data."


@dataclass(frozen=True)
class TimingRow:
    step: int
    epoch: int
    rank: int
    region: str
    ms: float
    peak_mem_mib: float | None = None


@dataclass(frozen=True)
class RegionStats:
    region: str
    n: int
    mean_ms: float
    p10_ms: float
    p50_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    share_of_step: float  # total ms of the region / total ms of `step`
    self_ms: float  # mean minus the means of its nested children (exclusive time)
    self_share: float
    peak_mem_mib: float | None


def timing_dir(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/timing``, or `run_dir` itself when it already is a timing directory."""
    run = Path(run_dir)
    if (run / "rows").is_dir() or (run / "summary.csv").is_file():
        return run
    return run / TIMING_DIR


NUMBER = ".6g"  # every millisecond and MiB figure of the files


def write_rows(tdir: Path, rows: Sequence[TimingRow], part: int) -> Path:
    """Write one interval's rows as ``rows/part-<part>.csv``; returns the path."""
    return write_csv(Path(tdir) / "rows" / f"part-{part:06d}.csv", COLUMNS,
                     ((r.step, r.epoch, r.rank, r.region, r.ms, r.peak_mem_mib) for r in rows),
                     formats={"ms": NUMBER, "peak_mem_mib": NUMBER})


def _parse_float(text: str, path: Path, line: int, col: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: column '{col}' expects a number, got {text!r}") from None


def read_rows(run_dir: str | os.PathLike) -> list[TimingRow]:
    """All rows of a run (a run dir or its timing dir), in part order."""
    tdir = timing_dir(run_dir)
    parts = sorted((tdir / "rows").glob("part-*.csv"))
    if not parts:
        raise FileNotFoundError(
            f"no timing rows under {tdir / 'rows'} (expected part-*.csv written by TimingCallback)")
    rows: list[TimingRow] = []
    for path in parts:
        for line, rec in enumerate(read_csv(path, COLUMNS), start=2):
            step, epoch, rank = (int(_parse_float(rec[c], path, line, c)) for c in COLUMNS[:3])
            ms = _parse_float(rec["ms"], path, line, "ms")
            peak = _parse_float(rec["peak_mem_mib"], path, line, "peak_mem_mib") if rec["peak_mem_mib"] else None
            rows.append(TimingRow(step, epoch, rank, rec["region"], ms, peak))
    return rows


class SummaryAccumulator:
    """Running per-region values (compact arrays) from which the summary is computed."""

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self._ms: dict[str, array] = {}
        self._peak: dict[str, float] = {}

    def add(self, rows: Iterable[TimingRow]) -> None:
        for r in rows:
            if r.step < self.warmup:
                continue
            self._ms.setdefault(r.region, array("d")).append(r.ms)
            if r.peak_mem_mib is not None:
                self._peak[r.region] = max(self._peak.get(r.region, 0.0), r.peak_mem_mib)

    def __len__(self) -> int:
        return len(self._ms.get("step", ()))

    def summary(self) -> list[RegionStats]:
        """Stats per region, ordered by mean time, largest first (``step`` first)."""
        step_total = float(np.sum(self._ms["step"])) if "step" in self._ms else 0.0
        n_steps = len(self._ms.get("step", ()))
        totals = {name: float(np.sum(v)) for name, v in self._ms.items()}
        child_total: dict[str, float] = {}
        for name, total in totals.items():
            if name.startswith(WORKER_PREFIX):
                continue
            par = parent(name)  # nearest recorded ancestor
            while par is not None and par not in totals:
                par = parent(par)
            if par is not None:
                child_total[par] = child_total.get(par, 0.0) + total
        stats = []
        for name, values in self._ms.items():
            v = np.asarray(values)
            self_total = totals[name] - child_total.get(name, 0.0) if name != "step" else totals[name]
            # Per-step means: a region may be absent from some steps (no optimizer step while
            # accumulating gradients), so exclusive time is averaged over all steps.
            denom = n_steps if n_steps else len(v)
            p10, p50, p90 = np.percentile(v, (10, 50, 90))
            stats.append(RegionStats(
                region=name, n=len(v), mean_ms=float(v.mean()),
                p10_ms=float(p10), p50_ms=float(p50), p90_ms=float(p90),
                min_ms=float(v.min()), max_ms=float(v.max()),
                share_of_step=totals[name] / step_total if step_total else float("nan"),
                self_ms=max(self_total, 0.0) / denom,
                self_share=max(self_total, 0.0) / step_total if step_total else float("nan"),
                peak_mem_mib=self._peak.get(name),
            ))
        stats.sort(key=lambda s: (s.region != "step", -s.mean_ms, s.region))
        return stats


def summarize(rows: Iterable[TimingRow], warmup: int = 0) -> list[RegionStats]:
    acc = SummaryAccumulator(warmup)
    acc.add(rows)
    return acc.summary()


def write_summary(tdir: Path, stats: Sequence[RegionStats]) -> Path:
    return write_csv(Path(tdir) / "summary.csv", SUMMARY_COLUMNS,
                     ((s.region, s.n, *(getattr(s, c) for c in SUMMARY_COLUMNS[2:])) for s in stats),
                     formats={c: NUMBER for c in SUMMARY_COLUMNS[2:]})


def read_summary(run_dir: str | os.PathLike) -> list[RegionStats]:
    path = timing_dir(run_dir) / "summary.csv"
    return [RegionStats(rec["region"], int(rec["n"]), *(_parse_float(rec[c], path, line, c) if rec[c] else None
                                                         for c in SUMMARY_COLUMNS[2:]))
            for line, rec in enumerate(read_csv(path, SUMMARY_COLUMNS), start=2)]


def write_meta(tdir: Path, meta: dict[str, Any]) -> Path:
    path = Path(tdir) / "meta.json"
    write_text_atomically(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = timing_dir(run_dir) / "meta.json"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
