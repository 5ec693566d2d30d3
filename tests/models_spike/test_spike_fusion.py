"""MultiScaleTemporalCrossAttnFuse: zero-initialised identity, stage selection, validation."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.fusion import MultiScaleTemporalCrossAttnFuse


def test_zero_init_is_identity_and_only_configured_stages_exist() -> None:
    fuse = MultiScaleTemporalCrossAttnFuse([4, 8, 8, 16], fuse_stages=[2, 3, 4], heads=2)
    assert not hasattr(fuse, "stage1")
    assert [name for name, _ in fuse.named_children()] == ["stage2", "stage3", "stage4"]
    rgb, spike = torch.randn(1, 8, 6, 8, 8), torch.randn(1, 8, 2, 8, 8)
    assert torch.equal(fuse(rgb, spike, stage=2), rgb)
    with pytest.raises(ValueError, match=r"stage 1 is not fused; fuse_stages=\[2, 3, 4\]"):
        fuse(rgb, spike, stage=1)


def test_output_depends_on_spike_once_projection_is_nonzero() -> None:
    fuse = MultiScaleTemporalCrossAttnFuse([8, 8, 8, 8], fuse_stages=[1], heads=2)
    torch.nn.init.normal_(fuse.stage1.out_proj.weight, std=0.1)
    rgb = torch.randn(1, 8, 4, 5, 5)
    a = fuse(rgb, torch.randn(1, 8, 4, 5, 5), stage=1)
    b = fuse(rgb, torch.randn(1, 8, 4, 5, 5), stage=1)
    assert a.shape == rgb.shape and (a - b).abs().max() > 1e-3


def test_query_time_position_selects_matching_spike_frame() -> None:
    """Frames are ordered: permuting the spike frames changes the fused output (position encodings)."""
    fuse = MultiScaleTemporalCrossAttnFuse([8, 8, 8, 8], fuse_stages=[1], heads=2)
    torch.nn.init.normal_(fuse.stage1.out_proj.weight, std=0.1)
    rgb, spike = torch.randn(1, 8, 4, 3, 3), torch.randn(1, 8, 4, 3, 3)
    assert (fuse(rgb, spike, 1) - fuse(rgb, spike.flip(2), 1)).abs().max() > 1e-4


def test_bad_shapes_and_config_raise() -> None:
    fuse = MultiScaleTemporalCrossAttnFuse([8, 8, 8, 8], fuse_stages=[1], heads=2)
    with pytest.raises(ValueError, match=r"rgb \(1, 8, 4, 6, 6\) and spike \(1, 8, 4, 3, 3\)"):
        fuse(torch.randn(1, 8, 4, 6, 6), torch.randn(1, 8, 4, 3, 3), 1)
    with pytest.raises(ValueError, match=r"rgb \(1, 4, 4, 3, 3\)"):
        fuse(torch.randn(1, 4, 4, 3, 3), torch.randn(1, 8, 4, 3, 3), 1)
    with pytest.raises(ValueError, match="fuse_stages"):
        MultiScaleTemporalCrossAttnFuse([8, 8, 8, 8], fuse_stages=[0, 5])
