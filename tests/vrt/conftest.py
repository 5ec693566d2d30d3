"""Tiny VRT configurations shared by the tests in this folder."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from vrt_spike.models.vrt import VRT

# Smallest valid input: H, W multiples of 8, > 32 (SpyNet pyramid), >= 8 * window (stage-4 mutual attention).
TINY_KWARGS: dict[str, Any] = dict(
    upscale=1,
    img_size=[4, 40, 40],
    window_size=[2, 4, 4],
    depths=[2] * 7 + [2] * 2,
    indep_reconsts=[8],
    embed_dims=[16] * 7 + [24] * 2,
    num_heads=[2] * 9,
    deformable_groups=2,
    drop_path_rate=0.0,
)

GOPRO_KWARGS: dict[str, Any] = dict(
    upscale=1,
    img_size=[6, 192, 192],
    window_size=[6, 8, 8],
    depths=[8] * 7 + [4] * 4,
    indep_reconsts=[9, 10],
    embed_dims=[96] * 7 + [120] * 4,
    num_heads=[6] * 11,
    pa_frames=2,
    deformable_groups=16,
)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (the zero-initialised offset convs too) so that every
    path of the network changes the output: weights ~ N(0, 0.25/fan_in), biases ~ N(0, 0.05^2),
    norm scales ~ 1 + N(0, 0.05^2). Buffers keep their values. A gain of 0.5 keeps the deep
    stages influential without making the random network chaotic (at gain 1, fp32 rounding
    differences grow ~3x per stage)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(0.5 * noise / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.05 * noise)
            else:
                p.copy_(0.05 * noise)
    return model


@pytest.fixture(scope="session")
def tiny_vrt() -> VRT:
    """Randomised tiny VRT in eval mode, shared by the session: tests must not modify it."""
    return randomize_(VRT(**TINY_KWARGS)).eval()


@pytest.fixture(scope="session")
def tiny_clip() -> torch.Tensor:
    """(B=1, T=3, 3, 40, 48): odd T and a width that pads at stages 3 and 4."""
    return torch.rand(1, 3, 3, 40, 48, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def tiny_out(tiny_vrt: VRT, tiny_clip: torch.Tensor) -> torch.Tensor:
    """``tiny_vrt(tiny_clip)`` without hooks."""
    with torch.no_grad():
        return tiny_vrt(tiny_clip)


@pytest.fixture
def tiny_kwargs() -> dict[str, Any]:
    return dict(TINY_KWARGS)


@pytest.fixture
def gopro_kwargs() -> dict[str, Any]:
    return dict(GOPRO_KWARGS)


@pytest.fixture
def randomize():
    """The :func:`randomize_` helper (test modules cannot import conftest under importlib mode)."""
    return randomize_
