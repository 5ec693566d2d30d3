"""Spike-stream representations: voxel bins and TFP (windowed mean firing).

Both are computed as integer spike counts per channel plus each channel's window length; the
representation is ``counts / lengths`` (a firing rate in [0, 1]). The voxel cache stores the counts
so a cached sample is bit-identical to a freshly computed one.

Channel order is time order inside the exposure, so reversing time reverses the channels.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Representation", "REPRESENTATIONS", "channel_windows", "spike_counts", "normalise", "represent"]

Representation = Literal["voxel", "tfp"]
REPRESENTATIONS: tuple[str, ...] = ("voxel", "tfp")


def channel_windows(
    num_frames: int, num_bins: int, representation: str = "voxel", tfp_window: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Frame windows ``[starts[k], stops[k])`` of each of the K output channels.

    - ``voxel``: K equal (up to rounding) consecutive sub-windows covering the exposure.
    - ``tfp``: K windows of ``tfp_window`` frames (default ``2 * N / K``, so neighbours overlap by
      half) centred on the voxel bin centres, clipped to the exposure.
    """
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if num_frames < num_bins:
        raise ValueError(
            f"need at least num_bins={num_bins} spike frames per exposure to fill every bin, got {num_frames}"
        )
    edges = np.round(np.linspace(0, num_frames, num_bins + 1)).astype(np.int64)
    if representation == "voxel":
        return edges[:-1], edges[1:]
    window = tfp_window if tfp_window is not None else max(1, round(2 * num_frames / num_bins))
    if not 1 <= window <= num_frames:
        raise ValueError(f"tfp_window must be in [1, {num_frames}] (spike frames per exposure), got {window}")
    centres = (edges[:-1] + edges[1:]) / 2
    starts = np.clip(np.floor(centres - window / 2 + 0.5).astype(np.int64), 0, num_frames - window)
    return starts, starts + window


def spike_counts(
    spikes: np.ndarray, num_bins: int, representation: str = "voxel", tfp_window: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts per channel.

    Args:
        spikes: ``(N, H, W)`` 0/1 spikes of one exposure.

    Returns:
        ``counts (K, H, W)`` uint8 (uint16 when a window exceeds 255 frames) and
        ``lengths (K,)`` int64 window lengths.
    """
    starts, stops = channel_windows(spikes.shape[0], num_bins, representation, tfp_window)
    lengths = stops - starts
    dtype = np.uint8 if lengths.max() <= np.iinfo(np.uint8).max else np.uint16
    counts = np.zeros((num_bins, *spikes.shape[1:]), dtype)
    # Frame-by-frame in-place adds: ~5x faster than np.sum / np.add.reduceat over axis 0.
    for k, (start, stop) in enumerate(zip(starts, stops)):
        for frame in spikes[start:stop]:
            np.add(counts[k], frame, out=counts[k])
    return counts, lengths


def normalise(counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``(..., K, H, W)`` counts / window lengths -> float32 firing rate in [0, 1]."""
    return counts.astype(np.float32) / lengths.astype(np.float32)[:, None, None]


def represent(
    spikes: np.ndarray, num_bins: int, representation: str = "voxel", tfp_window: int | None = None
) -> np.ndarray:
    """``(N, H, W)`` spikes -> ``(K, H, W)`` float32 representation in [0, 1]."""
    return normalise(*spike_counts(spikes, num_bins, representation, tfp_window))
