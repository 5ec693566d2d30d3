"""SpikeRefineHead: a short path from the full-resolution spike features to the output."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class SpikeRefineHead(nn.Module):
    """Per-frame correction read from the scale-1 spike features, the blurry frame and a base image.

    ``feat (B, C, T, H, W)``, ``blur (B, T, 3, H, W)``, ``base (B, T, 3, H, W)`` ->
    ``(B, T, 3, H, W)``, added to the output. A few ``3 x 3`` convolutions: the spike reading's
    errors are multiplicative in the blurry frame's colours (S-SDM: ``sharp = blur * ratio``), so
    the head sees the colours and the reading besides the (luminance-only) spike features. The
    last convolution is zero-initialised: at step 0 the output is the backbone's. Its gradient
    reaches the spike encoder two modules from the loss, where the fusion's sits behind VRT's
    whole body (stages 5-8, ``conv_after_body``, ``conv_last``).
    """

    def __init__(self, in_channels: int, width: int = 32, depth: int = 3, out_chans: int = 3) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"spike_head needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c = in_channels + 2 * out_chans
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.GELU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c, out_chans, 3, padding=1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feat: Tensor, blur: Tensor, base: Tensor) -> Tensor:
        if feat.ndim != 5 or feat.shape[1] != self.in_channels:
            raise ValueError(f"SpikeRefineHead expects features (B, C={self.in_channels}, T, H, W), got {tuple(feat.shape)}")
        b, _, t, h, w = feat.shape
        if blur.shape != (b, t, self.proj.out_channels, h, w) or base.shape != blur.shape:
            raise ValueError(f"SpikeRefineHead expects blur and base (B, T, 3, H, W) = {(b, t, self.proj.out_channels, h, w)}, "
                             f"got {tuple(blur.shape)} and {tuple(base.shape)}")
        x = torch.cat([rearrange(feat, "b c t h w -> (b t) c h w"), rearrange(blur, "b t c h w -> (b t) c h w"),
                       rearrange(base, "b t c h w -> (b t) c h w").to(blur.dtype)], dim=1)
        return rearrange(self.proj(self.body(x)), "(b t) c h w -> b t c h w", b=b)
