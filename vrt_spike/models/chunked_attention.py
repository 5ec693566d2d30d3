"""Bounded-memory attention along time, applied per pixel over spatial chunks.

The spike self-attention and the RGB/spike fusion both attend along time independently for every
pixel: a feature map ``(B, C, T, H, W)`` becomes ``B*H*W`` sequences of ``T`` tokens. At 256x256
that is a few hundred thousand sequences whose attention, MLP and (in training) saved activations
do not fit at once, so the pixels are processed in spatial chunks sized so that each chunk holds at
most ``max_batch_tokens`` tokens. Every operation inside a block is per pixel (LayerNorm over C,
attention over T, MLP per token), hence chunked and unchunked results are the same numbers.

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

ChunkShape = Literal["square", "rows"]
CHUNK_SHAPES: tuple[str, ...] = ("square", "rows")


@dataclass(frozen=True)
class ChunkConfig:
    """How pixels are grouped into chunks (the ``SPIKE_TSA`` / ``FUSE`` keys of the user notes).

    ``chunk_size``: side of a square chunk in pixels (``rows``: the chunk holds about
    ``chunk_size**2`` pixels as full-width rows). ``max_batch_tokens``: upper bound of
    ``batch * pixels * tokens_per_pixel`` in one chunk; with ``adaptive_chunk`` the chunk shrinks
    until it fits. ``adaptive_chunk=False`` processes the whole map at once (no chunking).
    """

    chunk_size: int = 64
    chunk_shape: ChunkShape = "square"
    max_batch_tokens: int = 49152
    adaptive_chunk: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.chunk_shape not in CHUNK_SHAPES:
            raise ValueError(f"chunk_shape must be one of {CHUNK_SHAPES}, got {self.chunk_shape!r}")


def plan_spatial_chunks(
    height: int, width: int, *, batch: int, tokens_per_pixel: int, cfg: ChunkConfig
) -> list[tuple[slice, slice]]:
    """Split an ``height x width`` grid into chunks of at most ``cfg.max_batch_tokens`` tokens.

    A chunk of ``h x w`` pixels costs ``batch * h * w * tokens_per_pixel`` tokens. The smallest
    chunk is one pixel (the batch is never split), so the bound holds whenever
    ``batch * tokens_per_pixel <= max_batch_tokens``.
    """
    if not cfg.adaptive_chunk:
        return [(slice(0, height), slice(0, width))]
    pixel_budget = max(1, cfg.max_batch_tokens // max(1, batch * tokens_per_pixel))
    if cfg.chunk_shape == "square":
        side = max(1, min(cfg.chunk_size, math.isqrt(pixel_budget)))
        ch, cw = min(side, height), min(side, width)
    else:  # rows: full-width strips, narrower tiles only when one row exceeds the budget
        pixels = min(pixel_budget, cfg.chunk_size**2)
        cw = min(width, pixels)
        ch = max(1, min(height, pixels // cw))
    return [
        (slice(y, min(y + ch, height)), slice(x, min(x + cw, width)))
        for y in range(0, height, ch)
        for x in range(0, width, cw)
    ]


def map_spatial_chunks(
    fn: Callable[..., Tensor],
    feats: Sequence[Tensor],
    *,
    cfg: ChunkConfig,
    out_channels: int,
    out_frames: int,
    use_checkpoint: bool = False,
) -> Tensor:
    """Apply a per-pixel sequence function over spatial chunks.

    Args:
        fn: maps token tensors ``(N, T_k, C_k)`` (one per entry of ``feats``, N = pixels of the
            chunk times batch) to ``(N, out_frames, out_channels)``.
        feats: feature maps ``(B, C_k, T_k, H, W)`` sharing ``B, H, W``.
        use_checkpoint: recompute each chunk in backward (non-reentrant), so training keeps only
            the chunk inputs instead of every chunk's attention/MLP activations.

    Returns:
        ``(B, out_channels, out_frames, H, W)``.
    """
    first = feats[0]
    b, _, _, h, w = first.shape
    tokens_per_pixel = max(f.shape[2] for f in feats)
    plan = plan_spatial_chunks(h, w, batch=b, tokens_per_pixel=tokens_per_pixel, cfg=cfg)

    def run(*chunks: Tensor) -> Tensor:
        ch, cw = chunks[0].shape[-2:]
        seqs = [rearrange(c, "b c t h w -> (b h w) t c") for c in chunks]
        return rearrange(fn(*seqs), "(b h w) t c -> b c t h w", b=b, h=ch, w=cw)

    def run_chunk(*chunks: Tensor) -> Tensor:
        if use_checkpoint and torch.is_grad_enabled():
            return checkpoint(run, *chunks, use_reentrant=False)
        return run(*chunks)

    if len(plan) == 1:
        return run_chunk(*feats)
    out = first.new_empty(b, out_channels, out_frames, h, w)
    for ys, xs in plan:
        out[..., ys, xs] = run_chunk(*(f[..., ys, xs] for f in feats))
    return out


def temporal_position_encoding(length: int, dim: int, span: int, *, device, dtype) -> Tensor:
    """Sinusoidal encoding ``(length, dim)`` of frame centres on a common time axis.

    A sequence of ``length`` frames covering a clip of ``span`` frames puts frame ``t`` at
    ``(t + 0.5) * span / length - 0.5``, so a temporally strided spike sequence and the full-rate
    RGB sequence share positions (frame 1 of a 3-frame sequence sits on frame 2.5 of 6).
    """
    pos = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) * (span / length) - 0.5
    half = dim // 2
    freq = torch.exp(-math.log(100.0) * torch.arange(half, device=device, dtype=torch.float32) / max(1, half))
    angles = pos[:, None] * freq[None, :]
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if enc.shape[-1] < dim:
        enc = F.pad(enc, (0, dim - enc.shape[-1]))
    return enc.to(dtype)


class TemporalAttention(nn.Module):
    """Multi-head attention along time for token sequences ``(N, T, C)`` through SDPA.

    Self-attention when ``context`` is omitted, cross-attention (queries from ``x``, keys and values
    from ``context``) otherwise. Query and key inputs get ``pos_q`` / ``pos_k`` added; values do not.
    """

    def __init__(self, dim: int, heads: int, *, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"attention dim {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, context: Tensor, pos_q: Tensor, pos_k: Tensor) -> Tensor:
        """``x (N, Tq, C)``, ``context (N, Tk, C)``, ``pos_q (Tq, C)``, ``pos_k (Tk, C)`` -> ``(N, Tq, C)``."""
        q, k, v = self.q(x + pos_q), self.k(context + pos_k), self.v(context)
        q, k, v = (rearrange(t, "n t (h d) -> n h t d", h=self.heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(out, "n h t d -> n t (h d)")))


class Mlp(nn.Module):
    """Token-wise two-layer MLP ``(..., C) -> (..., C)`` with hidden width ``mlp_ratio * C``."""

    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def validate_levels(channels_per_scale: Sequence[int], levels: Sequence[int], what: str) -> tuple[list[int], tuple[int, ...]]:
    """Channel widths of the 4 scales and the sorted levels (1..4) a multi-scale module builds.

    Shared by SpikeTemporalSA (``scales``) and the fusion (``fuse_stages``): both build one block
    per listed level at that level's width.
    """
    channels = [int(c) for c in channels_per_scale]
    if len(channels) != 4:
        raise ValueError(f"channels_per_scale must hold 4 values, got {channels}")
    picked = [int(s) for s in levels]
    if not picked or len(set(picked)) != len(picked) or not set(picked) <= {1, 2, 3, 4}:
        raise ValueError(f"{what} must be values in 1..4, distinct and at least one, got {list(levels)}")
    return channels, tuple(sorted(picked))
