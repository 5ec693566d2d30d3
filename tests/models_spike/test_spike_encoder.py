"""SpikeEncoder3D / SpikeTemporalSA shapes, named callable scales and input validation."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.spike import SpikeEncoder3D, SpikeTemporalSA


def test_encoder_shapes_with_non_default_strides_and_channels() -> None:
    enc = SpikeEncoder3D(in_channels=5, channels_per_scale=[4, 8, 8, 12], temporal_strides=[2, 1, 3],
                         spatial_strides=[2, 1, 3])
    feats = enc(torch.rand(2, 6, 5, 36, 30))
    # T: 6 -> 3 -> 3 -> 1; H: 36 -> 18 -> 18 -> 6; W: 30 -> 15 -> 15 -> 5 (ceil division)
    assert [tuple(f.shape) for f in feats] == [
        (2, 4, 6, 36, 30), (2, 8, 3, 18, 15), (2, 8, 3, 18, 15), (2, 12, 1, 6, 5)]
    sa = SpikeTemporalSA([4, 8, 8, 12], heads=2, chunk_size=4, max_batch_tokens=64)
    assert [f.shape for f in sa(feats)] == [f.shape for f in feats]


def test_encoder_default_pyramid_matches_vrt_scales() -> None:
    enc = SpikeEncoder3D(in_channels=8, channels_per_scale=[6, 6, 6, 6])
    feats = enc(torch.rand(1, 4, 8, 32, 24))
    assert [tuple(f.shape[2:]) for f in feats] == [(4, 32, 24), (4, 16, 12), (4, 8, 6), (4, 4, 3)]


def test_scales_are_callable_submodules_run_in_order() -> None:
    enc = SpikeEncoder3D(in_channels=2, channels_per_scale=[4, 4, 4, 4])
    sa = SpikeTemporalSA([4, 4, 4, 4], heads=1)
    order: list[str] = []
    for prefix, module in (("enc", enc), ("sa", sa)):
        for i in range(1, 5):
            getattr(module, f"scale{i}").register_forward_hook(
                lambda m, a, o, name=f"{prefix}.scale{i}": order.append(name))
    sa(enc(torch.rand(1, 3, 2, 16, 16)))
    assert order == [f"enc.scale{i}" for i in range(1, 5)] + [f"sa.scale{i}" for i in range(1, 5)]


def test_checkpointed_encoder_matches_plain() -> None:
    enc = SpikeEncoder3D(in_channels=3, channels_per_scale=[4, 4, 8, 8])
    x = torch.rand(1, 3, 3, 16, 16)
    plain = [f.sum() for f in enc(x)]
    checkpointed = SpikeEncoder3D(in_channels=3, channels_per_scale=[4, 4, 8, 8], use_checkpoint=True)
    checkpointed.load_state_dict(enc.state_dict())
    x_ck = x.clone().requires_grad_()
    ck = checkpointed(x_ck)
    torch.testing.assert_close(torch.stack([f.sum() for f in ck]), torch.stack(plain))
    sum(f.sum() for f in ck).backward()
    assert all(p.grad is not None for p in checkpointed.parameters())


def test_bad_inputs_raise_with_shapes() -> None:
    enc = SpikeEncoder3D(in_channels=8, channels_per_scale=[4, 4, 4, 4])
    with pytest.raises(ValueError, match=r"K=8.*\(1, 4, 6, 16, 16\)"):
        enc(torch.rand(1, 4, 6, 16, 16))
    with pytest.raises(ValueError, match="channels_per_scale must hold 4"):
        SpikeEncoder3D(in_channels=8, channels_per_scale=[4, 4, 4])
    with pytest.raises(ValueError, match="temporal_strides"):
        SpikeEncoder3D(in_channels=8, temporal_strides=[1, 0, 1])
    sa = SpikeTemporalSA([4, 4, 4, 4], heads=2)
    with pytest.raises(ValueError, match=r"C=4.*\(1, 6, 2, 4, 4\)"):
        sa([torch.rand(1, 6, 2, 4, 4)] * 4)
    with pytest.raises(ValueError, match="divisible by heads"):
        SpikeTemporalSA([6, 6, 6, 6], heads=4)


def test_partial_pyramid_and_pass_through_scales() -> None:
    enc = SpikeEncoder3D(in_channels=2, channels_per_scale=[4, 4, 8, 8], num_scales=2)
    assert not hasattr(enc, "scale3")
    feats = enc(torch.rand(1, 3, 2, 16, 16))
    assert [tuple(f.shape) for f in feats] == [(1, 4, 3, 16, 16), (1, 4, 3, 8, 8)]
    sa = SpikeTemporalSA([4, 4, 8, 8], heads=2, scales=[2])
    out = sa(feats)
    assert out[0] is feats[0] and not torch.equal(out[1], feats[1])
    with pytest.raises(ValueError, match="scales must be values in 1..4"):
        SpikeTemporalSA([4, 4, 8, 8], heads=2, scales=[0])
