"""Parallel alignment: frame pairs batched per call equal upstream's one-pair-per-call loop."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.vrt import VRT
from vrt_spike.models.vrt.stage import Stage
from vrt_spike.models.vrt.warp import flow_warp, frame_pairs, pairs_to_frames


def test_frame_pairs_order_and_zero_ends() -> None:
    b, t = 2, 4
    x = torch.arange(b * t, dtype=torch.float32).view(b, t, 1, 1, 1)  # every frame its own id
    flows_b = torch.arange(b * (t - 1), dtype=torch.float32).view(b, t - 1, 1, 1, 1)
    neighbours, targets, flows = frame_pairs(x, flows_b, -flows_b - 1)
    assert neighbours.shape[0] == targets.shape[0] == flows.shape[0] == b * 2 * (t - 1)
    rows = neighbours.view(b, 2 * (t - 1)), targets.view(b, 2 * (t - 1)), flows.view(b, 2 * (t - 1))
    for i in range(b):
        ids = x[i].flatten()
        for p in range(t - 1):  # backward pair p: frame p+1 onto p with flows_backward[:, p]
            assert (rows[0][i, p], rows[1][i, p], rows[2][i, p]) == (ids[p + 1], ids[p], flows_b[i, p].item())
        for p in range(t - 1):  # forward pair: frame p onto p+1 with flows_forward[:, p]
            q = t - 1 + p
            assert (rows[0][i, q], rows[1][i, q], rows[2][i, q]) == (ids[p], ids[p + 1], -flows_b[i, p].item() - 1)
    backward, forward = pairs_to_frames(targets + 100, b)  # indexed by target frame
    assert backward.shape == forward.shape == x.shape
    assert torch.equal(backward[:, :-1], x[:, :-1] + 100) and torch.equal(backward[:, -1], torch.zeros_like(x[:, -1]))
    assert torch.equal(forward[:, 1:], x[:, 1:] + 100) and torch.equal(forward[:, 0], torch.zeros_like(x[:, 0]))


def _upstream_loop(stage: Stage, x: torch.Tensor, flows_b: torch.Tensor, flows_f: torch.Tensor):
    """Upstream ``get_aligned_feature_2frames``: one warp and one deformable alignment per pair."""
    n = x.shape[1]
    backward = [torch.zeros_like(x[:, -1])]
    for i in range(n - 1, 0, -1):
        flow = flows_b[:, i - 1]
        warped = flow_warp(x[:, i], flow.permute(0, 2, 3, 1), "bilinear")
        backward.insert(0, stage.pa_deform(x[:, i], [warped], x[:, i - 1], [flow]))
    forward = [torch.zeros_like(x[:, 0])]
    for i in range(n - 1):
        flow = flows_f[:, i]
        warped = flow_warp(x[:, i], flow.permute(0, 2, 3, 1), "bilinear")
        forward.append(stage.pa_deform(x[:, i], [warped], x[:, i + 1], [flow]))
    return torch.stack(backward, 1), torch.stack(forward, 1)


@pytest.mark.parametrize(("pixels", "calls"), [(1, 12), (3 * 64, 4), (128 * 128, 1)])
def test_batched_alignment_equals_one_pair_per_call(tiny_kwargs: dict, randomize, pixels: int, calls: int) -> None:
    stage = randomize(VRT(**tiny_kwargs)).stage1
    stage.align_pixels_per_call = pixels  # 8 x 8 frames: 1, 3 or all 12 pairs per call
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 8, 8, generator=gen)
    flows_b, flows_f = (3 * torch.randn(2, 3, 2, 8, 8, generator=gen) for _ in range(2))
    seen: list[int] = []
    handle = stage.pa_deform.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        got = stage._aligned_neighbours(x, flows_b, flows_f)
    finally:
        handle.remove()
    assert len(seen) == calls and sum(seen) == 2 * 2 * 3
    expected = _upstream_loop(stage, x, flows_b, flows_f)
    for g, e in zip(got, expected):
        assert g.abs().max() > 0.1  # offsets and weights are random: a real alignment
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_input_warping_equals_one_pair_per_call() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 3, 16, 16, generator=gen)
    flows_b, flows_f = (4 * torch.randn(2, 3, 2, 16, 16, generator=gen) for _ in range(2))
    backward, forward = VRT.get_aligned_images(x, flows_b, flows_f)
    assert backward.shape == forward.shape == (2, 4, 12, 16, 16)
    for t in range(3):
        expected = flow_warp(x[:, t + 1], flows_b[:, t].permute(0, 2, 3, 1), "nearest4")
        assert torch.equal(backward[:, t], expected)
        expected = flow_warp(x[:, t], flows_f[:, t].permute(0, 2, 3, 1), "nearest4")
        assert torch.equal(forward[:, t + 1], expected)
    assert not backward[:, -1].any() and not forward[:, 0].any()
