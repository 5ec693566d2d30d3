"""SpikeEncoder3D: a 3-D convolutional pyramid turning spike voxels into four feature scales."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def _check_four(name: str, values: Sequence[int], count: int) -> list[int]:
    values = [int(v) for v in values]
    if len(values) != count or any(v < 1 for v in values):
        raise ValueError(f"{name} must hold {count} positive integers, got {values}")
    return values


class ResidualBlock3D(nn.Module):
    """``x + conv(act(conv(x)))`` with 3x3x3 convolutions; ``(B, C, T, H, W)`` -> same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class EncoderScale(nn.Module):
    """One pyramid level: a projecting (possibly strided) Conv3d then residual blocks.

    ``(B, C_in, T, H, W)`` -> ``(B, C_out, ceil(T / st), ceil(H / ss), ceil(W / ss))``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, temporal_stride: int = 1,
                 spatial_stride: int = 1, num_blocks: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1,
                              stride=(temporal_stride, spatial_stride, spatial_stride))
        self.act = nn.LeakyReLU(0.1)
        self.blocks = nn.Sequential(*(ResidualBlock3D(out_channels) for _ in range(num_blocks)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.act(self.proj(x)))


class SpikeEncoder3D(nn.Module):
    """Spike voxels ``(B, T, K, H, W)`` -> ``[Fs1..Fs4]``, ``Fs_i (B, C_i, T_i, H_i, W_i)``.

    ``scale1`` projects K bins to ``C_1`` at full resolution; ``scale2..4`` each downsample by
    ``temporal_strides[i-2]`` in time and ``spatial_strides[i-2]`` in space (defaults keep T and
    halve H, W, matching VRT stages 1-4 at 1, 1/2, 1/4, 1/8). Every scale ends with
    ``blocks_per_scale`` residual blocks. The scales are callable submodules run in order so
    forward hooks time them. ``num_scales < 4`` builds and returns only the first scales (a
    fusion that stops at stage 2 needs no 1/4 and 1/8 features).
    """

    def __init__(
        self,
        in_channels: int,
        channels_per_scale: Sequence[int] = (96, 96, 96, 96),
        temporal_strides: Sequence[int] = (1, 1, 1),
        spatial_strides: Sequence[int] = (2, 2, 2),
        blocks_per_scale: int = 2,
        use_checkpoint: bool = False,
        num_scales: int = 4,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels (spike bins K) must be >= 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.channels_per_scale = _check_four("channels_per_scale", channels_per_scale, 4)
        self.temporal_strides = _check_four("temporal_strides", temporal_strides, 3)
        self.spatial_strides = _check_four("spatial_strides", spatial_strides, 3)
        if not 1 <= num_scales <= 4:
            raise ValueError(f"num_scales must be in 1..4, got {num_scales}")
        self.num_scales = num_scales
        self.use_checkpoint = use_checkpoint
        c = self.channels_per_scale
        self.scale1 = EncoderScale(self.in_channels, c[0], num_blocks=blocks_per_scale)
        for i in range(1, num_scales):
            setattr(self, f"scale{i + 1}", EncoderScale(
                c[i - 1], c[i], temporal_stride=self.temporal_strides[i - 1],
                spatial_stride=self.spatial_strides[i - 1], num_blocks=blocks_per_scale))

    def scales(self) -> list[EncoderScale]:
        return [getattr(self, f"scale{i + 1}") for i in range(self.num_scales)]

    def forward(self, spike: Tensor) -> list[Tensor]:
        """``spike (B, T, K, H, W)`` -> ``num_scales`` tensors ``(B, C_i, T_i, H_i, W_i)``."""
        if spike.ndim != 5 or spike.shape[2] != self.in_channels:
            raise ValueError(
                f"SpikeEncoder3D expects spike (B, T, K={self.in_channels}, H, W), got {tuple(spike.shape)}")
        x = spike.permute(0, 2, 1, 3, 4)  # (B, K, T, H, W)
        feats = []
        for scale in self.scales():
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(scale, x, use_reentrant=False)
            else:
                x = scale(x)
            feats.append(x)
        return feats
