"""The users' memory table and the memory levers, planned at their 6 x 256^2 clip on this CPU.

    python benchmarks/memory_presets.py table     # presets x precision x checkpointing: peak, largest batch in 48 GB
    python benchmarks/memory_presets.py levers    # each lever: planned peak at 6 x 256^2, CPU step time

`table`: for `model=baseline|opt|fast` at 6 frames of 256^2 with 32 spike bins, fp32 and
bf16-mixed, checkpointing as shipped, every switch on and every switch off
(`vrt_spike.lit.config.checkpointing_overrides`): the planned peak of one training step at batch 1
and 2 and the largest batch that fits a 48 GB card less the 2 GiB reserve
(`vrt_spike.lit.memory_fit.solve`).

`levers`: each lever that lowers the memory of the baseline preset, priced in memory by the plan
(at 6 x 256^2, the preset's batch) and in time by `python -m vrt_spike.bench` on this CPU
(train.py's own step at 2 x 64^2, batch 1: what a CPU can run): the step time per sample and the
executed FLOPs per sample (recomputation included: the price of a checkpoint, whatever the
machine's load), each against the preset's. Prints markdown tables for docs/PERFORMANCE.md.
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

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses)
from vrt_spike import PROJECT_ROOT
from vrt_spike.lit.config import apply_overrides, checkpointing_overrides
from vrt_spike.lit.memory_fit import solve
from vrt_spike.lit.memory_plan import GIB, plan_training_step

USERS = ["data.clip_len=6", "data.crop_size=256", "data.num_bins=32", "paths.output_dir=/tmp/unused"]
CARD_GIB, RESERVE_GIB = 48, 2.0
CPU_SHAPE = ["data.clip_len=2", "data.crop_size=64", "data.batch_size=1"]


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def with_checkpointing(cfg, mode: str):
    if mode == "shipped":
        return cfg
    return apply_overrides(cfg, checkpointing_overrides(OmegaConf.to_container(cfg.model, resolve=True), mode == "on"))


def table() -> None:
    capacity = int((CARD_GIB - RESERVE_GIB) * GIB)
    print(f"| preset | precision | checkpointing | peak at batch 1 GiB | batch 2 GiB | largest batch in {CARD_GIB} GB |")
    print("|---|---|---|---:|---:|---:|")
    for preset in ("baseline", "opt", "fast"):
        for precision in ("32", "bf16-mixed"):
            for mode in ("shipped", "on", "off"):
                t0 = time.perf_counter()
                cfg = with_checkpointing(composed([f"model={preset}", f"trainer.precision={precision}",
                                                   "data.batch_size=1", *USERS]), mode)
                solution = solve(cfg, "batch", capacity)
                two = solution.tried.get(2)
                if two is None:
                    two = plan_training_step(apply_overrides(cfg, ["data.batch_size=2"])).peak_bytes
                largest = solution.value if solution.value is not None else 0
                if solution.value is not None and solution.next_value is None:
                    largest = f">= {solution.value}"
                print(f"| {preset} | {precision} | {mode} | {solution.tried[1] / GIB:.1f} | {two / GIB:.1f} | {largest} |"
                      f"  <!-- {time.perf_counter() - t0:.0f} s -->", flush=True)


LEVERS = {
    "the preset (alignment checkpointed, fp32, batch 1)": [],
    "alignment not checkpointed": ["model.vrt.use_checkpoint_align=false"],
    "bf16 mixed precision": ["trainer.precision=bf16-mixed"],
    "every checkpoint switch on": "on",
    "every checkpoint switch off": "off",
    "8-bit AdamW": ["optim=adamw8bit"],
    "spike chunk budgets halved": ["model.spike_tsa.max_batch_tokens=24576", "model.fusion.max_batch_tokens=24576"],
    "batch 2": ["data.batch_size=2"],
}


def bench_row(overrides: list[str], work: Path) -> dict:
    out = work / f"run{len(list(work.iterdir()))}"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "vrt_spike.bench", "model=baseline", *CPU_SHAPE, *overrides,
                           "bench.device=cpu", "bench.warmup=1", "bench.iters=3", "bench.breakdown=false",
                           "memory.check=false", f"bench.out={out}/rows.csv", f"hydra.run.dir={out}"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{overrides} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads((out / "rows.jsonl").read_text().splitlines()[-1])


def levers() -> None:
    print("| lever (model=baseline) | overrides | planned peak at 6 x 256^2 GiB | CPU ms per sample at 2 x 64^2 | "
          "time vs the preset | GFLOP per sample | FLOPs vs the preset |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = composed(["model=baseline", *USERS])
    reference = None
    with tempfile.TemporaryDirectory(prefix="memory_levers_") as tmp:
        for name, lever in LEVERS.items():
            model = OmegaConf.to_container(base.model, resolve=True)
            overrides = checkpointing_overrides(model, lever == "on") if isinstance(lever, str) else lever
            planned_cfg = (apply_overrides(base, overrides) if "optim=adamw8bit" not in overrides
                           else composed(["model=baseline", *USERS, *overrides]))
            peak = plan_training_step(planned_cfg).peak_bytes
            bench = ([f"bench.checkpointing={lever}"] if isinstance(lever, str) else overrides)
            row = bench_row(bench, Path(tmp))
            ms = float(row["train_step_ms_median"]) / int(row["batch_size"])
            flops = float(row["train_flops_per_step"]) / int(row["batch_size"])
            reference = reference or (ms, flops)
            shown = " ".join(overrides) if len(overrides) <= 3 else f"{len(overrides)} switches"
            print(f"| {name} | `{shown}` | {peak / GIB:.1f} | {ms:.0f} | {ms / reference[0]:.2f} x | "
                  f"{flops / 1e9:.0f} | {flops / reference[1]:.2f} x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("table", "levers"))
    args = parser.parse_args()
    table() if args.what == "table" else levers()


if __name__ == "__main__":
    main()
