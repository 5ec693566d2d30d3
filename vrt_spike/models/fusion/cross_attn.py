"""MultiScaleTemporalCrossAttnFuse: RGB stage features query spike features along time."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vrt_spike.models.chunked_attention import (ChunkConfig, ChunkShape, Mlp, TemporalAttention,
                                       map_spatial_chunks, temporal_position_encoding, validate_levels)


class TemporalCrossAttnFuse(nn.Module):
    """Fuse spike features into RGB features of one VRT stage, per pixel along time.

    ``rgb (B, C, Tr, H, W)`` (queries) and ``spike (B, C, Ts, H, W)`` (keys/values) ->
    ``rgb + out_proj(h)`` of the RGB shape, where ``a = cross_attn(norm(rgb), norm(spike))`` and
    ``h = a + mlp(norm(a))``. ``out_proj`` starts at zero, so at initialisation the stage output is
    exactly the RGB feature (a pretrained VRT is unchanged at step 0). Both sequences are placed on
    a common time axis by sinusoidal position encodings, so ``Tr != Ts`` (temporal strides) works.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, chunk: ChunkConfig,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.chunk = chunk
        self.use_checkpoint = use_checkpoint
        self.norm_rgb = nn.LayerNorm(dim)
        self.norm_spike = nn.LayerNorm(dim)
        self.attn = TemporalAttention(dim, heads, attn_drop=dropout, proj_drop=dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, dropout)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _tokens(self, rgb: Tensor, spike: Tensor) -> Tensor:
        """``rgb (N, Tr, C)``, ``spike (N, Ts, C)`` -> ``(N, Tr, C)``."""
        tr, ts = rgb.shape[1], spike.shape[1]
        span = max(tr, ts)
        pos_q = temporal_position_encoding(tr, self.dim, span, device=rgb.device, dtype=rgb.dtype)
        pos_k = temporal_position_encoding(ts, self.dim, span, device=rgb.device, dtype=rgb.dtype)
        a = self.attn(self.norm_rgb(rgb), self.norm_spike(spike), pos_q, pos_k)
        return rgb + self.out_proj(a + self.mlp(self.norm_mlp(a)))

    def forward(self, rgb: Tensor, spike: Tensor) -> Tensor:
        if rgb.ndim != 5 or spike.ndim != 5:
            raise ValueError(f"fusion expects 5-D features (B, C, T, H, W), got rgb {tuple(rgb.shape)} "
                             f"and spike {tuple(spike.shape)}")
        b, c, tr, h, w = rgb.shape
        if c != self.dim or spike.shape[1] != self.dim or spike.shape[0] != b or spike.shape[3:] != (h, w):
            raise ValueError(
                f"fusion at C={self.dim} expects rgb (B, {self.dim}, T', H, W) and spike (B, {self.dim}, T, H, W) "
                f"with equal B, H, W; got rgb {tuple(rgb.shape)} and spike {tuple(spike.shape)}")
        return map_spatial_chunks(self._tokens, [rgb, spike], cfg=self.chunk, out_channels=c,
                                  out_frames=tr, use_checkpoint=self.use_checkpoint)


class MultiScaleTemporalCrossAttnFuse(nn.Module):
    """One :class:`TemporalCrossAttnFuse` per fused VRT stage, as callable submodules ``stage{i}``.

    ``forward(rgb_feat (B, C_i, T', H_i, W_i), spike_feat (B, C_i, T, H_i, W_i), stage=i)`` returns
    the RGB feature's shape. ``channels_per_scale[i-1]`` is the width at VRT stage ``i``.
    """

    def __init__(
        self,
        channels_per_scale: Sequence[int] = (96, 96, 96, 96),
        fuse_stages: Sequence[int] = (1, 2, 3, 4),
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        chunk_size: int = 64,
        chunk_shape: ChunkShape = "square",
        max_batch_tokens: int = 49152,
        adaptive_chunk: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        channels, stages = validate_levels(channels_per_scale, fuse_stages, "fuse_stages")
        self.channels_per_scale = channels
        self.fuse_stages = stages
        chunk = ChunkConfig(chunk_size, chunk_shape, max_batch_tokens, adaptive_chunk)
        for s in stages:
            setattr(self, f"stage{s}",
                    TemporalCrossAttnFuse(channels[s - 1], heads, mlp_ratio, dropout, chunk, use_checkpoint))

    def stages(self) -> dict[int, TemporalCrossAttnFuse]:
        return {s: getattr(self, f"stage{s}") for s in self.fuse_stages}

    def forward(self, rgb_feat: Tensor, spike_feat: Tensor, stage: int) -> Tensor:
        if stage not in self.fuse_stages:
            raise ValueError(f"stage {stage} is not fused; fuse_stages={list(self.fuse_stages)}")
        return getattr(self, f"stage{stage}")(rgb_feat, spike_feat)
