"""Benchmark result rows, the one row schema of `python -m vrt_spike.bench` and of the GPU ladder
that runs it rung by rung: one per configuration, appended to a CSV and a JSON-lines file.

A row that measured nothing (the configuration ran out of memory or failed; a ladder rung stopped
at its time limit or skipped) has the same columns, ``None`` where nothing was measured and its
``status`` saying why (``unmeasured_row``).

Appends are safe against concurrent writers and crashes: an exclusive `fcntl` lock on
`.<file>.lock`, then the old content plus the new row is written atomically (`vrt_spike.atomic`: readers see
the old or the new file, never half a row). A CSV whose header differs from `FIELDS` is refused with an error naming the file rather than
mixed with rows of another layout.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vrt_spike.atomic import write_text_atomically
from vrt_spike.tables import csv_text

# Column order of the CSV; the JSON-lines rows hold the same keys (stage_ms as an object).
FIELDS: tuple[str, ...] = (
    "timestamp", "sweep_id", "job_num", "label", "overrides", "status",
    "host", "device", "device_name", "torch",
    "model", "precision", "compute_dtype", "optimizer", "checkpointing", "compile", "params",
    "batch_size", "clip_len", "crop_size", "num_bins", "warmup", "iters", "warmup_s",
    "train_step_ms_median", "train_step_ms_p10", "train_step_ms_p90",
    "train_samples_per_s", "train_frames_per_s",
    "infer_ms_median", "infer_ms_p10", "infer_ms_p90",
    "infer_samples_per_s", "infer_frames_per_s",
    "train_peak_mem_mib", "train_planned_mem_mib", "infer_peak_mem_mib", "mem_kind",
    "train_flops_per_step", "train_deform_flops", "infer_flops_per_forward",
    "train_tflops_per_s", "infer_tflops_per_s", "peak_tflops", "peak_source",
    "train_mfu", "infer_mfu",
    "ops_per_step", "kernels_per_step", "top_regions",
    "stage_ms",
)


def unmeasured_row(status: str, **known: Any) -> dict[str, Any]:
    """A row of `FIELDS` that measured nothing: ``status`` says why, ``known`` fills what is known
    (label, model, shape, ...)."""
    unknown = [k for k in known if k not in FIELDS]
    if unknown:
        raise ValueError(f"benchmark row: unexpected keys {unknown} (the columns are results.FIELDS)")
    return {**{k: None for k in FIELDS}, **known, "status": status}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_row(row: Mapping[str, Any]) -> None:
    missing = [k for k in FIELDS if k not in row]
    extra = [k for k in row if k not in FIELDS]
    if missing or extra:
        raise ValueError(f"benchmark row: missing keys {missing}, unexpected keys {extra}")


def append_csv(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append `row` (keys exactly `FIELDS`) to the CSV at `path`, writing the header if new."""
    _check_row(row)
    path = Path(path)
    with _locked(path):
        old = path.read_text() if path.exists() else ""
        if old:
            header = next(csv.reader(io.StringIO(old)), [])
            if tuple(header) != FIELDS:
                raise ValueError(
                    f"{path}: existing CSV header does not match this benchmark's columns "
                    f"(expected {list(FIELDS)}, found {header}); choose another bench.out"
                )
            if not old.endswith("\n"):
                raise ValueError(f"{path}: last line is incomplete; refusing to append to it")
        write_text_atomically(path, old + csv_text(FIELDS, [row], header=not old))


def append_jsonl(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append `row` as one JSON line to `path`."""
    _check_row(row)
    path = Path(path)
    with _locked(path):
        old = path.read_text() if path.exists() else ""
        if old and not old.endswith("\n"):
            raise ValueError(f"{path}: last line is incomplete; refusing to append to it")
        line = json.dumps({k: row[k] for k in FIELDS}, sort_keys=False)
        write_text_atomically(path, old + line + "\n")


def jsonl_path_for(csv_path: str | Path) -> Path:
    """The JSON-lines file kept next to a CSV: `results.csv` -> `results.jsonl`."""
    p = Path(csv_path)
    if p.suffix != ".csv":
        raise ValueError(f"bench.out must name a .csv file, got {str(csv_path)!r}")
    return p.with_suffix(".jsonl")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSON-lines results file, in file order."""
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON row ({e})") from e
    return rows


def append_row(csv_path: str | Path, row: Mapping[str, Any]) -> tuple[Path, Path]:
    """Append `row` to `csv_path` and to its JSON-lines sibling; returns both paths."""
    csv_path = Path(csv_path)
    jsonl = jsonl_path_for(csv_path)
    append_csv(csv_path, row)
    append_jsonl(jsonl, row)
    return csv_path, jsonl
