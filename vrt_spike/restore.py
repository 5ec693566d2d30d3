"""Restoring whole clips: the one inference path of validation, ``evaluate.py`` and ``predict.py``.

A clip of any length and frame size goes through VRT's test-time tiling
(:func:`vrt_spike.models.vrt.tiling.tiled_forward`): overlapping temporal windows averaged where
they overlap, optional spatial tiles, and mirror padding at the bottom/right to a size the network
accepts, cropped back. Pure torch: no Lightning, no Hydra.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from einops import repeat
from torch import Tensor, nn

from vrt_spike.models.vrt.tiling import tile_starts, tiled_forward

__all__ = ["MIN_FRAMES", "TileSpec", "tile_spec", "describe_tile", "forward_calls", "restore_clip"]

# VRT aligns neighbouring frames, so every forward needs at least two.
MIN_FRAMES = 2


TileSpec = dict[str, list[int]]
# tiled_forward's (upstream's) overlap [frames, height, width] when module.tile gives none.
DEFAULT_OVERLAP = (2, 20, 20)


def tile_spec(tile: Mapping[str, Any] | None) -> TileSpec:
    """``module.tile`` (``{tile: [T, H, W], tile_overlap: [T, H, W]}`` or None) -> tiled_forward kwargs.

    None means one forward over the whole clip and frame (``[0, 0, 0]``: no tiling on any axis).
    A missing ``tile_overlap`` is upstream's ``[2, 20, 20]``. A temporal window shorter than
    :data:`MIN_FRAMES` is an error naming the key.
    """
    if not tile:
        return {"tile": [0, 0, 0], "tile_overlap": [0, 0, 0]}
    unknown = sorted(set(tile) - {"tile", "tile_overlap"})
    if unknown:
        raise ValueError(f"module.tile: unknown keys {unknown} (expected tile: [T, H, W], tile_overlap: [T, H, W])")
    size = [int(v) for v in tile.get("tile", (0, 0, 0))]
    overlap = [int(v) for v in tile.get("tile_overlap", DEFAULT_OVERLAP)]
    if len(size) != 3 or len(overlap) != 3:
        raise ValueError(f"module.tile: tile and tile_overlap must be [T, H, W], got {size} and {overlap}")
    if size[0] and size[0] < MIN_FRAMES:
        raise ValueError(f"module.tile.tile[0]: a temporal window needs >= {MIN_FRAMES} frames (0: whole clip), got {size[0]}")
    return {"tile": size, "tile_overlap": overlap}


def describe_tile(tile: Mapping[str, Any] | None) -> str:
    """``module.tile`` in words, e.g. ``windows of 2 frames overlapping by 1`` (figures name how they were restored)."""
    spec = tile_spec(tile)
    (t, h, w), (ot, oh, ow) = spec["tile"], spec["tile_overlap"]
    text = f"windows of {t} frames overlapping by {ot}" if t else "whole clips in one window"
    if h or w:
        text += f", spatial tiles of {h or 'full'}x{w or 'full'} overlapping by {oh}x{ow}"
    return text


def forward_calls(num_frames: int, height: int, width: int, tile: Mapping[str, Any] | None = None) -> int:
    """Network calls :func:`restore_clip` makes for a ``num_frames x height x width`` clip (progress bars)."""
    spec = tile_spec(tile)
    size, overlap = spec["tile"], spec["tile_overlap"]
    axes = zip((max(num_frames, MIN_FRAMES), height, width), size, overlap)
    return math.prod(len(tile_starts(n, s, o)) for n, s, o in axes)


def restore_clip(
    forward: Callable[..., Tensor],
    net: nn.Module,
    blur: Tensor,
    spike: Tensor | None,
    tile: Mapping[str, Any] | None = None,
) -> Tensor:
    """Restore every frame of ``blur`` (with its spikes) at its own size.

    Args:
        forward: the network call, ``forward(blur, spike)`` or ``forward(blur)`` (the compiled or
            plain module).
        net: the network (``VRTWithSpike`` or ``VRT``), asked for the sizes it accepts.
        blur: ``(B, T, 3, H, W)`` in [0, 1]; any ``T >= 1`` and any ``H, W``.
        spike: ``(B, T, K, H, W)`` on the RGB grid, or None for an RGB-only network.
        tile: ``module.tile`` (see :func:`tile_spec`).

    Returns ``(B, T, 3, H, W)``, not clamped, under ``no_grad``.
    """
    inputs = [blur] if spike is None else [blur, spike]
    for name, x in zip(("blur", "spike"), inputs):
        # A non-finite input spreads through SpyNet's flows and the alignment offsets to the whole
        # output; name it here, where the cause is still visible. (One host read per clip: the
        # training step has no such check, its data are integer PNGs and spike counts.)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"{name} of shape {tuple(x.shape)} has {bad} non-finite values (NaN/Inf); "
                             "expected finite values in [0, 1]")
    t = blur.shape[1]
    if t < MIN_FRAMES:
        # A single frame: show it to the network twice (a still scene), keep the first output.
        inputs = [repeat(x, "b t c h w -> b (n t) c h w", n=MIN_FRAMES) for x in inputs]
    vrt = getattr(net, "vrt", net)  # VRT knows the sizes it accepts
    sizes = {"size_multiple": getattr(vrt, "input_multiple", None), "min_size": getattr(vrt, "min_input_hw", None)}
    return tiled_forward(forward, *inputs, **sizes, **tile_spec(tile))[:, :t]

