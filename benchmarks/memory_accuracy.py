"""The memory plan against the measured peak of real training steps on this CPU.

    python benchmarks/memory_accuracy.py [--quick]

Each configuration runs `python -m vrt_spike.bench` (train.py's own step on one fixed batch: one
warm-up step, one timed step) in a fresh process with glibc's mmap threshold pinned
(`MALLOC_MMAP_THRESHOLD_=8192`: a freed tensor leaves the resident set at once, so the timed step's
RSS rise is what its tensors took; `vrt_spike.timing.memory.PeakMemory`). The measured fit's
pre-flight plans the same step (`memory_plan.json`), so each row holds the planned peak beside
the measured one. Prints a markdown table for docs/PERFORMANCE.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

TINY = ["model=tiny", "data.clip_len=3", "data.crop_size=64", "data.batch_size=2"]
# Everything recomputed keeps little: a larger crop, so that the step's tensors and not the
# process's own overhead (kernel workspaces, page rounding: about 15 MiB) make the peak.
TINY_CHECKPOINTED = ["model=tiny", "data.clip_len=4", "data.crop_size=96", "data.batch_size=2", "bench.checkpointing=on"]
BASELINE = ["model=baseline", "data.clip_len=2", "data.crop_size=64", "data.batch_size=1"]
CONFIGS = {
    "tiny, fp32, no checkpointing": TINY,
    "tiny, bf16-mixed": [*TINY, "trainer.precision=bf16-mixed"],
    "tiny, fp32, every checkpoint on": TINY_CHECKPOINTED,
    "baseline, fp32, checkpointing as shipped": BASELINE,
    "baseline, bf16-mixed, as shipped": [*BASELINE, "trainer.precision=bf16-mixed"],
    "baseline, fp32, every checkpoint off": [*BASELINE, "bench.checkpointing=off"],
}
QUICK = ("tiny, fp32, no checkpointing", "tiny, bf16-mixed", "tiny, fp32, every checkpoint on")


def measure(overrides: list[str], work: Path) -> dict:
    """One bench run; its row (the measured and planned peaks) and the wall time."""
    out = work / f"run{len(list(work.iterdir()))}"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "8192", "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "vrt_spike.bench", *overrides, "bench.device=cpu", "bench.warmup=1", "bench.iters=1",
         "bench.breakdown=false", f"bench.out={out}/rows.csv", f"hydra.run.dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    row = json.loads((out / "rows.jsonl").read_text().splitlines()[-1])
    return {**row, "wall_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny configurations only")
    args = parser.parse_args()
    names = QUICK if args.quick else tuple(CONFIGS)
    lines = ["| configuration | overrides | measured peak MiB | planned MiB | error |",
             "|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="memory_accuracy_") as tmp:
        for name in names:
            row = measure(CONFIGS[name], Path(tmp))
            measured, planned = row["train_peak_mem_mib"], row["train_planned_mem_mib"]
            if not str(row["mem_kind"]).startswith("cpu_tensors_rss_rise") or row["mem_kind"].endswith("unpinned"):
                raise RuntimeError(f"{name}: measured as {row['mem_kind']}, not a pinned RSS rise")
            lines.append(f"| {name} | `{' '.join(CONFIGS[name])}` | {measured:.0f} | {planned:.0f} | "
                         f"{100 * (planned / measured - 1):+.1f} % |")
            print(lines[-1], f"({row['wall_s']:.0f} s)", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
