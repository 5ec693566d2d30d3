"""Compiled vs eager training step of one preset, measured the way the GPU ladder measures a rung.

    python -m vrt_spike.bench.compile_cost --preset tiny --batch 2 --clip 2 --crop 48
    python -m vrt_spike.bench.compile_cost --preset baseline --batch 1 --clip 6 --crop 64
    python -m vrt_spike.bench.compile_cost --preset baseline --device cuda --clip 6 --crop 256

Two runs of train.py's own step (`gpu_ladder.measure_rung`: the composed config, the
LightningModule, its optimizer, the precision plugin, the timing callback, a fixed batch on the
device), eager and `model.compile=true` (`--mode`), in this process one after the other. Prints per
run: the first steps' time (compilation), the mean timed step, operators and kernels per step
(`torch.profiler` over one timed step), Dynamo's graphs and recompiles (`TORCH_LOGS=recompiles`).
Fused AdamW; every checkpoint switch off unless `--checkpointing on`.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from vrt_spike.bench.gpu_ladder import RungSpec, Switches, measure_rung


class _Recompiles(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Recompiling function" in message:
            self.reasons.append(" ".join(message.split())[:160])


def measure(args: argparse.Namespace, compile_mode: str | None, work: Path) -> dict:
    spec = RungSpec(
        rung=compile_mode or "eager", preset=args.preset,
        switches=Switches(precision=args.precision, fused=None, batch_size=args.batch,
                          checkpointing=args.checkpointing == "on", compile_mode=compile_mode),
        device=args.device, clip_len=args.clip, crop_size=args.crop, warmup=args.warmup, min_steps=args.steps,
        max_steps=args.steps, measure_s=0.0, run_dir=str(work / (compile_mode or "eager")),
        peak_tflops=args.peak_tflops)
    handler = _Recompiles()
    logger = logging.getLogger("torch._dynamo")
    torch._dynamo.reset()
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        row = measure_rung(spec)
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()
    from torch._dynamo.utils import counters

    row["graphs"] = counters["stats"]["unique_graphs"] if compile_mode else 0
    row["recompiles"] = handler.reasons
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--clip", type=int, default=2)
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation happens there)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--mode", default="default", help="model.compile_mode of the compiled run")
    p.add_argument("--checkpointing", choices=("on", "off"), default="off", help="every model use_checkpoint* switch")
    p.add_argument("--peak-tflops", type=float, default=1.0, help="MFU peak (a CPU has no table entry)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args, mode, Path(tmp)) for mode in (None, args.mode)]
    print(f"\npreset={args.preset} device={args.device} precision={args.precision} batch={args.batch} "
          f"clip={args.clip} crop={args.crop} checkpointing={args.checkpointing}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'run':<16} {'first steps s':>13} {'step ms':>9} {'ops/step':>9} {'kernels/step':>12} {'graphs':>6} "
          f"{'recompiles':>10}")
    for r in rows:
        print(f"{r['compile']:<16} {r['warmup_s']:13.1f} {r['step_ms']:9.1f} {r['ops_per_step']:9d} "
              f"{r['kernels_per_step']:12d} {r['graphs']:6d} {len(r['recompiles']):10d}")
    eager, compiled = rows
    print(f"compiled vs eager: step x{eager['step_ms'] / compiled['step_ms']:.2f} faster, "
          f"{eager['kernels_per_step'] / compiled['kernels_per_step']:.1f}x fewer kernels per step; "
          f"compilation about {compiled['warmup_s'] - eager['warmup_s']:.0f} s up front")
    for reason in compiled["recompiles"]:
        print("  recompile:", reason)


if __name__ == "__main__":
    main()
