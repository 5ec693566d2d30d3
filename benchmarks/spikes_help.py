"""Do the spikes help? Train the tiny VRTWithSpike with and without spikes on the same data.

    PYTHONPATH=$PWD python benchmarks/spikes_help.py [--steps 100] [--only spike|rgb] [--seed 0] [--data DIR]

Builds a small embedded synthetic dataset (``vrt_spike.data.synthesize``) in a temp dir unless
``--data`` is given, trains ``conf/model/tiny.yaml`` twice for the same number of steps on the
same batches (use_spike=true / false; the VRT weights start identical), and prints the validation
PSNR of both and of the blurry input. Plain torch loop; both runs see identical batches.
SpyNet (random init, no pretrained flow weights offline) stays frozen, as in the official
``fix_iter`` warm-up, in both runs. VRT's last convolution starts at zero in both runs, so both
start from the identity (output = blurry input, like a pretrained backbone's small residual)
instead of spending the short budget on unlearning a random residual.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.synthesize import SynthConfig, synthesize
from vrt_spike.models.vrt_spike import VRTWithSpike

ROOT = Path(__file__).resolve().parents[1]
TRAINING_KEYS = ("compile", "pretrained", "freeze_backbone_steps")


@dataclass(frozen=True)
class Setup:
    steps: int = 100
    batch_size: int = 1
    clip_len: int = 2
    crop: int = 64
    num_bins: int = 8
    lr: float = 2e-3
    seed: int = 0
    # Faster motion than the demo dataset's defaults: blur that leaves room to improve.
    synth: SynthConfig = SynthConfig(seed=0, train_clips=6, test_clips=2, frames=8, height=96, width=96,
                                     object_speed=6.0, camera_speed=3.0)


def load_split(root: Path, split: str, setup: Setup) -> dict[str, Tensor]:
    """Whole clips of one split as ``blur/sharp (N, F, 3, H, W)``, ``spike (N, F, K, H, W)``."""
    ds = SpikeDeblurDataset(root, split, clip_len=setup.synth.frames, crop_size=None, num_bins=setup.num_bins,
                            stride=setup.synth.frames)
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
    """Non-overlapping ``clip_len`` windows of every validation clip, centre ``crop``."""
    n, f, _, h, w = data["blur"].shape
    y, x = (h - setup.crop) // 2, (w - setup.crop) // 2
    return [{key: v[i : i + 1, t : t + setup.clip_len, :, y : y + setup.crop, x : x + setup.crop] for key, v in data.items()}
            for i in range(n) for t in range(0, f - setup.clip_len + 1, setup.clip_len)]


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


def run(setup: Setup = Setup(), data_root: Path | None = None, log_every: int = 0,
        variants: tuple[str, ...] = ("spike", "rgb")) -> dict[str, float]:
    """Returns ``blur_psnr``, ``spike_psnr`` and/or ``rgb_only_psnr`` (dB) and ``seconds``."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spikes_help_") as tmp:
        root = Path(data_root) if data_root is not None else Path(tmp) / "synthetic"
        if data_root is None:
            synthesize(root, setup.synth)
        train_data, val_data = load_split(root, "train", setup), load_split(root, "test", setup)
    windows = val_windows(val_data, setup)
    result = {"blur_psnr": evaluate(None, windows)}
    for name, use_spike in (VARIANTS[v] for v in variants):
        net = build_tiny(setup, use_spike)
        train(net, train_data, setup, log_every)
        result[name] = evaluate(net, windows)
        if log_every:
            print(f"{name}: {result[name]:.2f} dB (blurry input {result['blur_psnr']:.2f} dB)", flush=True)
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--seed", type=int, default=Setup.seed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=Setup.batch_size)
    parser.add_argument("--lr", type=float, default=Setup.lr)
    parser.add_argument("--clip-len", type=int, default=Setup.clip_len)
    parser.add_argument("--only", choices=sorted(VARIANTS), default=None,
                        help="train one variant (run the two in parallel processes; same seed, same batches)")
    parser.add_argument("--data", type=Path, default=None, help="existing synthetic dataset (default: build one in tmp)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = Setup(steps=args.steps, seed=args.seed, batch_size=args.batch_size, clip_len=args.clip_len,
                  lr=args.lr)
    r = run(setup, args.data, log_every=5, variants=(args.only,) if args.only else ("spike", "rgb"))
    print(f"setup: {setup}")
    print(f"blurry input          PSNR {r['blur_psnr']:.2f} dB")
    if "rgb_only_psnr" in r:
        print(f"tiny, use_spike=false PSNR {r['rgb_only_psnr']:.2f} dB")
    if "spike_psnr" in r:
        print(f"tiny, use_spike=true  PSNR {r['spike_psnr']:.2f} dB")
    if "spike_psnr" in r and "rgb_only_psnr" in r:
        print(f"spike gain {r['spike_psnr'] - r['rgb_only_psnr']:+.2f} dB")
    print(f"wall time {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
