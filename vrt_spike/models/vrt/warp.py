"""Optical flow (SpyNet), flow warping and flow-guided deformable alignment."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vrt_spike.models.vrt.deform_conv import modulated_deform_conv2d


def flow_warp(x: Tensor, flow: Tensor, interp_mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Warp ``x (N, C, H, W)`` by ``flow (N, H, W, 2)`` (pixels, x then y), ``align_corners=True``.

    ``interp_mode="nearest4"`` samples the four integer neighbours (floor/ceil in x and y) with
    nearest interpolation and concatenates them: ``(N, 4C, H, W)``. Like upstream, it passes no
    gradient to the flow.
    """
    _, _, h, w = x.shape
    grid_y, grid_x = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device), torch.arange(w, dtype=x.dtype, device=x.device),
        indexing="ij",
    )
    vgrid = torch.stack((grid_x, grid_y), 2).float() + flow
    sx, sy = max(w - 1, 1), max(h - 1, 1)
    if interp_mode == "nearest4":
        xs = (2.0 * torch.floor(vgrid[..., 0]) / sx - 1.0, 2.0 * torch.ceil(vgrid[..., 0]) / sx - 1.0)
        ys = (2.0 * torch.floor(vgrid[..., 1]) / sy - 1.0, 2.0 * torch.ceil(vgrid[..., 1]) / sy - 1.0)
        corners = [(xs[0], ys[0]), (xs[0], ys[1]), (xs[1], ys[0]), (xs[1], ys[1])]
        return torch.cat(
            [
                F.grid_sample(x, torch.stack(c, dim=3), mode="nearest", padding_mode=padding_mode, align_corners=True)
                for c in corners
            ],
            1,
        )
    grid = torch.stack((2.0 * vgrid[..., 0] / sx - 1.0, 2.0 * vgrid[..., 1] / sy - 1.0), dim=3)
    return F.grid_sample(x, grid, mode=interp_mode, padding_mode=padding_mode, align_corners=True)


