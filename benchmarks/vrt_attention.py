"""VRT training step (forward + backward) or inference forward: SDPA vs explicit-softmax attention.

Each attention implementation runs in its own fresh subprocess (same seed, weights and input),
so memory peaks do not leak from one into the other.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over one step (allocator peak). On CPU,
the peak resident set size (RSS, psutil, sampled every 0.5 ms by a thread) during one step minus
the RSS just before it: an approximation that includes allocator slack.

    python benchmarks/vrt_attention.py                      # GoPro config, 1x6x3x64x64, CPU/CUDA
    python benchmarks/vrt_attention.py --size 128 --frames 6 --dtype bf16 --device cuda
    python benchmarks/vrt_attention.py --mode infer          # no_grad forward
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

CONFIGS: dict[str, dict[str, Any]] = {
    "gopro": dict(
        upscale=1, img_size=[6, 192, 192], window_size=[6, 8, 8], depths=[8] * 7 + [4] * 4, indep_reconsts=[9, 10],
        embed_dims=[96] * 7 + [120] * 4, num_heads=[6] * 11, pa_frames=2, deformable_groups=16,
    ),
    "tiny": dict(
        upscale=1, img_size=[4, 40, 40], window_size=[2, 4, 4], depths=[2] * 7 + [2] * 2, indep_reconsts=[8],
        embed_dims=[16] * 7 + [24] * 2, num_heads=[2] * 9, deformable_groups=2,
    ),
}
IMPLS = ["sdpa", "explicit"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="gopro")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--size", type=int, default=64, help="height = width of the input clip")
    p.add_argument("--steps", type=int, default=2, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype (fp32: no autocast)")
    p.add_argument("--checkpoint", action="store_true", help="use_checkpoint_attn and use_checkpoint_ffn")
    p.add_argument("--mode", choices=["train", "infer"], default="train",
                   help="train: forward + backward; infer: forward under torch.no_grad")
    p.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class _RssPeak:
    """Peak RSS of this process over a ``with`` block, sampled by a background thread."""

    def __init__(self, interval_s: float = 0.0005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self.baseline = self.peak = 0

    def __enter__(self) -> "_RssPeak":
        self.baseline = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops one step dispatches below autograd (each is at least one kernel launch
    on a GPU, so the count measures launch overhead), and which attention kernels ran: the fused
    SDPA kernels by name, and ``softmax`` for every unfused attention (the explicit path's
    ``_softmax`` and SDPA's math fallback, which decomposes into matmuls + ``_safe_softmax``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = self.fused = self.softmax = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        self.ops += 1
        if "_scaled_dot_product" in name and not name.endswith("_backward"):
            self.fused += 1
        elif name in ("aten::_softmax", "aten::_safe_softmax"):
            self.softmax += 1
        return func(*args, **(kwargs or {}))


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    from vrt_spike.models.vrt import VRT

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VRT(**CONFIGS[args.config], attn_impl=args.worker, use_checkpoint_attn=args.checkpoint,
                use_checkpoint_ffn=args.checkpoint).to(device).train(args.mode == "train")
    x = torch.rand(args.batch, args.frames, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    dtype = DTYPES[args.dtype]

    def step() -> None:
        if args.mode == "infer":
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                model(x)
            return
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = (model(x) - x).abs().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    # the timed steps also give the memory peak (no extra step)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() - base
        mem_kind = "CUDA allocator peak above the pre-step allocation"
    else:
        with _RssPeak() as rss:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
        peak = rss.peak - rss.baseline
        mem_kind = "peak RSS above the pre-step RSS (psutil, sampled)"
    counter = _OpCounter()
    with counter:  # one more step, untimed: the mode's Python hook would distort the timing
        step()
    sync()
    return {"impl": args.worker, "median_s": statistics.median(times), "times_s": times, "peak_mib": peak / 2**20,
            "memory": mem_kind, "ops": counter.ops, "fused_attn": counter.fused, "softmax": counter.softmax}


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = {}
    for impl in args.impls:
        proc = subprocess.run([sys.executable, __file__, *forwarded, "--worker", impl], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker for {impl} failed:\n{proc.stderr}")
        results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    shape = (args.batch, args.frames, 3, args.size, args.size)
    print(f"VRT config={args.config} mode={args.mode} input={shape} device={args.device} dtype={args.dtype} "
          f"checkpoint={args.checkpoint} steps={args.steps} (warmup {args.warmup})")
    print(f"memory: {next(iter(results.values()))['memory']}")
    what = "fwd+bwd" if args.mode == "train" else "forward"
    print("ops: aten ops per step; fused: fused SDPA forward calls; softmax: unfused attentions")
    print(f"{'attention':<10} {what + ' median s':>17} {'peak MiB':>10} {'ops':>8} {'fused':>6} {'softmax':>8}")
    for impl, r in results.items():
        print(f"{impl:<10} {r['median_s']:>17.3f} {r['peak_mib']:>10.1f} {r['ops']:>8} {r['fused_attn']:>6} {r['softmax']:>8}")
    if {"sdpa", "explicit"} <= results.keys():
        s, e = results["sdpa"], results["explicit"]
        print(f"sdpa vs explicit: time x{e['median_s'] / s['median_s']:.2f} faster, "
              f"memory x{e['peak_mib'] / max(s['peak_mib'], 1e-9):.2f} lower")


if __name__ == "__main__":
    main()
