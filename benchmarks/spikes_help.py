"""Do the spikes help? Train the tiny VRT+Spike and its RGB-only twin, hold both against the floors.

    PYTHONPATH=$PWD python benchmarks/spikes_help.py [--steps 1200] [--seeds 0 1 2] [--data DIR]
        [--set model.residual_base=blur model.spike_head=false]   # ablations of the spike variant
    PYTHONPATH=$PWD python benchmarks/spikes_help.py --diagnose 200 [--set ...]  # gradients per module

Trains ``conf/model/tiny.yaml`` (with ``conf/data/synthetic.yaml``'s spike settings) twice per
seed for the same steps on the same batches: VRT+Spike and ``use_spike=false`` (the VRT weights
start identical). Both are scored like ``evaluate.py``: the mean over every frame of the whole
test split, at full frames, next to the blurry input and the non-learned spike floor (S-SDM's
``blur * short / long`` rate ratio over the raw ``.dat`` stream, bilinearly upsampled;
:mod:`vrt_spike.models.classical`). Each seed trains its two variants at once in two
single-threaded worker processes (faster on 2 cores than one after the other). The data is the
default embedded synthetic dataset (built in a temp dir unless ``--data`` is given).
SpyNet (random init, no pretrained flow weights offline) stays frozen, as in the official
``fix_iter`` warm-up; VRT's last convolution starts at zero (``module.zero_init_output``), so at
step 0 the RGB-only model outputs the blurry input and VRT+Spike its residual base.

``--diagnose N`` trains the spike variant alone for N steps and prints, at steps 1, 2, 5, 10, 25,
50, 100, ..., the gradient norm of each module group and what reaches the output: the RMS of the
fusion's stage-1 update, of the spike head's output, and of ``out(spikes) - out(zero spikes)``.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.synthesize import MANIFEST, SynthConfig, synthesize
from vrt_spike.lit.module import TRAINING_KEYS
from vrt_spike.models.vrt_spike import VRTWithSpike

ROOT = Path(__file__).resolve().parents[1]
# The targets (#16), per seed.
FLOOR_MARGIN_DB = 0.5  # VRT+Spike >= spike floor + this
RGB_MARGIN_DB = 2.5  # VRT+Spike >= RGB-only + this


@dataclass(frozen=True)
class Setup:
    steps: int = 1200
    batch_size: int = 1
    clip_len: int = 2
    crop: int = 48
    lr: float = 1e-3
    seed: int = 0
    overrides: tuple[str, ...] = ()  # `model.key=value` (spike variant) / `data.key=value` (both)
    synth: SynthConfig = field(default_factory=SynthConfig)  # the default embedded data


def composed_config(setup: Setup, use_spike: bool) -> dict:
    """``conf/data/synthetic.yaml`` + ``conf/model/tiny.yaml`` (+ overrides), resolved."""
    data = OmegaConf.load(ROOT / "conf/data/synthetic.yaml")
    cfg = OmegaConf.merge({"paths": {"data_dir": str(ROOT / "data")}, "data": data},
                          OmegaConf.load(ROOT / "conf/model/tiny.yaml"))
    # data.* overrides reach both variants (same batches), model.* the spike variant only
    picked = [o for o in setup.overrides if o.startswith("data.") or (use_spike and o.startswith("model."))]
    if picked:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(picked))
    cfg.model.use_spike = use_spike
    return OmegaConf.to_container(cfg, resolve=True)


def load_split(root: Path, split: str, setup: Setup, floor: bool = False) -> dict[str, Tensor]:
    """Whole clips of one split as ``blur/sharp (N, F, 3, H, W)``, ``spike (N, F, K, H, W)``
    (plus ``spike_floor`` when asked). F comes from the dataset's manifest."""
    data = composed_config(setup, True)["data"]
    frames = int(json.loads((root / MANIFEST).read_text())["config"]["frames"])
    ds = SpikeDeblurDataset(root, split, clip_len=frames, crop_size=None, num_bins=data["num_bins"], stride=frames,
                            spike_upsample=data["spike_upsample"], spike_floor="sdm" if floor else None,
                            sharp_instant=data["sharp_instant"], sharp_width=data["sharp_width"])
    keys = ("blur", "sharp", "spike", "spike_floor") if floor else ("blur", "sharp", "spike")
    samples = [ds[i] for i in range(len(ds))]
    return {key: torch.stack([s[key] for s in samples]) for key in keys}


def build_tiny(setup: Setup, use_spike: bool) -> VRTWithSpike:
    kwargs = composed_config(setup, use_spike)["model"]
    for key in TRAINING_KEYS:
        kwargs.pop(key)
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
    """Non-overlapping ``clip_len`` windows covering every frame of every clip, full frames."""
    f = data["blur"].shape[1]
    if f % setup.clip_len:
        raise ValueError(f"clips of {f} frames do not split into windows of clip_len={setup.clip_len}")
    return [{key: v[i : i + 1, t : t + setup.clip_len] for key, v in data.items()}
            for i in range(len(data["blur"])) for t in range(0, f, setup.clip_len)]


