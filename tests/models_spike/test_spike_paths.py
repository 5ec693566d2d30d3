"""The short spike paths: S-SDM residual base and the spike head (reach, gradients, switching off)."""
from __future__ import annotations

import pytest
import torch

from vrt_spike.models.spike_floor import sdm, window_weights
from vrt_spike.models.vrt_with_spike import VRTWithSpike

from tests.models_spike.test_vrt_with_spike import K, build, inputs


def _zero_last(net: VRTWithSpike) -> VRTWithSpike:
    torch.nn.init.zeros_(net.vrt.conv_last.weight)
    torch.nn.init.zeros_(net.vrt.conv_last.bias)
    return net


def test_defaults_are_todays_model() -> None:
    """residual_base=blur and no head build exactly the parameters, and compute exactly the output,
    of a model built without the new arguments."""
    old, new = build(), build(residual_base="blur", spike_head=False)
    assert new.spike_head is None
    assert [n for n, _ in old.named_parameters()] == [n for n, _ in new.named_parameters()]
    old.load_state_dict(new.state_dict())
    rgb, spike = inputs()
    with torch.no_grad():
        assert torch.equal(old(rgb, spike), new(rgb, spike))


def test_sdm_base_starts_at_the_spike_reading() -> None:
    net = _zero_last(build(residual_base="sdm", sharp_instant=0.625, sharp_width=0.25)).eval()
    rgb, spike = inputs()
    with torch.no_grad():
        out = net(rgb, spike)
    # K=4 bins: the window [0.5, 0.75] is bin 2 alone
    expected = (rgb * (spike[:, :, 2:3] + 1e-4) / (spike.mean(2, keepdim=True) + 1e-4)).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out, sdm(rgb, spike, window_weights(spike.shape[2], 0.625, 0.25)), atol=0, rtol=0)
    # the RGB-only model has nothing but the blur to add its residual to
    assert build(use_spike=False, residual_base="sdm").residual_base == "blur"
    with pytest.raises(ValueError, match=r"model.residual_base must be one of \('blur', 'sdm'\), got 'tfp'"):
        build(residual_base="tfp")


def test_spike_head_is_zero_at_init_and_its_gradient_reaches_the_encoder() -> None:
    net = build(spike_head=True)
    reference = build()
    reference.load_state_dict(net.state_dict(), strict=False)
    rgb, spike = inputs()
    with torch.no_grad():
        assert torch.equal(net(rgb, spike), reference(rgb, spike))  # zero head: today's output at step 0
    net.vrt.requires_grad_(False)
    net(rgb, spike).square().mean().backward()
    assert net.spike_head.proj.weight.grad.abs().sum() > 0  # the head learns from step 1
    # one step later the head is non-zero and the encoder's scale 1 gets a gradient through it,
    # while the fusion (zero out_proj) still passes none
    with torch.no_grad():
        net.spike_head.proj.weight.normal_(std=0.1)
    net.zero_grad(set_to_none=True)
    net(rgb, spike).square().mean().backward()
    assert net.spike_encoder.scale1.parameters().__next__().grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.spike_encoder.scale4.parameters())


def test_spike_head_reads_scale1_even_without_a_stage1_fusion() -> None:
    net = build(spike_head=True, fuse_stages=(2, 3, 4))
    with torch.no_grad():
        net.spike_head.proj.weight.normal_(std=0.1)
    rgb, spike = inputs()
    out = net(rgb, spike)
    assert out.shape == rgb.shape
    blur = torch.zeros(1, 2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"SpikeRefineHead expects features \(B, C=8, T, H, W\)"):
        net.spike_head(torch.zeros(1, K, 2, 8, 8), blur, blur)
    with pytest.raises(ValueError, match=r"expects blur and base \(B, T, 3, H, W\) = \(1, 2, 3, 8, 8\)"):
        net.spike_head(torch.zeros(1, 8, 2, 8, 8), blur, torch.zeros(1, 2, 3, 4, 4))
