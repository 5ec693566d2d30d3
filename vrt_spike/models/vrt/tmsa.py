"""Temporal mutual self attention blocks (TMSA), their groups (TMSAG) and stage-8 RTMSA."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vrt_spike.models.vrt.attention import AttnImpl, ShiftedWindows, WindowAttention, get_window_size, window_partition, window_reverse


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability ``drop_prob``."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x / keep * (mask + keep).floor()


class GEGLUMlp(nn.Module):
    """GELU-gated MLP (Shazeer, "GLU Variants Improve Transformer"): ``fc2(gelu(fc11 x) * fc12 x)``."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc11 = nn.Linear(in_features, hidden_features)
        self.fc12 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc11(x)) * self.fc12(x))


class TMSA(nn.Module):
    """One transformer block: (shifted) window attention and a GEGLU MLP, both pre-norm residual.

    ``(B, D, H, W, C) -> (B, D, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mut_attn: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: float,
        norm_layer: type[nn.Module],
        use_checkpoint_attn: bool,
        use_checkpoint_ffn: bool,
        attn_impl: AttnImpl,
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        if not all(0 <= s < w for s, w in zip(self.shift_size, self.window_size)):
            raise ValueError(f"shift_size {self.shift_size} must lie in [0, window_size {self.window_size})")
        self.use_checkpoint_attn = use_checkpoint_attn
        self.use_checkpoint_ffn = use_checkpoint_ffn
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias, qk_scale, mut_attn, attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = GEGLUMlp(dim, int(dim * mlp_ratio))

    def _attention(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        b, d, h, w, _ = x.shape
        window, shift = get_window_size((d, h, w), self.window_size, self.shift_size)
        x = self.norm1(x)
        pad_d, pad_h, pad_w = ((window[a] - s % window[a]) % window[a] for a, s in enumerate((d, h, w)))
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h, 0, pad_d))  # zeros after the norm, as upstream
        _, dp, hp, wp, _ = x.shape
        shifted = any(s > 0 for s in shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        windows = ShiftedWindows(grid, window, shift) if shifted else None
        x = window_reverse(self.attn(window_partition(x, window), windows), window, b, dp, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return self.drop_path(x[:, :d, :h, :w])

    def _ffn(self, x: Tensor) -> Tensor:
        return self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """``grid``: windows along (d, h, w) of the padded input, for the shift masks."""
        recompute = torch.is_grad_enabled()
        if self.use_checkpoint_attn and recompute:
            x = x + checkpoint(self._attention, x, grid, use_reentrant=False)
        else:
            x = x + self._attention(x, grid)
        if self.use_checkpoint_ffn and recompute:
            x = x + checkpoint(self._ffn, x, use_reentrant=False)
        else:
            x = x + self._ffn(x)
        return x


class TMSAG(nn.Module):
    """A group of TMSA blocks alternating unshifted / shifted windows. ``(B, C, D, H, W)`` in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        mut_attn: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: float | Sequence[float],
        norm_layer: type[nn.Module],
        use_checkpoint_attn: bool,
        use_checkpoint_ffn: bool,
        attn_impl: AttnImpl,
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(w // 2 for w in self.window_size)
        self.blocks = nn.ModuleList(
            TMSA(
                dim=dim,
                num_heads=num_heads,
                window_size=self.window_size,
                shift_size=(0, 0, 0) if i % 2 == 0 else self.shift_size,
                mut_attn=mut_attn,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop_path=drop_path[i] if isinstance(drop_path, Sequence) else drop_path,
                norm_layer=norm_layer,
                use_checkpoint_attn=use_checkpoint_attn,
                use_checkpoint_ffn=use_checkpoint_ffn,
                attn_impl=attn_impl,
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        _, _, d, h, w = x.shape
        window, _ = get_window_size((d, h, w), self.window_size, self.shift_size)
        grid = tuple(-(-s // win) for s, win in zip((d, h, w), window))
        x = rearrange(x, "b c d h w -> b d h w c")
        for block in self.blocks:
            x = block(x, grid)
        return rearrange(x, "b d h w c -> b c d h w")


class RTMSA(nn.Module):
    """Stage-8 residual group: self-attention TMSAG followed by a linear layer, with a skip."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: Sequence[float],
        norm_layer: type[nn.Module],
        use_checkpoint_attn: bool,
        use_checkpoint_ffn: bool,
        attn_impl: AttnImpl,
    ) -> None:
        super().__init__()
        self.residual_group = TMSAG(
            dim, depth, num_heads, window_size, False, mlp_ratio, qkv_bias, qk_scale, drop_path,
            norm_layer, use_checkpoint_attn, use_checkpoint_ffn, attn_impl,
        )
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, C, D, H, W)``."""
        return x + self.linear(self.residual_group(x).transpose(1, 4)).transpose(1, 4)
