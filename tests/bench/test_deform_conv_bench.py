"""``vrt_spike/bench/deform_conv.py``: both implementations' accuracy against float64, and their times."""
from __future__ import annotations

import re
import subprocess
import sys

FIELDS = ("out", "x", "offset", "mask", "weight", "bias")


def test_prints_accuracy_and_a_time_row_per_impl_and_thread_count() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vrt_spike.bench.deform_conv", "--pairs", "2", "--channels", "32", "--size", "16", "--threads", "1", "2",
         "--repeats", "1"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = re.findall(r"^(torchvision|ours)((?:\s+\d\.\de[-+]\d\d){6})\s+(\d+) of (\d+), (\S+)$", out, re.M)
    accuracy = {impl: dict(zip(FIELDS, map(float, errs.split()))) for impl, errs, *_ in rows}
    assert set(accuracy) == {"torchvision", "ours"}, out
    for impl, errors in accuracy.items():
        assert all(errors[f] < 1e-5 for f in FIELDS if f != "offset"), (impl, errors)
        assert errors["offset"] < 1e-2, (impl, errors)  # kinks at integer positions, see the script
    for impl, _, jumps, total, rest in rows:
        assert int(jumps) < 1e-4 * int(total) and float(rest) < 1e-5, (impl, jumps, rest)
    times = re.findall(r"^(torchvision|ours)\s+(\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)$", out, re.M)
    assert sorted((impl, int(t)) for impl, t, *_ in times) == [
        ("ours", 1), ("ours", 2), ("torchvision", 1), ("torchvision", 2)
    ]
    assert all(float(s) > 0 for *_, f, b, i in times for s in (f, b, i))