def frame_pairs(x: Tensor, flows_backward: Tensor, flows_forward: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every neighbour -> frame alignment pair of a clip, as one batch.

    ``x (B, T, C, H, W)``, flows ``(B, T-1, 2, H, W)`` -> ``(neighbours, targets, flows)`` with
    ``B * 2(T-1)`` rows: first the backward pairs (frame t+1 onto t, ``flows_backward[:, t]``),
    then the forward pairs (frame t onto t+1, ``flows_forward[:, t]``), batch-major.
    """
    neighbours = torch.cat([x[:, 1:], x[:, :-1]], 1)
    targets = torch.cat([x[:, :-1], x[:, 1:]], 1)
    flows = torch.cat([flows_backward, flows_forward], 1)
    return neighbours.flatten(0, 1), targets.flatten(0, 1), flows.flatten(0, 1)


def pairs_to_frames(pairs: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """Per-pair results ``(B * 2(T-1), ...)`` in :func:`frame_pairs` order -> ``(backward, forward)``,
    each ``(B, T, ...)`` indexed by the target frame, zeros where a frame has no such neighbour
    (backward: the last frame; forward: the first)."""
    pairs = pairs.unflatten(0, (batch, -1))
    n = pairs.shape[1] // 2 + 1
    zeros = torch.zeros_like(pairs[:, :1])
    return torch.cat([pairs[:, : n - 1], zeros], 1), torch.cat([zeros, pairs[:, n - 1 :]], 1)


class SpyNetBasicModule(nn.Module):
    """One pyramid level of SpyNet: 5 conv layers predicting a flow residual from 8 channels."""

    def __init__(self) -> None:
        super().__init__()
        channels = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Conv2d(cin, cout, kernel_size=7, stride=1, padding=3))
            if i < len(channels) - 2:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SpyNet (Ranjan & Black) with flows returned at several pyramid levels.

    Args:
        load_path: official SpyNet weight file (``{'params': ...}`` or raw state dict) or None for
            random init. Never downloads.
        return_levels: pyramid levels to return; level 5 is full resolution, 2 is 1/8.

    ``forward(ref, supp)``: two ``(N, 3, H, W)`` images in [0, 1] -> list of flows
    ``(N, 2, H / s, W / s)`` for s = 1, 2, 4, 8 (in that order, for levels [2, 3, 4, 5]).
    """

    def __init__(self, load_path: str | Path | None = None, return_levels: tuple[int, ...] = (5,)) -> None:
        super().__init__()
        self.return_levels = tuple(return_levels)
        self.basic_module = nn.ModuleList(SpyNetBasicModule() for _ in range(6))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if load_path is not None:
            from vrt_spike.models.vrt.checkpoint import load_spynet_weights

            load_spynet_weights(self, load_path)

    def _pyramid_flows(self, ref: Tensor, supp: Tensor, h: int, w: int, h_floor: int, w_floor: int) -> list[Tensor]:
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(5):
            refs.insert(0, F.avg_pool2d(refs[0], kernel_size=2, stride=2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], kernel_size=2, stride=2, count_include_pad=False))

        flow = refs[0].new_zeros(refs[0].shape[0], 2, refs[0].shape[2] // 2, refs[0].shape[3] // 2)
        flows: list[Tensor] = []
        for level, (r, s) in enumerate(zip(refs, supps)):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.shape[2] != r.shape[2]:
                up = F.pad(up, [0, 0, 0, 1], mode="replicate")
            if up.shape[3] != r.shape[3]:
                up = F.pad(up, [0, 1, 0, 0], mode="replicate")
            warped = flow_warp(s, up.permute(0, 2, 3, 1), interp_mode="bilinear", padding_mode="border")
            flow = self.basic_module[level](torch.cat([r, warped, up], 1)) + up
            if level in self.return_levels:
                scale = 2 ** (5 - level)
                out = F.interpolate(flow, size=(h // scale, w // scale), mode="bilinear", align_corners=False)
                fx = out[:, 0] * (float(w // scale) / float(w_floor // scale))
                fy = out[:, 1] * (float(h // scale) / float(h_floor // scale))
                flows.insert(0, torch.stack((fx, fy), 1))
        return flows

    def forward(self, ref: Tensor, supp: Tensor) -> list[Tensor]:
        if ref.shape != supp.shape:
            raise ValueError(f"SpyNet needs ref and supp of equal shape, got {tuple(ref.shape)} and {tuple(supp.shape)}")
        h, w = ref.shape[2:]
        h_floor, w_floor = math.ceil(h / 32.0) * 32, math.ceil(w / 32.0) * 32
        ref = F.interpolate(ref, size=(h_floor, w_floor), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_floor, w_floor), mode="bilinear", align_corners=False)
        return self._pyramid_flows(ref, supp, h, w, h_floor, w_floor)


class FlowGuidedDeformAlign(nn.Module):
    """Flow-guided modulated deformable conv (DCNv2) aligning a neighbour to the current frame.

    State-dict layout of the official ``DCNv2PackFlowGuided``: ``weight``, ``bias`` and the
    offset/mask predictor ``conv_offset.{0,2,4,6}``. Offsets are ``max_residue_magnitude *
    tanh(.)`` residues added to the flow (BasicVSR++).
    """

    def __init__(
        self, channels: int, deformable_groups: int, max_residue_magnitude: float, pa_frames: int = 2
    ) -> None:
        super().__init__()
        self.max_residue_magnitude = max_residue_magnitude
        self.pa_frames = pa_frames
        # Upstream keeps a (C, C, 3, 3) weight for every pa_frames; with pa_frames // 2 stacked
        # neighbours deform_conv2d then runs pa_frames // 2 weight groups.
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.conv_offset = nn.Sequential(
            nn.Conv2d((1 + pa_frames // 2) * channels + pa_frames, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, 3 * 9 * deformable_groups, 3, 1, 1),
        )
        bound = 1.0 / math.sqrt(channels * 9)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, x: Tensor, x_flow_warpeds: list[Tensor], x_current: Tensor, flows: list[Tensor]) -> Tensor:
        """``x (N, C*pa/2, H, W)`` neighbours, their flow-warped copies, the current frame and flows."""
        out = self.conv_offset(torch.cat(x_flow_warpeds + [x_current] + flows, dim=1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        chunks = torch.chunk(offset, len(flows), dim=1)
        offset = torch.cat(
            [o + f.flip(1).repeat(1, o.shape[1] // 2, 1, 1) for o, f in zip(chunks, flows)], dim=1
        )
        # fp32 on every device, as torchvision's CUDA autocast rule does: in bf16 a sampling position
        # near x = 64 is only resolved to 1/4 pixel.
        with torch.autocast(x.device.type, enabled=False):
            return modulated_deform_conv2d(
                x.float(), offset.float(), torch.sigmoid(mask.float()), self.weight.float(), self.bias.float()
            )
