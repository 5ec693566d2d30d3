"""vrt_spike.restore: temporal windows, padding to the network's sizes and back, 1-frame clips."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vrt_spike.restore import describe_tile, forward_calls, restore_clip, tile_spec


class _FrameIndexNet(nn.Module):
    """Output frame t = input frame t + (t's position inside the window); records the shapes it sees."""

    input_multiple = 8
    min_input_hw = (40, 40)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, blur: Tensor, spike: Tensor | None = None) -> Tensor:
        self.seen.append(tuple(blur.shape))
        if spike is not None:
            assert spike.shape[:2] == blur.shape[:2] and spike.shape[-2:] == blur.shape[-2:]
        h, w = blur.shape[-2:]
        assert h % self.input_multiple == 0 and w % self.input_multiple == 0 and h >= 40 and w >= 40
        position = torch.arange(blur.shape[1], dtype=blur.dtype).view(1, -1, 1, 1, 1)
        return blur + position


def test_overlapping_windows_are_averaged_and_odd_sizes_cropped_back() -> None:
    net = _FrameIndexNet()
    blur, spike = torch.rand(1, 5, 3, 25, 42), torch.rand(1, 5, 8, 25, 42)
    out = restore_clip(net, net, blur, spike, {"tile": [3, 0, 0], "tile_overlap": [1, 0, 0]})
    assert out.shape == blur.shape
    # windows [0, 3) and [2, 5): frame 2 is position 2 of the first and 0 of the second -> mean 1
    expected = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0]).view(1, 5, 1, 1, 1)
    torch.testing.assert_close(out, blur + expected)
    assert net.seen == [(1, 3, 3, 40, 48)] * 2  # 25 x 42 mirror-padded to the multiple of 8 / minimum 40
    assert forward_calls(5, 25, 42, {"tile": [3, 0, 0], "tile_overlap": [1, 0, 0]}) == 2


def test_clip_shorter_than_the_window_and_single_frame() -> None:
    net = _FrameIndexNet()
    blur = torch.rand(1, 3, 3, 40, 40)
    torch.testing.assert_close(restore_clip(net, net, blur, None, {"tile": [6, 0, 0], "tile_overlap": [2, 0, 0]}),
                               blur + torch.arange(3.0).view(1, 3, 1, 1, 1))
    single = torch.rand(1, 1, 3, 40, 40)
    out = restore_clip(net, net, single, None, {"tile": [6, 0, 0], "tile_overlap": [2, 0, 0]})
    assert out.shape == single.shape and net.seen[-1] == (1, 2, 3, 40, 40)  # shown twice, first output kept
    torch.testing.assert_close(out, single)
    assert forward_calls(1, 40, 40, None) == 1


def test_spatial_tiles_cover_large_frames() -> None:
    net = _FrameIndexNet()
    blur = torch.rand(1, 2, 3, 100, 90)
    out = restore_clip(net, net, blur, None, {"tile": [0, 48, 48], "tile_overlap": [0, 8, 8]})
    torch.testing.assert_close(out, blur + torch.arange(2.0).view(1, 2, 1, 1, 1))
    assert len(net.seen) == forward_calls(2, 100, 90, {"tile": [0, 48, 48], "tile_overlap": [0, 8, 8]}) == 3 * 3  # rows 0, 40, 52; columns 0, 40, 42


def test_tile_spec_errors_name_the_key() -> None:
    assert tile_spec(None) == {"tile": [0, 0, 0], "tile_overlap": [0, 0, 0]}
    with pytest.raises(ValueError, match=r"module.tile.tile\[0\].*>= 2 frames.*got 1"):
        tile_spec({"tile": [1, 0, 0]})
    with pytest.raises(ValueError, match=r"module.tile: unknown keys \['size'\]"):
        tile_spec({"size": [6, 0, 0]})


def test_non_finite_input_raises_a_clear_error() -> None:
    net = _FrameIndexNet()
    blur, spike = torch.rand(1, 3, 3, 40, 48), torch.rand(1, 3, 8, 40, 48)
    spike[0, 1, 2, 5, 7] = float("nan")
    spike[0, 2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"spike of shape \(1, 3, 8, 40, 48\) has 2 non-finite values"):
        restore_clip(net, net, blur, spike)
    assert net.seen == []  # refused before any network call


def test_describe_tile_says_how_a_figure_was_restored() -> None:
    assert describe_tile({"tile": [2, 0, 0], "tile_overlap": [1, 0, 0]}) == "windows of 2 frames overlapping by 1"
    assert describe_tile(None) == "whole clips in one window"
    assert describe_tile({"tile": [6, 256, 0], "tile_overlap": [2, 20, 0]}) == (
        "windows of 6 frames overlapping by 2, spatial tiles of 256xfull overlapping by 20x0")
