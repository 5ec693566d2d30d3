"""Embedded synthetic GoPro-spike dataset, rendered procedurally and deterministically.

Each clip is a high-frame-rate scene: a textured background seen by a moving camera plus textured
objects that move and rotate along smooth paths. Every RGB frame integrates ``sub_frames``
consecutive sub-frames: blur = their mean, sharp = the middle one. Three splits of their own
scenes: ``train``, ``val`` (model selection) and ``test`` (the reported figure). Spikes come from
integrate-and-fire over the same sub-frames at ``1 / spike_scale`` of the RGB resolution
(``spike_steps`` steps per sub-frame, charge carried across frames), one ``.dat`` per RGB frame.

    python -m vrt_spike.data.synthesize --out data/synthetic [--seed 0] [--if-missing]

The dataset is built in a sibling temp directory and renamed into place after its manifest is
written, so ``--out`` only ever holds a complete dataset; a build interrupted midway is rebuilt.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from vrt_spike.atomic import write_text_atomically
from vrt_spike.data import layout
from vrt_spike.data.simulate import blur_and_sharp, downsample_area, integrate_and_fire, luminance
from vrt_spike.data.spike_io import write_dat
from vrt_spike.timing.clock import now_s

__all__ = ["SynthConfig", "Scene", "MANIFEST", "SPLITS", "synthesize", "is_complete", "main"]

MANIFEST = "manifest.json"
_FORMAT = "vrt-spike-synthetic/3"  # /2: luminance-dominant textures; /3: a val split of its own scenes
_CLIP_PREFIX = "synth_"
# The splits in the order of their scene seeds (a split's index is part of each clip's seed).
SPLITS = ("train", "test", "val")


@dataclass(frozen=True)
class SynthConfig:
    """Size and physics of the synthetic dataset (defaults: a CPU demo in seconds)."""

    seed: int = 0
    train_clips: int = 6
    val_clips: int = 2  # model selection (checkpoints, early stopping) reads these, never the test clips
    test_clips: int = 2
    frames: int = 16
    height: int = 128
    width: int = 128
    sub_frames: int = 8
    spike_steps: int = 32  # spike frames per sub-frame; a 20 kHz spike camera vs 240 fps sub-frames is ~80
    spike_scale: int = 2
    threshold: float = 2.0
    gain: float = 1.0
    noise_std: float = 0.02
    objects: int = 3
    object_speed: float = 8.0
    camera_speed: float = 4.0

    def __post_init__(self) -> None:
        for name in ("train_clips", "val_clips", "test_clips"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("frames", "height", "width", "sub_frames", "spike_steps", "spike_scale"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("height", "width"):
            size = getattr(self, name)
            if size % self.spike_scale:
                raise ValueError(f"{name}={size} must be divisible by spike_scale={self.spike_scale}")
        sh, sw = self.height // self.spike_scale, self.width // self.spike_scale
        if (sh * sw) % 8:
            raise ValueError(f"spike size {sh}×{sw} must have a multiple of 8 pixels (byte-aligned .dat frames)")

    @property
    def spike_size(self) -> tuple[int, int]:
        return self.height // self.spike_scale, self.width // self.spike_scale


# --------------------------------------------------------------------------- rendering


def _pixel_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    return xs, ys


def _smooth_noise(rng: np.random.Generator, size: int, channels: int, octaves: tuple[int, ...]) -> torch.Tensor:
    """``(channels, size, size)`` multi-octave noise in [0, 1] (finer octaves weaker, 1/f-like)."""
    out = torch.zeros(1, channels, size, size, dtype=torch.float32)
    for octave in octaves:
        coarse = torch.from_numpy(rng.standard_normal((1, channels, octave, octave)).astype(np.float32))
        out += F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False) * (8.0 / octave) ** 0.5
    out = out[0]
    lo = out.amin(dim=(1, 2), keepdim=True)
    hi = out.amax(dim=(1, 2), keepdim=True)
    return (out - lo) / (hi - lo)


def _pattern(rng: np.random.Generator, size: int) -> torch.Tensor:
    """``(1, size, size)`` sharp-edged two-level brightness pattern (stripes or checkerboard)."""
    xs, ys = _pixel_grid(size, size)
    b0, b1 = rng.uniform(0.05, 1.0, 2)
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(size / 16, size / 5)
        mask = torch.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period) > 0
    else:
        cell = int(rng.integers(max(2, size // 16), max(3, size // 5)))
        mask = ((xs // cell + ys // cell) % 2) == 0
    return torch.where(mask, float(b0), float(b1)).unsqueeze(0).float()


def _texture(rng: np.random.Generator, size: int) -> torch.Tensor:
    """``(3, size, size)``: brightness detail (edges + fine noise) tinted by a smooth colour field.

    Natural images keep most of their detail in luminance and vary slowly in colour; the monochrome
    spike camera sees only luminance, so colour edges it cannot see would make the spikes look
    less useful than they are on real footage.
    """
    mix = rng.uniform(0.3, 0.7)
    detail = mix * _smooth_noise(rng, size, 1, (4, 8, 16, 32)) + (1 - mix) * _pattern(rng, size)
    tint = 0.35 + 0.65 * _smooth_noise(rng, size, 3, (2, 4))
    return (detail * tint).clamp(0, 1)


def _shape_alpha(rng: np.random.Generator, size: int) -> torch.Tensor:
    """``(1, size, size)`` anti-aliased mask of an ellipse, rectangle or triangle in [-1, 1]^2."""
    xs, ys = _pixel_grid(size, size)
    u, v = xs / size * 2 - 1, ys / size * 2 - 1
    px = 2.0 / size  # one texel in normalised units
    kind = rng.integers(3)
    if kind == 0:
        a, b = rng.uniform(0.5, 0.95, 2)
        sdf = (torch.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * min(a, b)
    elif kind == 1:
        a, b = rng.uniform(0.4, 0.9, 2)
        sdf = torch.maximum(u.abs() - a, v.abs() - b)
    else:
        corners = np.exp(1j * (np.pi / 2 + rng.uniform(-0.3, 0.3) + 2 * np.pi * np.arange(3) / 3)) * 0.95
        sdf = torch.full_like(u, -np.inf)
        for k in range(3):
            p0, p1 = corners[k], corners[(k + 1) % 3]
            nx, ny = (p1 - p0).imag, -(p1 - p0).real
            norm = np.hypot(nx, ny)
            sdf = torch.maximum(sdf, ((u - p0.real) * nx + (v - p0.imag) * ny) / norm)
    return (0.5 - sdf / px).clamp(0, 1).unsqueeze(0).float()


def _sample(texture: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``texture (C, h, w)`` at normalised coords ``gx, gy (N, H, W)`` -> ``(N, C, H, W)``."""
    n, h, w = gx.shape
    grid = torch.stack((gx, gy), dim=-1).float().reshape(1, n * h, w, 2)
    out = F.grid_sample(texture[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(texture.shape[0], n, h, w).transpose(0, 1)


class Scene:
    """A procedural scene: textures and smooth paths drawn once, rendered at any sub-frame time.

    A textured background twice the frame size seen by a camera on a smooth path, and
    ``cfg.objects`` textured shapes on Lissajous paths inside the frame with constant spin,
    painted back to front. Times are in sub-frame units.
    """

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        h, w = self.height, self.width = cfg.height, cfg.width
        self.bg_size = 2 * max(h, w)
        self.background = _texture(rng, self.bg_size)
        amp = rng.uniform(0.1, 0.25, 2) * self.bg_size
        omega = cfg.camera_speed * rng.uniform(0.5, 1.0) / np.hypot(*amp)
        self.camera = (amp, omega, rng.uniform(0, 2 * np.pi, 2))
        self.objects = []
        for _ in range(cfg.objects):
            rgba = torch.cat((_texture(rng, 64), _shape_alpha(rng, 64)))
            radius = rng.uniform(0.1, 0.22) * min(h, w)
            centre = rng.uniform(0.3, 0.7, 2) * (w, h)
            amp = rng.uniform(0.15, 0.35, 2) * (w, h)
            speed = cfg.object_speed * rng.uniform(0.5, 1.0)
            freq = rng.uniform(0.6, 1.4, 2)
            omega = speed / np.hypot(*(amp * freq))
            phase = rng.uniform(0, 2 * np.pi, 2)
            angle0, spin = rng.uniform(0, 2 * np.pi), rng.uniform(-1, 1) * 0.02 * cfg.object_speed
            self.objects.append((rgba, radius, centre, amp, freq * omega, phase, angle0, spin))

    def render(self, t: torch.Tensor) -> np.ndarray:
        """Sub-frames at times ``t (N,)``: ``(N, 3, H, W)`` float32 in [0, 1]."""
        xs, ys = _pixel_grid(self.height, self.width)
        amp, omega, phase = self.camera
        cam_x = self.bg_size / 2 - self.width / 2 + amp[0] * torch.sin(omega * t + phase[0])
        cam_y = self.bg_size / 2 - self.height / 2 + amp[1] * torch.sin(omega * t + phase[1])
        bx = (xs[None] + cam_x[:, None, None]) / self.bg_size * 2 - 1
        by = (ys[None] + cam_y[:, None, None]) / self.bg_size * 2 - 1
        frames = _sample(self.background, bx, by)
        for rgba, radius, centre, amp, omega, phase, angle0, spin in self.objects:
            px = centre[0] + amp[0] * torch.sin(omega[0] * t + phase[0])
            py = centre[1] + amp[1] * torch.sin(omega[1] * t + phase[1])
            angle = angle0 + spin * t
            dx, dy = xs[None] - px[:, None, None], ys[None] - py[:, None, None]
            cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
            layer = _sample(rgba, (cos * dx + sin * dy) / radius, (-sin * dx + cos * dy) / radius)
            alpha = layer[:, 3:]
            frames = frames * (1 - alpha) + layer[:, :3] * alpha
        return frames.clamp(0, 1).numpy()


# --------------------------------------------------------------------------- writing


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8."""
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def _write_clip(root: Path, split: str, name: str, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """Render and write one clip frame by frame (memory stays at one exposure's sub-frames)."""
    scene = Scene(cfg, rng)
    sharp_dir = root / layout.sharp_dir(split, name)
    blur_dir = root / layout.blur_dir(split, name)
    spike_dir = root / layout.spike_dir(split, name)
    for d in (sharp_dir, blur_dir, spike_dir):
        d.mkdir(parents=True)
    charge = None  # integrate-and-fire state carried across exposures
    for i in range(cfg.frames):
        t = torch.arange(i * cfg.sub_frames, (i + 1) * cfg.sub_frames, dtype=torch.float32)
        sub = scene.render(t)
        blur, sharp = blur_and_sharp(sub)
        lum = downsample_area(luminance(sub), cfg.spike_scale)
        lum = np.repeat(lum, cfg.spike_steps, axis=0)  # each sub-frame drives `spike_steps` IF steps
        spikes, charge = integrate_and_fire(
            lum, threshold=cfg.threshold, gain=cfg.gain, noise_std=cfg.noise_std, rng=rng, charge=charge
        )
        stem = f"{i:06d}"
        # Fast zlib level: 4x quicker to write than the default, and quicker to decode.
        Image.fromarray(_to_uint8(blur)).save(blur_dir / f"{stem}.png", compress_level=1)
        Image.fromarray(_to_uint8(sharp)).save(sharp_dir / f"{stem}.png", compress_level=1)
        write_dat(spike_dir / f"{stem}.dat", spikes)


@contextmanager
def _single_thread_torch() -> Iterator[None]:
    """Per-frame render ops are small: intra-op threads cost more than they give, badly so on a
    busy machine (default build at load 10 on 2 cores: 23 s with one thread, 133 s with two)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _manifest(cfg: SynthConfig) -> dict:
    return {"format": _FORMAT, "config": dataclasses.asdict(cfg)}


def is_complete(out: str | os.PathLike, cfg: SynthConfig | None = None) -> bool:
    """True when ``out`` holds a finished synthetic dataset (built with ``cfg`` when given)."""
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != _FORMAT:
        return False
    return cfg is None or manifest.get("config") == dataclasses.asdict(cfg)


def _is_ours(out: Path) -> bool:
    """An existing ``out`` we may replace: empty, or only synthetic clips (never a real dataset)."""
    if is_complete(out):
        return True
    entries = {p.name for p in out.iterdir()}
    if not entries <= {layout.RGB_DIR, layout.SPIKE_DIR, MANIFEST}:
        return False
    clip_dirs = [p for p in out.glob("*/*/*") if p.is_dir()]
    return all(p.name.startswith(_CLIP_PREFIX) for p in clip_dirs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def synthesize(out: str | os.PathLike, cfg: SynthConfig = SynthConfig(), *, if_missing: bool = False) -> bool:
    """Build the dataset at ``out``. Returns False when ``if_missing`` and it already exists.

    Raises:
        FileExistsError: ``out`` exists and holds something other than a synthetic dataset.
    """
    out = Path(out).absolute()
    if if_missing and is_complete(out, cfg):
        return False
    if out.exists() and not _is_ours(out):
        raise FileExistsError(
            f"{out}: exists and is not a synthetic dataset (expected {MANIFEST} with format {_FORMAT!r}, "
            f"or only synthetic clips); refusing to replace it: remove it or choose another --out"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Remove builds of this host that were interrupted (their process is gone); builds from other
    # hosts sharing the filesystem are left alone.
    host = socket.gethostname()
    for stale in out.parent.glob(f".{out.name}.partial-{host}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)

    tmp = out.parent / f".{out.name}.partial-{host}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        spike_h, spike_w = cfg.spike_size
        (tmp / layout.SPIKE_DIR).mkdir()
        config = {"spike_h": spike_h, "spike_w": spike_w, "spike_frames_per_image": cfg.sub_frames * cfg.spike_steps}
        (tmp / layout.config_path("")).write_text(yaml.safe_dump(config, sort_keys=False))
        with _single_thread_torch():
            counts = {"train": cfg.train_clips, "test": cfg.test_clips, "val": cfg.val_clips}
            for split_index, split in enumerate(SPLITS):
                for k in range(counts[split]):
                    # A scene's seed is (seed, split, index): no split shares a scene with another,
                    # and adding the val split left the train and test scenes as they were.
                    rng = np.random.default_rng([cfg.seed, split_index, k])
                    _write_clip(tmp, split, f"{_CLIP_PREFIX}{split}_{k:03d}", cfg, rng)
        write_text_atomically(tmp / MANIFEST, json.dumps(_manifest(cfg), indent=2) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vrt_spike.data.synthesize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset root (GoPro-spike layout)")
    parser.add_argument("--if-missing", action="store_true", help="no-op when a complete dataset with these settings exists")
    defaults = SynthConfig()
    for field in dataclasses.fields(SynthConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name), help=f"(default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    cfg = SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthConfig)})
    start = now_s()
    built = synthesize(args.out, cfg, if_missing=args.if_missing)
    if built:
        print(f"wrote {args.out} ({cfg.train_clips} train + {cfg.val_clips} val + {cfg.test_clips} test clips of {cfg.frames} frames, "
              f"RGB {cfg.height}x{cfg.width}, spikes {cfg.spike_size[0]}x{cfg.spike_size[1]}) in {now_s() - start:.1f} s")
    else:
        print(f"{args.out} already complete; nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
