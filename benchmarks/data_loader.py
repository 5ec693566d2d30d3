"""Data-loading benchmark: loader samples/s with and without the spike cache, and `.dat` decoding.

    python benchmarks/data_loader.py                       # synthetic default size
    python benchmarks/data_loader.py --height 720 --width 1280 --frames 6 --train-clips 1 \\
        --crop-size 256 --num-bins 32                                      # GoPro-spike geometry

Everything is written to a temp dir. Prints figures only (no assertions). A benchmark script, not part
of the package (it imports `vrt_spike`).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from vrt_spike.data.datamodule import SpikeDeblurDataModule
from vrt_spike.data.representations import spike_counts
from vrt_spike.data.spike_io import read_dat, write_dat
from vrt_spike.data.synthesize import SynthConfig, synthesize
from vrt_spike.timing.clock import now_s


def bench_decode(tmp: Path, frames: int = 56, height: int = 360, width: int = 640, bins: int = 32, repeats: int = 20) -> None:
    rng = np.random.default_rng(0)
    path = tmp / "bench.dat"
    write_dat(path, (rng.random((frames, height, width)) < 0.2).astype(np.uint8))
    decode, voxel, sub = [], [], []
    for _ in range(repeats):
        t0 = now_s()
        bits = read_dat(path, height, width)
        t1 = now_s()
        spike_counts(bits, bins)
        t2 = now_s()
        read_dat(path, height, width, start=frames // 2 - 4, stop=frames // 2 + 4)
        t3 = now_s()
        decode.append(t1 - t0), voxel.append(t2 - t1), sub.append(t3 - t2)
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    print(f".dat decode, {frames} frames {height}x{width} ({path.stat().st_size / 1e6:.2f} MB): "
          f"{ms(decode):.2f} ms (median of {repeats}); frames 8 of them: {ms(sub):.2f} ms; "
          f"voxel counts K={bins}: {ms(voxel):.2f} ms")


def bench_loader(root: Path, args: argparse.Namespace) -> None:
    for cache in (False, True):
        dm = SpikeDeblurDataModule(
            root=str(root), clip_len=args.clip_len, crop_size=args.crop_size, num_bins=args.num_bins,
            batch_size=args.batch_size, num_workers=args.workers, cache=cache, persistent_workers=False,
        )
        t0 = now_s()
        dm.prepare_data()
        prep = now_s() - t0
        dm.setup("fit")
        loader = dm.train_dataloader()
        next(iter(loader))  # warm-up (first-call costs, worker start)
        samples, stages = 0, {}
        t0 = now_s()
        for _ in range(args.epochs):
            for batch in loader:
                samples += batch["blur"].shape[0]
                for name, ms in batch["timings"].items():
                    stages.setdefault(name, []).extend(ms)
        elapsed = now_s() - t0
        per_stage = ", ".join(f"{n} {statistics.mean(v):.2f}" for n, v in stages.items())
        print(f"loader cache={'on ' if cache else 'off'}: {samples / elapsed:7.1f} samples/s "
              f"({samples} samples, workers={args.workers}, prepare_data {prep:.1f} s); per-sample ms: {per_stage}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--train-clips", type=int, default=6)
    p.add_argument("--clip-len", type=int, default=5)
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--num-bins", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench_decode(tmp)
        cfg = SynthConfig(train_clips=args.train_clips, test_clips=1, frames=args.frames, height=args.height, width=args.width)
        t0 = now_s()
        synthesize(tmp / "synthetic", cfg)
        print(f"synthesize: {args.train_clips} train + 1 test clips x {args.frames} frames at {args.height}x{args.width}: "
              f"{now_s() - t0:.1f} s")
        bench_loader(tmp / "synthetic", args)


if __name__ == "__main__":
    main()
