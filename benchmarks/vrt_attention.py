"""VRT training step (forward + backward) or inference forward: SDPA vs explicit-softmax attention vs upstream.

Each implementation runs in its own fresh subprocess (same seed, weights and input), so memory
peaks do not leak from one into the other. ``official`` is the upstream VRT module itself
(``models/network_vrt.py`` of github.com/JingyunLiang/VRT, not part of this repository) with our
weights loaded ``strict=True``: pass its directory with ``--official-dir`` or ``VRT_OFFICIAL_DIR``.

Memory (`vrt_spike.timing.memory.PeakMemory`): on CUDA the allocator's peak over the timed steps
above the allocation before them. On CPU a second fresh worker per implementation measures it: the
rise of the process's resident-set high-water mark over one step after the warmup. That worker runs
with glibc's ``MALLOC_MMAP_THRESHOLD_`` at 8 KiB, so every buffer is its own ``mmap``, returned to
the OS when freed: the RSS then follows the live tensors instead of the heap a warm process keeps
(which hid two thirds of a GoPro training step). That setting slows a step down, hence the separate
worker. A benchmark script, not part of the package (it imports `vrt_spike`).

    python benchmarks/vrt_attention.py                      # GoPro config, 1x6x3x64x64, CPU/CUDA
    python benchmarks/vrt_attention.py --size 128 --frames 6 --dtype bf16 --device cuda
    python benchmarks/vrt_attention.py --mode infer          # no_grad forward
    VRT_OFFICIAL_DIR=/tmp/vrt_official python benchmarks/vrt_attention.py --impls sdpa explicit official
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vrt_spike.timing.clock import now_s, synchronize, time_callable
from vrt_spike.timing.memory import PeakMemory

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
IMPLS = ["sdpa", "explicit"]  # ours; "official" on request (needs the upstream file)
ALL_IMPLS = [*IMPLS, "official"]
COMPILED = "+compile"  # suffix of a variant that runs under torch.compile
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
    p.add_argument("--compile", action="store_true",
                   help="also run each implementation under torch.compile (as model.compile=true does); "
                        "the warmup steps compile")
    p.add_argument("--mode", choices=["train", "infer"], default="train",
                   help="train: forward + backward; infer: forward under torch.no_grad")
    p.add_argument("--impls", nargs="+", default=IMPLS, choices=ALL_IMPLS)
    p.add_argument("--official-dir", default=os.environ.get("VRT_OFFICIAL_DIR"),
                   help="directory holding upstream network_vrt.py (default: $VRT_OFFICIAL_DIR)")
    p.add_argument("--worker", choices=[*ALL_IMPLS, *(f"{i}{COMPILED}" for i in ALL_IMPLS)], help=argparse.SUPPRESS)
    p.add_argument("--measure", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if "official" in args.impls + [_impl(args.worker or "")] and not args.official_dir:
        p.error("--impls official needs --official-dir or VRT_OFFICIAL_DIR (a directory holding upstream network_vrt.py)")
    if args.compile and args.warmup < 1:
        p.error("--compile needs --warmup >= 1: the first step compiles and must not be timed")
    return args


def _impl(worker: str) -> str:
    """The attention implementation of a worker variant (``"sdpa+compile"`` -> ``"sdpa"``)."""
    return worker.removesuffix(COMPILED)


def load_official_vrt(directory: str) -> ModuleType:
    """Import upstream ``network_vrt.py`` from ``directory`` (read as is, never copied here)."""
    path = Path(directory) / "network_vrt.py"
    if not path.is_file():
        raise FileNotFoundError(f"official VRT: expected upstream models/network_vrt.py at {path}, no such file")
    spec = importlib.util.spec_from_file_location("official_network_vrt", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """The (uncompiled) model of ``args.worker``: ours with that attention, or upstream's with our weights."""
    from vrt_spike.models.vrt import VRT

    torch.manual_seed(0)
    checkpointing = dict(use_checkpoint_attn=args.checkpoint, use_checkpoint_ffn=args.checkpoint)
    impl = _impl(args.worker)
    if impl != "official":
        return VRT(**CONFIGS[args.config], attn_impl=impl, **checkpointing)
    weights = VRT(**CONFIGS[args.config]).state_dict()  # same seed: the weights sdpa/explicit get
    model = load_official_vrt(args.official_dir).VRT(**CONFIGS[args.config], **checkpointing)
    model.load_state_dict(weights, strict=True)
    return model


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops one step dispatches below autograd (``ops``: host-side dispatch work),
    the ones among them that compute (``kernels``: all but views such as ``view``, ``transpose``,
    ``detach``, which only make metadata; on a GPU each is at least one kernel launch), and which
    attention kernels ran: the fused SDPA kernels by name, and ``softmax`` for every unfused
    attention (the explicit path's ``_softmax`` and SDPA's math fallback, which decomposes into
    matmuls + ``_safe_softmax``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = self.kernels = self.fused = self.softmax = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        self.ops += 1
        self.kernels += not (func.is_view or name == "aten::_unsafe_view")  # _unsafe_view: a view by contract
        if "_scaled_dot_product" in name and not name.endswith("_backward"):
            self.fused += 1
        elif name in ("aten::_softmax", "aten::_safe_softmax"):
            self.softmax += 1
        return func(*args, **(kwargs or {}))


CPU_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "8192"}  # the setting PeakMemory's CPU figure needs


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    model = build_model(args).to(device).train(args.mode == "train")
    compiled = args.worker.endswith(COMPILED)
    forward = torch.compile(model) if compiled else model
    x = torch.rand(args.batch, args.frames, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    dtype = DTYPES[args.dtype]

    def step() -> None:
        if args.mode == "infer":
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                forward(x)
            return
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = (forward(x) - x).abs().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    first_s = None  # the first step's time: for a compiled variant, mostly compilation
    for _ in range(args.warmup):
        t0 = now_s()
        step()
        synchronize(device)
        first_s = now_s() - t0 if first_s is None else first_s
    memory = PeakMemory(device)
    if device.type == "cpu" and args.measure == "memory":  # a worker of its own, started with CPU_MEMORY_ENV
        memory.reset()
        step()
        return {"impl": args.worker, "peak_mib": memory.rise() / 2**20}
    memory.reset()
    times = [ms / 1e3 for ms in time_callable(step, warmup=0, iters=args.steps, device=device)]
    if device.type == "cuda":
        peak = memory.rise() / 2**20  # the timed steps give the peak too
        mem_kind = "CUDA allocator peak above the pre-step allocation"
    else:
        peak = None  # measured by the memory worker
        mem_kind = ("rise of the resident-set high-water mark over one step in a separate worker whose allocations "
                    ">= 8 KiB are mmapped")
    counts = {"ops": None, "kernels": None, "fused_attn": None, "softmax": None}  # compiled: no aten dispatches
    if not compiled:
        counter = _OpCounter()
        with counter:  # one more step, untimed: the mode's Python hook would distort the timing
            step()
        synchronize(device)
        counts = {"ops": counter.ops, "kernels": counter.kernels, "fused_attn": counter.fused, "softmax": counter.softmax}
    return {"impl": args.worker, "median_s": statistics.median(times), "times_s": times, "first_s": first_s,
            "peak_mib": peak,
            "memory": mem_kind, **counts}


def _run_worker(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {' '.join(argv)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    variants = [v for impl in args.impls for v in ([impl, impl + COMPILED] if args.compile else [impl])]
    results = {}
    for variant in variants:
        results[variant] = _run_worker([*forwarded, "--worker", variant])
        if args.device == "cpu":
            memory = _run_worker([*forwarded, "--worker", variant, "--measure", "memory"], CPU_MEMORY_ENV)
            results[variant]["peak_mib"] = memory["peak_mib"]
    shape = (args.batch, args.frames, 3, args.size, args.size)
    print(f"VRT config={args.config} mode={args.mode} input={shape} device={args.device} dtype={args.dtype} "
          f"checkpoint={args.checkpoint} steps={args.steps} (warmup {args.warmup})")
    print(f"memory: {next(iter(results.values()))['memory']}")
    what = "fwd+bwd" if args.mode == "train" else "forward"
    print("1st step: the first warmup step (compiles a compiled variant); ops: aten ops per step; "
          "kernels: those that are not views; fused: fused SDPA forward calls; softmax: unfused attentions")
    print(f"{'attention':<17} {what + ' median s':>17} {'1st step s':>10} {'peak MiB':>10} {'ops':>8} {'kernels':>8} "
          f"{'fused':>6} {'softmax':>8}")
    for variant, r in results.items():
        peak = f"{r['peak_mib']:.1f}"
        first = "-" if r["first_s"] is None else f"{r['first_s']:.1f}"
        ops, kernels, fused, softmax = ("-" if r[k] is None else r[k] for k in ("ops", "kernels", "fused_attn", "softmax"))
        print(f"{variant:<17} {r['median_s']:>17.3f} {first:>10} {peak:>10} {ops:>8} {kernels:>8} {fused:>6} {softmax:>8}")
    pairs = [("sdpa", "explicit"), ("sdpa", "official"), *((v + COMPILED, v) for v in args.impls)]
    for new, old in pairs:
        if {new, old} <= results.keys():
            n, o = results[new], results[old]
            print(f"{new} vs {old}: time x{o['median_s'] / n['median_s']:.2f} faster, "
                  f"memory x{o['peak_mib'] / max(n['peak_mib'], 1e-9):.2f} lower")


if __name__ == "__main__":
    main()
