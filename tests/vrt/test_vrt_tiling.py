"""Tiled inference: equal to untiled where one tile suffices, exact stitching, bounded tiles."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.vrt import VRT, tiled_forward


def test_one_tile_equals_untiled(tiny_vrt: VRT, tiny_clip: torch.Tensor, tiny_out: torch.Tensor) -> None:
    out = tiled_forward(tiny_vrt, tiny_clip, tile=(8, 48, 48), tile_overlap=(2, 20, 20))
    torch.testing.assert_close(out, tiny_out, rtol=0, atol=0)
    assert not out.requires_grad


class _Recorder(torch.nn.Module):
    """Pixel-wise stand-in for a network: records tile shapes, demands sizes like VRT."""

    input_multiple = 8
    min_input_hw = (16, 24)

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0 and x.shape[-2] >= 16 and x.shape[-1] >= 24
        out = x[:, :, :2] * 3.0 - 1.0
        return out if extra is None else out + extra[:, :, :1]


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((1, 7, 3, 50, 70), (4, 24, 32), (2, 8, 10)), ((2, 5, 3, 20, 30), (40, 128, 128), (2, 20, 20)),
     ((1, 9, 3, 64, 40), (3, 16, 24), (1, 4, 6)), ((1, 4, 3, 33, 41), (0, 0, 0), (2, 20, 20))],
)
def test_stitching_is_exact_for_pixelwise_model(shape, tile, overlap) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    model = _Recorder()
    out = tiled_forward(model, x, tile=tile, tile_overlap=overlap)
    torch.testing.assert_close(out, x[:, :, :2] * 3.0 - 1.0, rtol=1e-6, atol=1e-6)

    def padded(size: int, tile_size: int, minimum: int) -> int:  # tile, or the padded input if smaller
        size = min(size, tile_size) if tile_size else size
        return max(-(-size // 8) * 8, minimum)

    # memory is bounded by the tile, not the video
    assert {s[1] for s in model.shapes} == {min(tile[0] or shape[1], shape[1])}
    assert {s[3:] for s in model.shapes} == {(padded(shape[3], tile[1], 16), padded(shape[4], tile[2], 24))}


def test_several_aligned_inputs_are_tiled_together() -> None:
    gen = torch.Generator().manual_seed(1)
    rgb, spike = torch.rand(1, 6, 3, 40, 56, generator=gen), torch.rand(1, 6, 5, 40, 56, generator=gen)
    out = tiled_forward(_Recorder(), rgb, spike, tile=(4, 24, 24), tile_overlap=(2, 8, 8))
    torch.testing.assert_close(out, rgb[:, :, :2] * 3.0 - 1.0 + spike[:, :, :1], rtol=1e-6, atol=1e-6)


def test_overlapping_frames_are_averaged() -> None:
    x = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(1, 5, 1, 8, 8).contiguous()

    def clip_mean(c: torch.Tensor) -> torch.Tensor:  # output depends on which frames share the clip
        return c.mean(dim=1, keepdim=True).expand_as(c)

    out = tiled_forward(clip_mean, x, tile=(3, 0, 0), tile_overlap=(1, 0, 0), size_multiple=1, min_size=(1, 1))
    # clips [0,1,2] (mean 1) and [2,3,4] (mean 3): frame 2 averages both
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0]))


def test_patch_borders_drop_half_the_overlap() -> None:
    columns = torch.arange(12.0).view(1, 1, 1, 1, 12).expand(1, 2, 1, 1, 12).contiguous()

    def first_column(c: torch.Tensor) -> torch.Tensor:  # each patch paints the column it starts at
        return c[..., :1].expand_as(c).clone()

    out = tiled_forward(first_column, columns, tile=(0, 1, 8), tile_overlap=(0, 0, 4), size_multiple=1, min_size=(1, 1))
    # patches start at 0 and 4; each drops overlap // 2 = 2 columns at the inner border
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor([0.0] * 6 + [4.0] * 6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(tile=(4, 20, 24)), r"multiples of 8 and at least \[16, 24\]"),
     (dict(tile=(4, 24, 24), tile_overlap=(2, 24, 4)), "smaller than tile"),
     (dict(tile=(4, 24)), r"\[frames, height, width\]")],
)
def test_bad_tiles_raise(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiled_forward(_Recorder(), torch.rand(1, 4, 3, 32, 32), **kwargs)


def test_mismatched_clips_raise() -> None:
    with pytest.raises(ValueError, match=r"B, T, H, W = \(1, 4, 32, 32\), got \(1, 3, 3, 32, 32\)"):
        tiled_forward(_Recorder(), torch.rand(1, 4, 3, 32, 32), torch.rand(1, 3, 3, 32, 32))
