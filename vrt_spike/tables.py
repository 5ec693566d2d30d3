"""The one table writer: a cell's text, a CSV file written atomically, a markdown table.

Rows are mappings (column -> value) or sequences in column order. A cell is ``None`` (or NaN) when
nothing was measured: empty in a CSV, ``missing`` (``n/a``) in a markdown table. Lists (a job's
overrides) become one space-separated string, mappings (a bench row's ``stage_ms``) JSON.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vrt_spike.atomic import write_text_atomically

__all__ = ["cell", "si", "csv_text", "write_csv", "read_csv", "markdown_table"]

Row = Mapping[str, Any] | Sequence[Any]


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def cell(value: Any, spec: str | None = None, *, missing: str = "") -> str:
    """One cell's text: ``spec`` formats a number (``".2f"``, ``".6g"``), ``missing`` stands for
    nothing measured; without a spec a number keeps every digit (a CSV that is read back)."""
    if _missing(value):
        return missing
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return " ".join(cell(v, spec) for v in value)
    if spec is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def si(value: float | None, unit: str, missing: str = "n/a") -> str:
    """``1.5e12, "FLOP"`` -> ``"1.50 TFLOP"``."""
    if _missing(value):
        return missing
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _values(row: Row, columns: Sequence[str]) -> list[Any]:
    if isinstance(row, Mapping):
        return [row.get(c) for c in columns]
    if len(row) != len(columns):
        raise ValueError(f"table row: expected {len(columns)} cells ({list(columns)}), got {len(row)}: {list(row)}")
    return list(row)


def csv_text(columns: Sequence[str], rows: Iterable[Row], formats: Mapping[str, str] | None = None,
             header: bool = True) -> str:
    """CSV text of ``rows`` under ``columns`` (``formats``: column -> number spec)."""
    formats = formats or {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(v, formats.get(c)) for c, v in zip(columns, _values(row, columns))])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Row],
              formats: Mapping[str, str] | None = None) -> Path:
    """``rows`` as a CSV file at ``path``, written atomically (readers see the old file or the new one)."""
    path = Path(path)
    write_text_atomically(path, csv_text(columns, rows, formats))
    return path


def read_csv(path: str | os.PathLike, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings; ``columns``: the header it must have."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if columns is not None and tuple(header) != tuple(columns):
            raise ValueError(f"{path}: header {header} != expected {list(columns)}")
        rows = []
        for line, values in enumerate(reader, start=2):
            if len(values) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields, got {len(values)}")
            rows.append(dict(zip(header, values)))
        return rows


def _human(value: Any, spec: str | None) -> Any:
    """A float without a spec: 4 decimals below 1, 2 from 1 up (PSNR, samples/s, seconds)."""
    if spec is None and isinstance(value, float) and not _missing(value):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return value


def markdown_table(columns: Sequence[str], rows: Iterable[Row], formats: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None, missing: str = "n/a",
                   right: Iterable[str] = ()) -> str:
    """A markdown table of ``rows`` under ``columns``, titled ``headers`` (column -> title, default the
    column), numbers formatted by ``formats`` (column -> spec); ``right``: right-aligned columns."""
    formats, headers, right = formats or {}, headers or {}, set(right)
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in columns) + "|"]
    for row in rows:
        cells = [cell(_human(v, formats.get(c)), formats.get(c), missing=missing) for c, v in zip(columns, _values(row, columns))]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)