def frame_psnrs(pred: Tensor, target: Tensor) -> list[float]:
    """``(B, T, 3, H, W)`` -> one PSNR per frame (as evaluate.py averages them)."""
    mse = (pred.clamp(0, 1) - target).square().mean(dim=(2, 3, 4)).flatten()
    return [10 * math.log10(1.0 / max(float(m), 1e-12)) for m in mse]


@torch.no_grad()
def evaluate(net: VRTWithSpike | None, windows: list[dict[str, Tensor]], key: str = "blur") -> float:
    """Mean per-frame PSNR over every window; ``net=None`` scores ``window[key]`` itself."""
    scores = []
    for win in windows:
        pred = win[key] if net is None else net(win["blur"], win["spike"])
        scores += frame_psnrs(pred, win["sharp"])
    return sum(scores) / len(scores)


def _loss(pred: Tensor, sharp: Tensor) -> Tensor:
    return torch.sqrt((pred - sharp).square() + 1e-6).mean()  # Charbonnier


def _optimizer(net: VRTWithSpike, setup: Setup) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=setup.lr, betas=(0.9, 0.99))
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, setup.steps), eta_min=setup.lr / 10)


def train(net: VRTWithSpike, data: dict[str, Tensor], setup: Setup, log_every: int = 0) -> None:
    opt, sched = _optimizer(net, setup)
    gen = torch.Generator().manual_seed(setup.seed)  # the same batches for both runs
    net.train()
    for step in range(1, setup.steps + 1):
        batch = sample_batch(data, setup, gen)
        loss = _loss(net(batch["blur"], batch["spike"]), batch["sharp"])
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

    Returns ``blur_psnr``, ``floor_psnr``, ``spike_psnr`` and/or ``rgb_only_psnr`` (dB) and ``seconds``.
    """
    start = time.perf_counter()
    with dataset_root(setup, data_root) as root:
        train_data = load_split(root, "train", setup)
        windows = val_windows(load_split(root, "test", setup, floor=True), setup)
    result = {"blur_psnr": evaluate(None, windows), "floor_psnr": evaluate(None, windows, "spike_floor")}
    for name, use_spike in (VARIANTS[v] for v in variants):
        net = build_tiny(setup, use_spike)
        train(net, train_data, setup, log_every)
        result[name] = evaluate(net, windows)
        if log_every:
            print(f"{name}: {result[name]:.2f} dB (blurry input {result['blur_psnr']:.2f}, "
                  f"spike floor {result['floor_psnr']:.2f} dB)", flush=True)
    result["seconds"] = time.perf_counter() - start
    return result


def _setup_args(setup: Setup) -> list[str]:
    return ["--steps", str(setup.steps), "--seeds", str(setup.seed), "--batch-size", str(setup.batch_size),
            "--lr", str(setup.lr), "--clip-len", str(setup.clip_len), "--crop", str(setup.crop),
            *(["--set", *setup.overrides] if setup.overrides else [])]


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
    ``spike_psnr - rgb_only_psnr``), ``mean_over_floor_db`` and ``seconds``.
    """
    if not seeds:
        raise ValueError("spikes_help: --seeds needs at least one seed")
    start = time.perf_counter()
    with dataset_root(setup, data_root) as root:
        per_seed = {seed: run_parallel(replace(setup, seed=seed), root) for seed in seeds}
    gains = [r["spike_psnr"] - r["rgb_only_psnr"] for r in per_seed.values()]
    over_floor = [r["spike_psnr"] - r["floor_psnr"] for r in per_seed.values()]
    return {"per_seed": per_seed, "mean_gain_db": sum(gains) / len(gains),
            "mean_over_floor_db": sum(over_floor) / len(over_floor), "seconds": time.perf_counter() - start}


def target_failures(s: dict[str, float]) -> list[str]:
    """The issue's per-seed targets that one seed's result misses (empty: all met)."""
    misses = []
    if not s["spike_psnr"] >= s["floor_psnr"] + FLOOR_MARGIN_DB:
        misses.append(f"VRT+Spike {s['spike_psnr']:.2f} < spike floor {s['floor_psnr']:.2f} + {FLOOR_MARGIN_DB}")
    if not s["spike_psnr"] >= s["rgb_only_psnr"] + RGB_MARGIN_DB:
        misses.append(f"VRT+Spike {s['spike_psnr']:.2f} < RGB-only {s['rgb_only_psnr']:.2f} + {RGB_MARGIN_DB}")
    if not s["rgb_only_psnr"] > s["blur_psnr"]:
        misses.append(f"RGB-only {s['rgb_only_psnr']:.2f} <= blurry input {s['blur_psnr']:.2f}")
    return misses


# ---------------------------------------------------------------------------------------- diagnose

GROUPS = ("spike_encoder", "spike_tsa", "fusion", "spike_head", "vrt.conv_last", "vrt (rest)")


def _group(name: str) -> str:
    for g in GROUPS[:5]:
        if name.startswith(g + "."):
            return g
    return "vrt (rest)"


