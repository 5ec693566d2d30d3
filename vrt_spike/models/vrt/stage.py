"""VRT stages 1-7 (reshape, two TMSA groups, parallel warping) and the stage-8 container."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from einops.layers.torch import Rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vrt_spike.models.vrt.attention import AttnImpl
from vrt_spike.models.vrt.tmsa import TMSAG, GEGLUMlp
from vrt_spike.models.vrt.warp import FlowGuidedDeformAlign, flow_warp, frame_pairs, pairs_to_frames

Reshape = Literal["none", "down", "up"]


def _reshape_layer(kind: Reshape, in_dim: int, dim: int) -> nn.Sequential:
    """Scale change at the start of a stage; indices 1 (and 2) hold the LayerNorm (and Linear)."""
    if kind == "none":
        return nn.Sequential(Rearrange("n c d h w -> n d h w c"), nn.LayerNorm(dim), Rearrange("n d h w c -> n c d h w"))
    if kind == "down":  # 2x2 space-to-depth, channel order (neiw, neih, c) as upstream
        return nn.Sequential(
            Rearrange("n c d (h neih) (w neiw) -> n d h w (neiw neih c)", neih=2, neiw=2),
            nn.LayerNorm(4 * in_dim),
            nn.Linear(4 * in_dim, dim),
            Rearrange("n d h w c -> n c d h w"),
        )
    if kind == "up":
        return nn.Sequential(
            Rearrange("n (neiw neih c) d h w -> n d (h neih) (w neiw) c", neih=2, neiw=2),
            nn.LayerNorm(in_dim // 4),
            nn.Linear(in_dim // 4, dim),
            Rearrange("n d h w c -> n c d h w"),
        )
    raise ValueError(f"reshape must be 'none', 'down' or 'up', got {kind!r}")


class Stage(nn.Module):
    """One of VRT stages 1-7: ``(B, C_in, T, H, W) -> (B, C, T, H', W')``.

    Reshape (keep / 2x down / 2x up), a mutual+self attention group over 2-frame windows, a
    self-attention group over full windows (each followed by a linear layer and a skip), then
    flow-guided parallel warping of both neighbours fused by a GEGLU MLP.

    ``use_checkpoint_align`` (not upstream's: its alignment always keeps its activations)
    recomputes each alignment call and the fusing MLP in backward. At full resolution that is
    the largest activation a stage keeps: 5.6 of the 49 GiB a baseline step of 1 x 6 x 256^2
    needs in fp32 for stage 1 alone (``python -m vrt_spike.bench.memory``).
    """

    # Frame pairs aligned per deformable-alignment call: as many as fit this many pixels. Batching
    # pairs saves kernel launches (the small frames of the low-resolution stages are launch-bound
    # on a GPU); the cap bounds the deformable conv's sampled-column buffer (9 C x pixels of the
    # whole batch).
    align_pixels_per_call: int = 128 * 128

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        mul_attn_ratio: float,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: Sequence[float],
        norm_layer: type[nn.Module],
        pa_frames: int,
        deformable_groups: int,
        reshape: Reshape,
        max_residue_magnitude: float,
        use_checkpoint_attn: bool,
        use_checkpoint_ffn: bool,
        attn_impl: AttnImpl,
        use_checkpoint_align: bool = False,
    ) -> None:
        super().__init__()
        self.pa_frames = pa_frames
        self.use_checkpoint_align = use_checkpoint_align
        self.reshape = _reshape_layer(reshape, in_dim, dim)
        common = dict(
            dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
            drop_path=drop_path, norm_layer=norm_layer, use_checkpoint_ffn=use_checkpoint_ffn, attn_impl=attn_impl,
        )
        mutual_depth = int(depth * mul_attn_ratio)
        self.residual_group1 = TMSAG(
            depth=mutual_depth, window_size=(2, window_size[1], window_size[2]), mut_attn=True,
            use_checkpoint_attn=use_checkpoint_attn, **common,
        )
        self.linear1 = nn.Linear(dim, dim)
        # Upstream always checkpoints this group's attention, whatever use_checkpoint_attn says.
        self.residual_group2 = TMSAG(
            depth=depth - mutual_depth, window_size=window_size, mut_attn=False, use_checkpoint_attn=True, **common,
        )
        self.linear2 = nn.Linear(dim, dim)
        if pa_frames:
            self.pa_deform = FlowGuidedDeformAlign(dim, deformable_groups, max_residue_magnitude, pa_frames)
            self.pa_fuse = GEGLUMlp(dim * 3, dim * 3, dim)

    def forward(self, x: Tensor, flows_backward: list[Tensor], flows_forward: list[Tensor]) -> Tensor:
        """``flows_*``: ``(B, T-1, 2, H', W')`` flows at this stage's scale (one per pa_frames // 2)."""
        x = self.reshape(x)
        x = self.linear1(self.residual_group1(x).transpose(1, 4)).transpose(1, 4) + x
        x = self.linear2(self.residual_group2(x).transpose(1, 4)).transpose(1, 4) + x
        if self.pa_frames:
            x = x.transpose(1, 2)  # (B, T, C, H, W)
            x_backward, x_forward = self._aligned_neighbours(x, flows_backward[0], flows_forward[0])
            fused = self._recomputed(self.pa_fuse, torch.cat([x, x_backward, x_forward], 2).permute(0, 1, 3, 4, 2))
            x = fused.permute(0, 4, 1, 2, 3)
        return x

    def _recomputed(self, fn, *args: Tensor) -> Tensor:
        """``fn(*args)``, recomputed in backward when ``use_checkpoint_align`` (training only)."""
        if self.use_checkpoint_align and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _align(self, neighbours: Tensor, targets: Tensor, flows: Tensor) -> Tensor:
        """One alignment call: ``neighbours`` warped by ``flows``, then the deformable alignment."""
        warped = flow_warp(neighbours, flows.permute(0, 2, 3, 1), "bilinear")
        return self.pa_deform(neighbours, [warped], targets, [flows])

    def _aligned_neighbours(self, x: Tensor, flows_backward: Tensor, flows_forward: Tensor) -> tuple[Tensor, Tensor]:
        """Frame t+1 aligned to t (zeros for the last frame) and t-1 aligned to t (zeros for the first).

        ``x (B, T, C, H, W)``, flows ``(B, T-1, 2, H, W)`` -> two ``(B, T, C, H, W)``. Upstream aligns
        one frame pair per call; here the 2(T-1) independent pairs run in batches of up to
        ``align_pixels_per_call`` pixels (one warp, one offset CNN, one deformable conv per batch).
        """
        neighbours, targets, flows = frame_pairs(x, flows_backward, flows_forward)
        per_call = max(1, self.align_pixels_per_call // (x.shape[-2] * x.shape[-1]))
        aligned = []
        for nb, tg, fl in zip(neighbours.split(per_call), targets.split(per_call), flows.split(per_call)):
            aligned.append(self._recomputed(self._align, nb, tg, fl))
        return pairs_to_frames(torch.cat(aligned) if len(aligned) > 1 else aligned[0], x.shape[0])


class Stage8(nn.Sequential):
    """Stage 8: a channel projection then RTMSA groups, run in order.

    A ``Sequential`` so that it is callable (forward hooks fire) while its state-dict keys stay
    ``stage8.0.*``, ``stage8.1.*``, ... like the official ``ModuleList``.
    """
