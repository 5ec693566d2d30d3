"""Tiled inference for long, large videos, following the official VRT test script.

The video is cut into temporal clips of ``tile[0]`` frames overlapping by ``tile_overlap[0]``
(outputs averaged where clips overlap), and each clip into spatial patches of ``tile[1] x
tile[2]`` overlapping by ``tile_overlap[1:]``; half of each overlap is dropped on a patch's inner
borders and the rest averaged. A patch (or a whole input smaller than a tile) that the network
cannot take as is gets mirror-padded at the bottom/right to a valid size and cropped back, as
upstream does for untiled inference. Peak memory is that of one ``tile`` plus the output.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["tile_starts", "tiled_forward"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Upstream's tile origins: every ``tile - overlap`` pixels, plus one flush with the end."""
    if tile <= 0 or tile >= size:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _mirror_pad(x: Tensor, dim: int, target: int) -> Tensor:
    """Extend ``x`` along ``dim`` to ``target`` by appending its flipped tail (repeatedly if needed)."""
    while x.shape[dim] < target:
        pad = min(target - x.shape[dim], x.shape[dim])
        x = torch.cat([x, x.narrow(dim, x.shape[dim] - pad, pad).flip(dim)], dim)
    return x


def _valid_size(size: int, multiple: int, minimum: int) -> int:
    return max(-(-size // multiple) * multiple, -(-minimum // multiple) * multiple)


@torch.no_grad()
def tiled_forward(
    model: Callable[..., Tensor] | nn.Module,
    *clips: Tensor,
    tile: Sequence[int] = (40, 128, 128),
    tile_overlap: Sequence[int] = (2, 20, 20),
    size_multiple: int | None = None,
    min_size: Sequence[int] | None = None,
) -> Tensor:
    """Run ``model(*clip_tiles)`` tile by tile and stitch the outputs (no autograd graph).

    Args:
        model: maps ``(B, t, C_k, h, w)`` tensors (one per entry of ``clips``) to ``(B, t, C_out, h, w)``.
        clips: ``(B, T, C_k, H, W)`` inputs sharing B, T, H, W (e.g. the RGB clip, or RGB and spikes).
        tile: ``[frames, height, width]``; 0 disables tiling along that axis (upstream defaults).
        tile_overlap: overlap ``[frames, height, width]`` between neighbouring tiles.
        size_multiple, min_size: spatial size the model accepts (``H % multiple == 0``,
            ``H >= min_size[0]``); default to ``model.input_multiple`` / ``model.min_input_hw``.

    Returns the stitched ``(B, T, C_out, H, W)`` on the input's device.
    """
    if not clips:
        raise ValueError("tiled_forward needs at least one input clip")
    if len(tile) != 3 or len(tile_overlap) != 3:
        raise ValueError(f"tile and tile_overlap must be [frames, height, width], got {list(tile)} and {list(tile_overlap)}")
    b, t, _, h, w = clips[0].shape
    for c in clips:
        if c.ndim != 5 or (c.shape[0], c.shape[1], c.shape[3], c.shape[4]) != (b, t, h, w):
            raise ValueError(f"all clips must be (B, T, C, H, W) with B, T, H, W = {(b, t, h, w)}, got {tuple(c.shape)}")
    multiple = size_multiple if size_multiple is not None else getattr(model, "input_multiple", 1)
    min_hw = tuple(min_size) if min_size is not None else tuple(getattr(model, "min_input_hw", (1, 1)))
    for axis in (1, 2):
        if tile[axis] and (tile[axis] % multiple or tile[axis] < min_hw[axis - 1]):
            raise ValueError(
                f"tile {list(tile)}: spatial tiles must be multiples of {multiple} and at least {list(min_hw)}"
            )
        if tile[axis] and not 0 <= tile_overlap[axis] < tile[axis]:
            raise ValueError(f"tile_overlap {list(tile_overlap)} must be >= 0 and smaller than tile {list(tile)}")
    if tile[0] and not 0 <= tile_overlap[0] < tile[0]:
        raise ValueError(f"tile_overlap {list(tile_overlap)} must be >= 0 and smaller than tile {list(tile)}")

    out: Tensor | None = None
    frame_weight = torch.zeros(1, t, 1, 1, 1, device=clips[0].device)
    for t0 in tile_starts(t, tile[0], tile_overlap[0]):
        t_len = min(tile[0], t) if tile[0] else t
        clip_out = _tiled_clip(model, [c[:, t0 : t0 + t_len] for c in clips], tile[1:], tile_overlap[1:], multiple, min_hw)
        if out is None:
            out = clips[0].new_zeros(b, t, clip_out.shape[2], h, w)
        out[:, t0 : t0 + t_len] += clip_out
        frame_weight[:, t0 : t0 + t_len] += 1
    assert out is not None
    return out / frame_weight


def _tiled_clip(
    model: Callable[..., Tensor],
    clips: list[Tensor],
    tile: Sequence[int],
    overlap: Sequence[int],
    multiple: int,
    min_hw: Sequence[int],
) -> Tensor:
    """Spatial tiling of one temporal clip (upstream ``test_clip``)."""
    _, _, _, h, w = clips[0].shape
    hs, ws = tile_starts(h, tile[0], overlap[0]), tile_starts(w, tile[1], overlap[1])
    out: Tensor | None = None
    weight = clips[0].new_zeros(1, 1, 1, h, w)
    for y in hs:
        for x in ws:
            ph = min(tile[0], h) if tile[0] else h
            pw = min(tile[1], w) if tile[1] else w
            patch = _padded_call(model, [c[..., y : y + ph, x : x + pw] for c in clips], multiple, min_hw)
            keep = torch.ones(1, 1, 1, ph, pw, device=patch.device, dtype=patch.dtype)
            # drop half the overlap on inner borders: the network is least reliable near a patch edge
            if y != hs[-1]:
                keep[..., ph - overlap[0] // 2 :, :] = 0
            if x != ws[-1]:
                keep[..., :, pw - overlap[1] // 2 :] = 0
            if y != hs[0]:
                keep[..., : overlap[0] // 2, :] = 0
            if x != ws[0]:
                keep[..., :, : overlap[1] // 2] = 0
            if out is None:
                out = clips[0].new_zeros(patch.shape[0], patch.shape[1], patch.shape[2], h, w)
            out[..., y : y + ph, x : x + pw] += patch * keep
            weight[..., y : y + ph, x : x + pw] += keep
    assert out is not None
    return out / weight


def _padded_call(model: Callable[..., Tensor], patches: list[Tensor], multiple: int, min_hw: Sequence[int]) -> Tensor:
    """``model(*patches)`` after mirror-padding H, W to a size the model accepts, cropped back."""
    h, w = patches[0].shape[-2:]
    th, tw = _valid_size(h, multiple, min_hw[0]), _valid_size(w, multiple, min_hw[1])
    if (th, tw) != (h, w):
        patches = [_mirror_pad(_mirror_pad(p, 3, th), 4, tw) for p in patches]
    return model(*patches)[..., :h, :w]