def diagnose(setup: Setup, data_root: Path | None, every: Sequence[int]) -> list[dict[str, float]]:
    """Train the spike variant for ``setup.steps``; at the steps in ``every``, per-group gradient
    norms and the RMS of what the spike path adds (see the module doc). Returns one row per step."""
    with dataset_root(setup, data_root) as root:
        train_data = load_split(root, "train", setup)
    net = build_tiny(setup, True)
    opt, sched = _optimizer(net, setup)
    gen = torch.Generator().manual_seed(setup.seed)
    probe = sample_batch(train_data, setup, torch.Generator().manual_seed(12345))
    updates: dict[str, Tensor] = {}
    stage1 = getattr(net.fusion, "stage1", None)
    if stage1 is not None:
        stage1.out_proj.register_forward_hook(lambda m, a, out: updates.__setitem__("fusion.stage1", out.detach()))
    if net.spike_head is not None:
        net.spike_head.register_forward_hook(lambda m, a, out: updates.__setitem__("spike_head", out.detach()))
    rows = []
    for step in range(1, setup.steps + 1):
        net.train()
        batch = sample_batch(train_data, setup, gen)
        loss = _loss(net(batch["blur"], batch["spike"]), batch["sharp"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step in every:
            sq = dict.fromkeys(GROUPS, 0.0)
            for name, p in net.named_parameters():
                if p.grad is not None:
                    sq[_group(name)] += float(p.grad.square().sum())
            net.eval()
            with torch.no_grad():
                updates.clear()
                out = net(probe["blur"], probe["spike"])
                seen = {k: float(v.square().mean().sqrt()) for k, v in updates.items()}
                no_spikes = net(probe["blur"], torch.zeros_like(probe["spike"]))
            rows.append({"step": step, "loss": float(loss.detach()), **{f"grad {g}": math.sqrt(v) for g, v in sq.items()},
                         **{f"rms {k}": v for k, v in seen.items()},
                         "rms out(spikes)-out(0)": float((out - no_spikes).square().mean().sqrt())})
            print("  ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                  flush=True)
        opt.step()
        sched.step()
    return rows


def _diagnose_steps(n: int) -> list[int]:
    steps, k = [1, 2, 5, 10, 25, 50], 100
    while k <= n:
        steps.append(k)
        k += 100 if k < 400 else 200
    return [s for s in steps if s <= n]


# ---------------------------------------------------------------------------------------- CLI

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="model-init and batch seeds: one comparison per seed, and the means")
    parser.add_argument("--batch-size", type=int, default=Setup.batch_size)
    parser.add_argument("--lr", type=float, default=Setup.lr)
    parser.add_argument("--clip-len", type=int, default=Setup.clip_len)
    parser.add_argument("--crop", type=int, default=Setup.crop)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="model.* overrides of the spike variant (e.g. model.residual_base=blur), data.* of both")
    parser.add_argument("--data", type=Path, default=None, help="existing synthetic dataset (default: build one in tmp)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads with --only / --diagnose")
    parser.add_argument("--only", choices=sorted(VARIANTS), default=None, help="train one variant (a worker)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--diagnose", type=int, default=0, metavar="N", help="gradient norms over N steps, no scoring")
    args = parser.parse_args()
    bad = [o for o in args.set if not o.startswith(("model.", "data.")) or "=" not in o]
    if bad:
        parser.error(f"--set takes model.KEY=VALUE / data.KEY=VALUE overrides, got {bad}")
    setup = Setup(steps=args.diagnose or args.steps, seed=args.seeds[0], batch_size=args.batch_size,
                  clip_len=args.clip_len, lr=args.lr, crop=args.crop, overrides=tuple(args.set))
    if args.diagnose:
        torch.set_num_threads(args.threads)
        diagnose(setup, args.data, _diagnose_steps(args.diagnose))
        return
    if args.only:
        if len(args.seeds) > 1:
            parser.error("--only runs one seed")
        torch.set_num_threads(args.threads)
        r = run(setup, args.data, log_every=0 if args.json else 100, variants=(args.only,))
        print(json.dumps(r) if args.json else r)
        return
    print_seeds(run_seeds(setup, tuple(args.seeds), args.data), setup)


def print_seeds(r: dict[str, object], setup: Setup) -> None:
    print(f"setup (seed varies): {replace(setup, seed=-1)}")
    print(f"{'seed':>4} {'blurry dB':>10} {'floor dB':>9} {'rgb-only dB':>12} {'spike dB':>9} "
          f"{'vs floor':>9} {'vs rgb':>7}  targets")
    for seed, s in r["per_seed"].items():
        misses = target_failures(s)
        print(f"{seed:>4} {s['blur_psnr']:>10.2f} {s['floor_psnr']:>9.2f} {s['rgb_only_psnr']:>12.2f} "
              f"{s['spike_psnr']:>9.2f} {s['spike_psnr'] - s['floor_psnr']:>+9.2f} "
              f"{s['spike_psnr'] - s['rgb_only_psnr']:>+7.2f}  {'met' if not misses else '; '.join(misses)}")
    print(f"mean: {r['mean_over_floor_db']:+.2f} dB over the spike floor, {r['mean_gain_db']:+.2f} dB over RGB-only; "
          f"wall time {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
