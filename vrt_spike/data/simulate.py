"""Spike and blur synthesis from high-frame-rate frames.

Integrate-and-fire as in published spike simulators (e.g. SpikeCV's simulator, SCFlow's SPIKE-X4K
pipeline): every pixel accumulates ``gain * luminance`` per step, fires when its charge reaches the
threshold ``theta`` and subtracts ``theta``. Charges start uniformly random in ``[0, theta)``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["luminance", "integrate_and_fire", "blur_and_sharp", "downsample_area"]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3, H, W)`` RGB in [0, 1] -> ``(..., H, W)`` BT.601 luma."""
    return 0.299 * rgb[..., 0, :, :] + 0.587 * rgb[..., 1, :, :] + 0.114 * rgb[..., 2, :, :]


def downsample_area(x: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes (H, W must be divisible)."""
    *lead, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"size {h}×{w} is not divisible by the downsampling factor {factor}")
    return x.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def integrate_and_fire(
    lum: np.ndarray,
    *,
    threshold: float = 2.0,
    gain: float = 1.0,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
    charge: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fire spikes from a luminance sequence, one spike frame per input frame.

    Args:
        lum: ``(N, H, W)`` luminance in [0, 1] for each integration step.
        threshold: firing threshold theta.
        gain: charge added per step per unit luminance.
        noise_std: std of Gaussian noise added to each step's input charge (in luminance units).
        rng: random generator for the initial charge and the noise.
        charge: ``(H, W)`` charge to continue from (e.g. the previous exposure's); random if None.

    Returns:
        ``spikes (N, H, W)`` uint8 0/1 and the final ``charge (H, W)`` float64.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if gain * 1.0 > threshold:
        raise ValueError(f"gain {gain} > threshold {threshold}: a pixel could need two spikes in one step")
    rng = rng if rng is not None else np.random.default_rng()
    n, h, w = lum.shape
    v = rng.uniform(0.0, threshold, size=(h, w)) if charge is None else np.array(charge, dtype=np.float64)
    spikes = np.empty((n, h, w), np.uint8)
    for i in range(n):
        step = lum[i] if noise_std == 0 else lum[i] + rng.normal(0.0, noise_std, size=(h, w))
        v += gain * np.clip(step, 0.0, 1.0)
        fired = v >= threshold
        v -= threshold * fired
        spikes[i] = fired
    return spikes, v


def blur_and_sharp(sub_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blur = mean of the N sub-frames; ground truth = the middle one (index ``N // 2``).

    Args:
        sub_frames: ``(N, ...)`` consecutive sharp sub-frames of one exposure.
    """
    return sub_frames.mean(axis=0), sub_frames[len(sub_frames) // 2]
