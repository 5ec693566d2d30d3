"""SpikeTemporalSA: per-pixel self-attention along time at each spike feature scale."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vrt_spike.models.chunked_attention import (ChunkConfig, ChunkShape, Mlp, TemporalAttention,
                                       map_spatial_chunks, temporal_position_encoding, validate_levels)


class TemporalSelfAttentionBlock(nn.Module):
    """Pre-norm transformer block along time: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``.

    ``(B, C, T, H, W)`` -> same shape; tokens are the T frames of one pixel, processed over
    spatial chunks bounded by ``chunk`` (see :mod:`vrt_spike.models.chunked_attention`).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, chunk: ChunkConfig,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.chunk = chunk
        self.use_checkpoint = use_checkpoint
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TemporalAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, dropout)

    def _tokens(self, x: Tensor) -> Tensor:
        """``(N, T, C)`` -> ``(N, T, C)``."""
        pos = temporal_position_encoding(x.shape[1], self.dim, x.shape[1], device=x.device, dtype=x.dtype)
        h = self.norm1(x)
        x = x + self.attn(h, h, pos, pos)
        return x + self.mlp(self.norm2(x))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.dim:
            raise ValueError(f"expected spike features (B, C={self.dim}, T, H, W), got {tuple(x.shape)}")
        return map_spatial_chunks(self._tokens, [x], cfg=self.chunk, out_channels=self.dim,
                                  out_frames=x.shape[2], use_checkpoint=self.use_checkpoint)


class SpikeTemporalSA(nn.Module):
    """``[Fs1..Fs4]`` -> ``[Fs1'..Fs4']`` of the same shapes; callable submodules ``scale{i}``.

    ``scales`` picks the scales that get a block (default all four); the others pass through
    unchanged, so a fusion that skips stage 1 pays no full-resolution attention.
    """

    def __init__(
        self,
        channels_per_scale: Sequence[int] = (96, 96, 96, 96),
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        chunk_size: int = 64,
        chunk_shape: ChunkShape = "square",
        max_batch_tokens: int = 49152,
        adaptive_chunk: bool = True,
        use_checkpoint: bool = False,
        scales: Sequence[int] = (1, 2, 3, 4),
    ) -> None:
        super().__init__()
        channels, picked = validate_levels(channels_per_scale, scales, "scales")
        self.channels_per_scale = channels
        self.active_scales = tuple(picked)
        chunk = ChunkConfig(chunk_size, chunk_shape, max_batch_tokens, adaptive_chunk)
        for s in picked:
            setattr(self, f"scale{s}",
                    TemporalSelfAttentionBlock(channels[s - 1], heads, mlp_ratio, dropout, chunk, use_checkpoint))

    def scales(self) -> dict[int, TemporalSelfAttentionBlock]:
        return {s: getattr(self, f"scale{s}") for s in self.active_scales}

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Up to four tensors ``(B, C_i, T_i, H_i, W_i)`` -> tensors of the same shapes."""
        if not 1 <= len(feats) <= 4:
            raise ValueError(f"SpikeTemporalSA expects 1 to 4 feature scales, got {len(feats)}")
        blocks = self.scales()
        return [blocks[i](f) if i in blocks else f for i, f in enumerate(feats, start=1)]
