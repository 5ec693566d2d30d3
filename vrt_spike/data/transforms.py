"""Paired geometry for blur, sharp and spike clips.

Spikes may be coarser than RGB (the GoPro-spike set stores them at half resolution). Crops are
chosen on the RGB grid with origin and size divisible by the integer scale factor ``s``, so the
spike box ``rgb_box / s`` covers exactly the same scene area; the spike crop is then upsampled by
``s`` onto the RGB crop. With ``nearest`` upsampling, crop-then-upsample equals
upsample-then-crop exactly; ``bilinear`` differs from a full-frame upsample only in the half spike
pixel along the crop border (edges are clamped, not read from outside the box).

Everything works on numpy arrays ``(T, C, H, W)``: flips and rotations are views, and numpy never
spins up intra-op threads (small torch ops in a busy main process cost ~100x more). Random
parameters come from torch's RNG, which DataLoader seeds per worker. Time reversal reverses the
frame order *and* the spike channels, which are time bins inside each exposure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Box", "spike_scale", "random_crop_box", "center_crop_box", "full_box", "upsample_spike", "AugmentParams", "PairedAugment"]

UPSAMPLE_MODES = ("nearest", "bilinear")


@dataclass(frozen=True)
class Box:
    """A crop ``(y0, x0, h, w)`` on the RGB grid and the same area on the spike grid."""

    rgb: tuple[int, int, int, int]
    spike: tuple[int, int, int, int]


def spike_scale(rgb_size: tuple[int, int], spike_size: tuple[int, int], where: str) -> int:
    """Integer factor ``s`` with ``rgb = s * spike`` in both axes; error otherwise."""
    (h, w), (sh, sw) = rgb_size, spike_size
    if h % sh or w % sw or h // sh != w // sw:
        raise ValueError(
            f"{where}: RGB size {h}×{w} must be the same integer multiple of the spike size {sh}×{sw} "
            f"in both axes to crop consistently (got factors {h / sh:g} and {w / sw:g})"
        )
    return h // sh


def _check_crop(crop: int, rgb_size: tuple[int, int], scale: int, where: str) -> None:
    h, w = rgb_size
    if crop > h or crop > w:
        raise ValueError(f"{where}: crop_size {crop} is larger than the frame: expected <= {h}×{w}, got {crop}")
    if crop <= 0 or crop % scale:
        raise ValueError(f"{where}: crop_size must be a positive multiple of the RGB/spike scale {scale}, got {crop}")


def random_crop_box(rgb_size: tuple[int, int], spike_size: tuple[int, int], crop: int, where: str) -> Box:
    """A uniformly random ``crop x crop`` box whose origin is a multiple of the spike scale."""
    scale = spike_scale(rgb_size, spike_size, where)
    _check_crop(crop, rgb_size, scale, where)
    h, w = rgb_size
    ys = int(torch.randint((h - crop) // scale + 1, ()).item())
    xs = int(torch.randint((w - crop) // scale + 1, ()).item())
    c = crop // scale
    return Box((ys * scale, xs * scale, crop, crop), (ys, xs, c, c))


def center_crop_box(rgb_size: tuple[int, int], spike_size: tuple[int, int], crop: int, where: str) -> Box:
    scale = spike_scale(rgb_size, spike_size, where)
    _check_crop(crop, rgb_size, scale, where)
    ys, xs = ((rgb_size[0] - crop) // 2) // scale, ((rgb_size[1] - crop) // 2) // scale
    c = crop // scale
    return Box((ys * scale, xs * scale, crop, crop), (ys, xs, c, c))


def full_box(rgb_size: tuple[int, int], spike_size: tuple[int, int]) -> Box:
    """Whole frames; any size ratio (the spike grid is resized to the RGB size)."""
    return Box((0, 0, *rgb_size), (0, 0, *spike_size))


def upsample_spike(spike: np.ndarray, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """``(T, K, h, w)`` float32 -> ``(T, K, H, W)`` on the RGB grid.

    ``nearest`` picks spike pixel ``floor((i + 0.5) * h / H)`` (a pure repeat for integer scales);
    ``bilinear`` is torch's ``align_corners=False`` interpolation.
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"spike_upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")
    (h, w), (oh, ow) = spike.shape[-2:], size
    if (h, w) == (oh, ow):
        return spike
    if mode == "nearest":
        if oh % h == 0 and ow % w == 0:  # integer factors: one broadcast write, contiguous output
            lead = spike.shape[:-2]
            out = np.empty((*lead, h, oh // h, w, ow // w), spike.dtype)
            out[...] = spike[..., :, None, :, None]
            return out.reshape(*lead, oh, ow)
        rows = ((np.arange(oh) + 0.5) * h / oh).astype(np.intp)
        cols = ((np.arange(ow) + 0.5) * w / ow).astype(np.intp)
        return np.ascontiguousarray(spike[..., rows[:, None], cols])
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(spike)), size=size, mode="bilinear", align_corners=False)
    return out.clamp_(0, 1).numpy()


@dataclass(frozen=True)
class AugmentParams:
    hflip: bool = False
    vflip: bool = False
    rot90: int = 0
    time_reverse: bool = False


class PairedAugment:
    """Random flips, 90° rotations and time reversal applied identically to every clip."""

    def __init__(self, hflip: bool = True, vflip: bool = True, rot90: bool = True, time_reverse: bool = False) -> None:
        self.hflip, self.vflip, self.rot90, self.time_reverse = hflip, vflip, rot90, time_reverse

    def sample(self, square: bool) -> AugmentParams:
        """Draw parameters; rotations by 90°/270° only for square crops (shapes must not change)."""
        draws = torch.randint(2, (3,)).tolist()
        rot = int(torch.randint(4, ()).item()) if self.rot90 else 0
        if not square:
            rot -= rot % 2
        return AugmentParams(
            hflip=self.hflip and bool(draws[0]),
            vflip=self.vflip and bool(draws[1]),
            rot90=rot,
            time_reverse=self.time_reverse and bool(draws[2]),
        )

    @staticmethod
    def apply(params: AugmentParams, blur: np.ndarray, sharp: np.ndarray, spike: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``params`` to ``(T, C, H, W)`` clips (returns views); spike channels are time bins."""
        clips = [blur, sharp, spike]
        if params.hflip:
            clips = [c[..., ::-1] for c in clips]
        if params.vflip:
            clips = [c[..., ::-1, :] for c in clips]
        if params.rot90:
            clips = [np.rot90(c, params.rot90, axes=(-2, -1)) for c in clips]
        if params.time_reverse:
            clips = [c[::-1] for c in clips]
            clips[2] = clips[2][:, ::-1]
        return clips[0], clips[1], clips[2]
