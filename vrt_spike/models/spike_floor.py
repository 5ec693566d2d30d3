"""Non-learned readings of a spike stream: the floor every learned model must beat.

A spike camera's firing rate is proportional to the light it sees, so the spikes fired around the
instant the ground truth shows already give a sharp image, up to noise and quantisation:

- :func:`tfp` (texture from playback): luminance ``= threshold / gain * rate`` over a short window
  at the sharp instant, with the blurry frame's chroma. Needs the camera's threshold and gain.
- :func:`sdm` (S-SDM's spike-guided deblurring model, arXiv 2403.09486): ``blur * rate(short) /
  rate(whole exposure)`` per pixel. The blurry frame is the exposure's mean, the rate ratio says
  how much brighter the sharp instant was than that mean: no camera constants needed.

Both take firing rates over consecutive, equal sub-windows of one exposure: the raw stream (one
"bin" per spike frame) or voxel bins (``K`` frames' worth each). The short window
``[center - width / 2, center + width / 2]`` (fractions of the exposure) is read with fractional
bin weights, so one function serves the raw stream and voxels alike. Rates are upsampled to the
RGB grid bilinearly: a blocky (nearest) upsampling costs the formula about 2 dB at a spike/RGB
scale of 2.

Where the ground truth sits: the embedded synthetic data shows sub-frame ``N // 2`` of ``N``
(``center = (N // 2 + 0.5) / N``, ``width = 1 / N``: 0.5625 and 0.125 for N = 8); GoPro shows the
exposure's middle frame (``center = 0.5``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FLOOR_METHODS", "FloorMethod", "window_weights", "short_and_long_rates", "sdm", "tfp", "spike_floor"]

FloorMethod = Literal["sdm", "tfp"]
FLOOR_METHODS: tuple[str, ...] = ("sdm", "tfp")

# BT.601 luma weights, as the synthetic spikes integrate (vrt_spike.data.simulate.luminance).
_LUMA = (0.299, 0.587, 0.114)
# A pixel that never fires in the whole exposure is dark at every instant: its ratio is 1.
_RATE_EPS = 1e-4


def window_weights(num_bins: int, center: float, width: float) -> Tensor:
    """``(K,)`` float32 weights summing to 1 (on the CPU): the share of each bin ``[k/K, (k+1)/K)``
    inside the window.

    The window ``[center - width/2, center + width/2]`` is clipped to the exposure ``[0, 1]``; a
    window narrower than a bin reads the bin(s) it overlaps. Pure arithmetic on the host: a model
    keeps the result as a buffer, so no forward creates a tensor from host values.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if not 0.0 <= center <= 1.0:
        raise ValueError(f"sharp instant center must be a fraction of the exposure in [0, 1], got {center}")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"short-window width must be a fraction of the exposure in (0, 1], got {width}")
    lo, hi = max(0.0, center - width / 2), min(1.0, center + width / 2)
    if hi <= lo:  # a zero-width window at the exposure's edge: the edge bin
        lo, hi = (max(0.0, hi - 1.0 / num_bins), hi) if center >= 0.5 else (lo, min(1.0, lo + 1.0 / num_bins))
    overlap = [max(0.0, min((k + 1) / num_bins, hi) - max(k / num_bins, lo)) for k in range(num_bins)]
    total = sum(overlap)
    return torch.tensor([o / total for o in overlap], dtype=torch.float32)


def short_and_long_rates(rates: Tensor, weights: Tensor, size: tuple[int, int] | None = None
                         ) -> tuple[Tensor, Tensor]:
    """``rates (..., K, h, w)`` in [0, 1] -> ``short, long (..., 1, H, W)``.

    ``short`` is the rate over the window that ``weights`` (``(K,)``, :func:`window_weights`, on
    ``rates``' device) selects, ``long`` over the whole exposure; both are bilinearly upsampled to
    ``size`` (default: unchanged).
    """
    if rates.ndim < 3:
        raise ValueError(f"spike rates must be (..., K, h, w), got shape {tuple(rates.shape)}")
    if weights.shape != (rates.shape[-3],):
        raise ValueError(f"window weights must be ({rates.shape[-3]},) for rates {tuple(rates.shape)}, "
                         f"got {tuple(weights.shape)}")
    rates = rates.float()
    short = torch.einsum("...khw,k->...hw", rates, weights).unsqueeze(-3)
    long = rates.mean(dim=-3, keepdim=True)
    if size is not None and tuple(size) != tuple(rates.shape[-2:]):
        short, long = (_resize(x, size) for x in (short, long))
    return short, long


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (``align_corners=False``) resize of the last two axes of ``(..., C, h, w)``."""
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    return F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False).reshape(*lead, x.shape[-3], *size)


def _check_pair(blur: Tensor, rates: Tensor) -> None:
    if blur.ndim < 3 or blur.shape[-3] != 3:
        raise ValueError(f"blur must be (..., 3, H, W), got shape {tuple(blur.shape)}")
    if rates.shape[:-3] != blur.shape[:-3]:
        raise ValueError(f"blur {tuple(blur.shape)} and spike rates {tuple(rates.shape)} must share their "
                         "leading dims (..., 3, H, W) / (..., K, h, w)")


def sdm(blur: Tensor, rates: Tensor, weights: Tensor) -> Tensor:
    """S-SDM's physical model: ``blur * short / long`` -> ``(..., 3, H, W)`` in [0, 1].

    Args:
        blur: ``(..., 3, H, W)`` blurry frames in [0, 1] (the exposure's mean image).
        rates: ``(..., K, h, w)`` firing rates over K equal consecutive sub-windows of each
            frame's exposure, on the spike grid (any size: resized to ``(H, W)``).
        weights: ``(K,)`` the short window, :func:`window_weights` of the sharp instant.
    """
    _check_pair(blur, rates)
    short, long = short_and_long_rates(rates, weights, tuple(blur.shape[-2:]))
    return (blur.float() * (short + _RATE_EPS) / (long + _RATE_EPS)).clamp(0, 1)


def tfp(blur: Tensor, rates: Tensor, weights: Tensor, *, threshold: float, gain: float = 1.0) -> Tensor:
    """TFP luminance ``threshold / gain * short`` with the blurry frame's chroma -> ``(..., 3, H, W)``.

    The chroma is kept as the blurry frame's colour differences ``rgb - luma`` (BT.601), so a
    grey scene comes out as the spike reading alone.
    """
    if threshold <= 0 or gain <= 0:
        raise ValueError(f"tfp needs threshold > 0 and gain > 0, got threshold={threshold}, gain={gain}")
    _check_pair(blur, rates)
    short, _ = short_and_long_rates(rates, weights, tuple(blur.shape[-2:]))
    blur = blur.float()
    blur_luma = sum(w * blur[..., c : c + 1, :, :] for c, w in enumerate(_LUMA))
    return (blur - blur_luma + short * (threshold / gain)).clamp(0, 1)


def spike_floor(method: str, blur: Tensor, rates: Tensor, *, center: float, width: float,
                threshold: float = 2.0, gain: float = 1.0) -> Tensor:
    """``method`` in :data:`FLOOR_METHODS` -> the reading of :func:`sdm` or :func:`tfp` of the
    window ``center``, ``width`` (the data pipeline's per-sample floor: rates on the CPU)."""
    if method not in FLOOR_METHODS:
        raise ValueError(f"spike floor method must be one of {FLOOR_METHODS}, got {method!r}")
    weights = window_weights(rates.shape[-3], center, width).to(rates.device)
    if method == "sdm":
        return sdm(blur, rates, weights)
    return tfp(blur, rates, weights, threshold=threshold, gain=gain)
