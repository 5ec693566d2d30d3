"""CPU deformable convolution: torchvision's kernel vs ours, per call, at VRT alignment shapes.

    python benchmarks/deform_conv.py [--pairs 4] [--channels 96] [--size 64] [--groups 16] [--threads 1 2]

One call of VRT's flow-guided alignment at stage 1 of the GoPro config is 4 frame pairs x 96
channels x 64 x 64 with 16 deformable groups (``Stage.align_pixels_per_call``). Prints the median
forward, backward and no-grad forward time of both implementations at each thread count (fp32), and
the relative L2 error of the output and of every gradient of both against torchvision in fp64
(`tests/vrt/test_vrt_deform_conv.py` asserts the agreement). A benchmark script, not part of the
package (it imports `vrt_spike`).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torchvision

from vrt_spike.models.vrt.deform_conv import modulated_deform_conv2d
from vrt_spike.timing.clock import Spread, time_callable

NAMES = ("x", "offset", "mask", "weight", "bias")


def _inputs(pairs: int, channels: int, size: int, groups: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(pairs, channels, size, size, generator=gen)
    offset = torch.randn(pairs, 2 * groups * 9, size, size, generator=gen) * 3  # flow-sized displacements
    mask = torch.rand(pairs, groups * 9, size, size, generator=gen)
    weight = torch.randn(channels, channels, 3, 3, generator=gen) / (3 * channels**0.5)
    bias = torch.randn(channels, generator=gen)
    return [t.requires_grad_() for t in (x, offset, mask, weight, bias)]


def _torchvision(x, offset, mask, weight, bias):
    return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call of ``fn`` (CPU)."""
    return Spread.of(time_callable(fn, warmup=0, iters=repeats, device=torch.device("cpu"))).median / 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    inputs = _inputs(args.pairs, args.channels, args.size, args.groups)
    grad = torch.randn(args.pairs, args.channels, args.size, args.size, generator=torch.Generator().manual_seed(1))

    # Accuracy against torchvision in float64. The offset gradient jumps where a sampling position
    # crosses an integer (bilinear weights have a kink there), and float32 rounding of the position
    # moves a few samples across: so a relative L2 error, not a max, and a count of those jumps
    # (elements off by more than 1 % of the mean |gradient|) with the error of all the others.
    wide = [t.detach().double().requires_grad_() for t in inputs]
    ref = _torchvision(*wide)
    refs = (ref, *torch.autograd.grad(ref, wide, grad.double()))
    print(f"input ({args.pairs}, {args.channels}, {args.size}, {args.size}), {args.groups} deformable groups, 3x3")
    print("float32 vs torchvision in float64, relative L2 error (||a - ref|| / ||ref||):")
    print(f"{'impl':12s} " + " ".join(f"{n:>8s}" for n in ("out", *NAMES)) + "   offset: jumps, L2 of the rest")
    for name, fn in (("torchvision", _torchvision), ("ours", modulated_deform_conv2d)):
        out = fn(*inputs)
        got = (out, *torch.autograd.grad(out, inputs, grad))
        errors = [((a.double() - r).norm() / r.norm()).item() for a, r in zip(got, refs)]
        off_err = (got[2].double() - refs[2]).abs()
        jumps = off_err > 1e-2 * refs[2].abs().mean()
        rest = (off_err * ~jumps).norm() / refs[2].norm()
        print(f"{name:12s} " + " ".join(f"{e:8.1e}" for e in errors) + f"   {int(jumps.sum())} of {jumps.numel()}, {rest:.1e}")
    print(f"{'impl':12s} {'threads':>7s} {'fwd s':>8s} {'bwd s':>8s} {'no-grad s':>10s}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, fn in (("torchvision", _torchvision), ("ours", modulated_deform_conv2d)):
            fn(*inputs).backward(grad)  # warm-up
            outputs: list[torch.Tensor] = []
            fwd = _time(lambda: outputs.append(fn(*inputs)), args.repeats)
            bwd = _time(lambda: outputs.pop().backward(grad), args.repeats)
            with torch.no_grad():
                infer = _time(lambda: fn(*inputs), args.repeats)
            print(f"{name:12s} {threads:7d} {fwd:8.3f} {bwd:8.3f} {infer:10.3f}")


if __name__ == "__main__":
    main()
