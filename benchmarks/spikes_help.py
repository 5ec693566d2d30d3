"""Do the spikes help? Train the tiny VRTWithSpike with and without spikes on the same data.

    PYTHONPATH=$PWD python benchmarks/spikes_help.py [--steps 600] [--seeds 0 1 2] [--jobs 2] [--data DIR]

Builds a small embedded synthetic dataset (``vrt_spike.data.synthesize``) in a temp dir unless
``--data`` is given, trains ``conf/model/tiny.yaml`` twice for the same number of steps on the
same batches (use_spike=true / false; the VRT weights start identical), and prints the validation
PSNR of both and of the blurry input. Plain torch loop; both runs see identical batches. With
``--jobs 2`` (default) the two variants train at once in two single-threaded worker processes,
which on 2 cores is faster than one after the other with two threads each. ``--seeds`` repeats
the comparison per seed (model init and batches) and prints the mean gain: within 600 steps the
spike branch "takes off" at a seed-dependent step, so one seed's gain ranges from -0.01 to +0.83 dB.
SpyNet (random init, no pretrained flow weights offline) stays frozen, as in the official
``fix_iter`` warm-up, in both runs. VRT's last convolution starts at zero in both runs, so both
start from the identity (output = blurry input, like a pretrained backbone's small residual)
instead of spending the short budget on unlearning a random residual.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.synthesize import MANIFEST, SynthConfig, synthesize
from vrt_spike.models.vrt_spike import VRTWithSpike

ROOT = Path(__file__).resolve().parents[1]
TRAINING_KEYS = ("compile", "pretrained", "freeze_backbone_steps")


@dataclass(frozen=True)
class Setup:
    steps: int = 600
    batch_size: int = 1
    clip_len: int = 2
    crop: int = 48
    num_bins: int = 8
    lr: float = 2e-3
    seed: int = 0
    # The default physics (exposure, motion, spike rate) on smaller clips.
    synth: SynthConfig = SynthConfig(seed=0, train_clips=6, test_clips=2, frames=8, height=96, width=96)


def load_split(root: Path, split: str, setup: Setup) -> dict[str, Tensor]:
    """Whole clips of one split as ``blur/sharp (N, F, 3, H, W)``, ``spike (N, F, K, H, W)``.

    F comes from the dataset's manifest, so worker processes and ``--data`` need no synth flags.
    """
    frames = int(json.loads((root / MANIFEST).read_text())["config"]["frames"])
    ds = SpikeDeblurDataset(root, split, clip_len=frames, crop_size=None, num_bins=setup.num_bins, stride=frames)
    samples = [ds[i] for i in range(len(ds))]
    return {key: torch.stack([s[key] for s in samples]) for key in ("blur", "sharp", "spike")}


def build_tiny(setup: Setup, use_spike: bool) -> VRTWithSpike:
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf/model/tiny.yaml"), {"data": {"num_bins": setup.num_bins}})
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    for key in TRAINING_KEYS:
        kwargs.pop(key)
    kwargs["use_spike"] = use_spike
    torch.manual_seed(setup.seed)  # identical VRT init in both runs (VRT is built first)
    net = VRTWithSpike(**kwargs)
    net.vrt.spynet.requires_grad_(False)
    torch.nn.init.zeros_(net.vrt.conv_last.weight)
    torch.nn.init.zeros_(net.vrt.conv_last.bias)
    return net


def sample_batch(data: dict[str, Tensor], setup: Setup, gen: torch.Generator) -> dict[str, Tensor]:
    n, f, _, h, w = data["blur"].shape
    picks = []
    for _ in range(setup.batch_size):
        i = int(torch.randint(n, (1,), generator=gen))
        t = int(torch.randint(f - setup.clip_len + 1, (1,), generator=gen))
        y = int(torch.randint(h - setup.crop + 1, (1,), generator=gen))
        x = int(torch.randint(w - setup.crop + 1, (1,), generator=gen))
        picks.append((i, slice(t, t + setup.clip_len), slice(y, y + setup.crop), slice(x, x + setup.crop)))
    return {key: torch.stack([v[i, ts, :, ys, xs] for i, ts, ys, xs in picks]) for key, v in data.items()}


def val_windows(data: dict[str, Tensor], setup: Setup) -> list[dict[str, Tensor]]:
    """Non-overlapping ``clip_len`` windows of every validation clip, full frames."""
    f = data["blur"].shape[1]
    return [{key: v[i : i + 1, t : t + setup.clip_len] for key, v in data.items()}
            for i in range(len(data["blur"])) for t in range(0, f - setup.clip_len + 1, setup.clip_len)]


def psnr(pred: Tensor, target: Tensor) -> float:
    mse = (pred.clamp(0, 1) - target).square().mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate(net: VRTWithSpike | None, windows: list[dict[str, Tensor]]) -> float:
    """Mean PSNR over windows; ``net=None`` scores the blurry input."""
    scores = []
    for win in windows:
        pred = win["blur"] if net is None else net(win["blur"], win["spike"])
        scores.append(psnr(pred, win["sharp"]))
    return sum(scores) / len(scores)


def train(net: VRTWithSpike, data: dict[str, Tensor], setup: Setup, log_every: int = 0) -> None:
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=setup.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=setup.steps, eta_min=setup.lr / 10)
    gen = torch.Generator().manual_seed(setup.seed)  # the same batches for both runs
    net.train()
    for step in range(1, setup.steps + 1):
        batch = sample_batch(data, setup, gen)
        pred = net(batch["blur"], batch["spike"])
        loss = torch.sqrt((pred - batch["sharp"]).square() + 1e-6).mean()  # Charbonnier
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(f"  step {step}/{setup.steps} loss {loss.item():.4f}", flush=True)
    net.eval()


VARIANTS = {"spike": ("spike_psnr", True), "rgb": ("rgb_only_psnr", False)}


@contextmanager
def dataset_root(setup: Setup, data_root: Path | None) -> Iterator[Path]:
    """`data_root`, or a dataset built from ``setup.synth`` in a temp dir removed on exit."""
    if data_root is not None:
        yield Path(data_root)
        return
    with tempfile.TemporaryDirectory(prefix="spikes_help_") as tmp:
        root = Path(tmp) / "synthetic"
        synthesize(root, setup.synth)
        yield root


def run(setup: Setup = Setup(), data_root: Path | None = None, log_every: int = 0,
        variants: tuple[str, ...] = ("spike", "rgb")) -> dict[str, float]:
    """Train `variants` one after the other in this process.

    Returns ``blur_psnr``, ``spike_psnr`` and/or ``rgb_only_psnr`` (dB) and ``seconds``.
    """
    start = time.perf_counter()
    with dataset_root(setup, data_root) as root:
        train_data = load_split(root, "train", setup)
        windows = val_windows(load_split(root, "test", setup), setup)
    result = {"blur_psnr": evaluate(None, windows)}
    for name, use_spike in (VARIANTS[v] for v in variants):
        net = build_tiny(setup, use_spike)
        train(net, train_data, setup, log_every)
        result[name] = evaluate(net, windows)
        if log_every:
            print(f"{name}: {result[name]:.2f} dB (blurry input {result['blur_psnr']:.2f} dB)", flush=True)
    result["seconds"] = time.perf_counter() - start
    return result


def _setup_args(setup: Setup) -> list[str]:
    return ["--steps", str(setup.steps), "--seeds", str(setup.seed), "--batch-size", str(setup.batch_size),
            "--lr", str(setup.lr), "--clip-len", str(setup.clip_len), "--crop", str(setup.crop)]


def run_parallel(setup: Setup = Setup(), data_root: Path | None = None) -> dict[str, float]:
    """Both variants at once, each in a single-threaded worker process; same keys as :func:`run`."""
    start = time.perf_counter()
    with dataset_root(setup, data_root) as root:
        procs = {v: subprocess.Popen(
            [sys.executable, __file__, *_setup_args(setup), "--data", str(root), "--only", v, "--threads", "1",
             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in VARIANTS}
        outputs = {v: p.communicate() for v, p in procs.items()}
    result: dict[str, float] = {}
    for v, p in procs.items():
        out, err = outputs[v]
        if p.returncode != 0:
            raise RuntimeError(f"spikes_help worker '{v}' failed (exit {p.returncode}):\n{err}")
        result.update(json.loads(out.strip().splitlines()[-1]))
    result["seconds"] = time.perf_counter() - start
    return result


def run_seeds(setup: Setup = Setup(), seeds: tuple[int, ...] = (0, 1, 2),
              data_root: Path | None = None) -> dict[str, object]:
    """:func:`run_parallel` once per seed on one dataset.

    Returns ``per_seed`` (seed -> :func:`run_parallel`'s result), ``mean_gain_db`` (mean of
    ``spike_psnr - rgb_only_psnr``) and ``seconds``.
    """
    if not seeds:
        raise ValueError("spikes_help: --seeds needs at least one seed")
    start = time.perf_counter()
    with dataset_root(setup, data_root) as root:
        per_seed = {seed: run_parallel(replace(setup, seed=seed), root) for seed in seeds}
    gains = [r["spike_psnr"] - r["rgb_only_psnr"] for r in per_seed.values()]
    return {"per_seed": per_seed, "mean_gain_db": sum(gains) / len(gains), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=[Setup.seed],
                        help="model-init and batch seeds; with several, one comparison per seed and the mean gain")
    parser.add_argument("--batch-size", type=int, default=Setup.batch_size)
    parser.add_argument("--lr", type=float, default=Setup.lr)
    parser.add_argument("--clip-len", type=int, default=Setup.clip_len)
    parser.add_argument("--crop", type=int, default=Setup.crop)
    parser.add_argument("--data", type=Path, default=None, help="existing synthetic dataset (default: build one in tmp)")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2,
                        help="2: both variants at once in single-threaded workers; 1: one after the other")
    parser.add_argument("--threads", type=int, default=2, help="torch threads with --jobs 1 / --only")
    parser.add_argument("--only", choices=sorted(VARIANTS), default=None, help="train one variant")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args()
    if len(args.seeds) > 1 and (args.only or args.jobs == 1 or args.json):
        parser.error("several --seeds run with --jobs 2 only, without --only and --json")
    setup = Setup(steps=args.steps, seed=args.seeds[0], batch_size=args.batch_size, clip_len=args.clip_len,
                  lr=args.lr, crop=args.crop)
    if len(args.seeds) > 1:
        _print_seeds(run_seeds(setup, tuple(args.seeds), args.data), setup)
        return
    if args.only or args.jobs == 1:
        torch.set_num_threads(args.threads)
        variants = (args.only,) if args.only else tuple(VARIANTS)
        r = run(setup, args.data, log_every=0 if args.json else 50, variants=variants)
    else:
        r = run_parallel(setup, args.data)
    if args.json:
        print(json.dumps(r))
        return
    print(f"setup: {setup}")
    print(f"blurry input          PSNR {r['blur_psnr']:.2f} dB")
    if "rgb_only_psnr" in r:
        print(f"tiny, use_spike=false PSNR {r['rgb_only_psnr']:.2f} dB")
    if "spike_psnr" in r:
        print(f"tiny, use_spike=true  PSNR {r['spike_psnr']:.2f} dB")
    if "spike_psnr" in r and "rgb_only_psnr" in r:
        print(f"spike gain {r['spike_psnr'] - r['rgb_only_psnr']:+.2f} dB")
    print(f"wall time {r['seconds']:.0f} s")


def _print_seeds(r: dict[str, object], setup: Setup) -> None:
    print(f"setup (seed varies): {replace(setup, seed=-1)}")
    print(f"{'seed':>4} {'blurry dB':>10} {'rgb-only dB':>12} {'spike dB':>9} {'spike gain dB':>14}")
    for seed, s in r["per_seed"].items():
        print(f"{seed:>4} {s['blur_psnr']:>10.2f} {s['rgb_only_psnr']:>12.2f} {s['spike_psnr']:>9.2f} "
              f"{s['spike_psnr'] - s['rgb_only_psnr']:>+14.2f}")
    print(f"mean spike gain {r['mean_gain_db']:+.2f} dB; wall time {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
