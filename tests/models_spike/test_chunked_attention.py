"""Chunked per-pixel temporal attention equals the unchunked computation and respects its bound."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.chunked_attention import ChunkConfig, plan_spatial_chunks
from vrt_spike.models.fusion import MultiScaleTemporalCrossAttnFuse
from vrt_spike.models.spike import SpikeTemporalSA


@pytest.mark.parametrize("shape", ["square", "rows"])
@pytest.mark.parametrize("hw", [(17, 23), (64, 64), (5, 40)])
def test_plan_covers_grid_once_within_token_budget(shape: str, hw: tuple[int, int]) -> None:
    h, w = hw
    cfg = ChunkConfig(chunk_size=8, chunk_shape=shape, max_batch_tokens=300, adaptive_chunk=True)
    plan = plan_spatial_chunks(h, w, batch=2, tokens_per_pixel=6, cfg=cfg)
    hits = torch.zeros(h, w, dtype=torch.int64)
    for ys, xs in plan:
        hits[ys, xs] += 1
        pixels = (ys.stop - ys.start) * (xs.stop - xs.start)
        assert 2 * pixels * 6 <= 300
    assert torch.equal(hits, torch.ones_like(hits))
    assert len(plan) > 1


def test_plan_chunk_side_is_chunk_size_when_budget_allows() -> None:
    cfg = ChunkConfig(chunk_size=64, chunk_shape="square", max_batch_tokens=49152)
    plan = plan_spatial_chunks(256, 256, batch=2, tokens_per_pixel=6, cfg=cfg)
    assert len(plan) == 16 and plan[0] == (slice(0, 64), slice(0, 64))
    # batch 4 no longer fits 64x64x6 tokens: the side shrinks to floor(sqrt(49152 / 24)) = 45
    plan = plan_spatial_chunks(256, 256, batch=4, tokens_per_pixel=6, cfg=cfg)
    assert plan[0] == (slice(0, 45), slice(0, 45))


def test_non_adaptive_is_one_chunk_and_bad_config_rejected() -> None:
    cfg = ChunkConfig(chunk_size=4, max_batch_tokens=10, adaptive_chunk=False)
    assert plan_spatial_chunks(32, 32, batch=2, tokens_per_pixel=6, cfg=cfg) == [(slice(0, 32), slice(0, 32))]
    with pytest.raises(ValueError, match="chunk_shape"):
        ChunkConfig(chunk_shape="hexagon")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        ChunkConfig(max_batch_tokens=0)


def _sa(adaptive: bool, shape: str = "square", use_checkpoint: bool = False) -> SpikeTemporalSA:
    torch.manual_seed(1)
    return SpikeTemporalSA([8, 8, 16, 16], heads=2, mlp_ratio=2.0, chunk_size=5, chunk_shape=shape,
                           max_batch_tokens=200, adaptive_chunk=adaptive, use_checkpoint=use_checkpoint)


@pytest.mark.parametrize("shape", ["square", "rows"])
def test_sa_chunked_equals_unchunked_forward_and_backward(shape: str) -> None:
    feats = [torch.randn(2, c, t, s, s) for c, t, s in [(8, 5, 21), (8, 5, 11), (16, 3, 6), (16, 3, 3)]]
    chunked, whole = _sa(True, shape, use_checkpoint=True), _sa(False)
    inputs_a = [f.clone().requires_grad_() for f in feats]
    inputs_b = [f.clone().requires_grad_() for f in feats]
    out_a, out_b = chunked(inputs_a), whole(inputs_b)
    for a, b in zip(out_a, out_b):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    sum(o.square().sum() for o in out_a).backward()
    sum(o.square().sum() for o in out_b).backward()
    for a, b in zip(inputs_a, inputs_b):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-5)
    for (name, pa), pb in zip(chunked.named_parameters(), whole.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_fusion_chunked_equals_unchunked_with_different_time_lengths() -> None:
    def build(adaptive: bool) -> MultiScaleTemporalCrossAttnFuse:
        torch.manual_seed(2)
        fuse = MultiScaleTemporalCrossAttnFuse([8, 8, 8, 8], fuse_stages=[2], heads=2, chunk_size=3,
                                               max_batch_tokens=64, adaptive_chunk=adaptive)
        torch.nn.init.normal_(fuse.stage2.out_proj.weight, std=0.2)
        return fuse

    rgb, spike = torch.randn(2, 8, 6, 13, 9), torch.randn(2, 8, 3, 13, 9)
    a, b = build(True)(rgb, spike, stage=2), build(False)(rgb, spike, stage=2)
    assert a.shape == rgb.shape
    assert (a - rgb).abs().max() > 1e-2  # the perturbed projection really changes the features
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
