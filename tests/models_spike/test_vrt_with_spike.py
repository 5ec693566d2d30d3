"""VRTWithSpike: backbone equivalence, zero-init fusion, gradients, freezing, validation, loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vrt_spike.models.vrt import VRT
from vrt_spike.models.vrt_with_spike import VRTWithSpike

K = 4
VRT_KW = dict(upscale=1, img_size=[2, 40, 40], window_size=[2, 4, 4], depths=[2] * 7 + [1, 1], indep_reconsts=[8],
              embed_dims=[8] * 7 + [12, 12], num_heads=[2] * 9, pa_frames=2, deformable_groups=2, drop_path_rate=0.0)
SPIKE_KW = dict(heads=2, mlp_ratio=1.0, chunk_size=8, max_batch_tokens=256)


def build(use_spike: bool = True, fuse_stages=(1, 2, 3, 4), **overrides) -> VRTWithSpike:
    torch.manual_seed(0)
    kwargs = dict(vrt=VRT_KW, spike_encoder={"blocks_per_scale": 1}, spike_tsa=SPIKE_KW, fusion=SPIKE_KW,
                  num_bins=K, use_spike=use_spike, fuse_stages=fuse_stages)
    kwargs.update(overrides)
    return VRTWithSpike(**kwargs)


def inputs(t: int = 2, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(1, t, 3, size, size, generator=gen), torch.rand(1, t, K, size, size, generator=gen)


@pytest.fixture(scope="module")
def backbone_out() -> tuple[VRT, torch.Tensor]:
    torch.manual_seed(3)
    vrt = VRT(**VRT_KW).eval()
    rgb, _ = inputs()
    with torch.no_grad():
        return vrt, vrt(rgb)


def test_use_spike_false_is_the_backbone(backbone_out) -> None:
    vrt, expected = backbone_out
    net = build(use_spike=False).eval()
    assert [name for name, _ in net.named_children()] == ["vrt"]
    net.vrt.load_state_dict(vrt.state_dict())
    rgb, spike = inputs()
    with torch.no_grad():
        assert torch.equal(net(rgb), expected)
        assert torch.equal(net(rgb, spike), expected)  # spikes are ignored without a spike branch


def test_zero_init_fusion_leaves_vrt_output_unchanged_and_hooks_fire_in_order(backbone_out) -> None:
    vrt, expected = backbone_out
    net = build().eval()
    net.vrt.load_state_dict(vrt.state_dict())
    order: list[str] = []
    names = ["spike_encoder", "spike_tsa"] + [f"vrt.stage{i}" for i in range(1, 5)] + [f"fusion.stage{i}" for i in range(1, 5)]
    for name in names:
        net.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: order.append(name))
    rgb, spike = inputs()
    with torch.no_grad():
        out = net(rgb, spike)
    assert torch.equal(out, expected)
    assert order == ["spike_encoder", "spike_tsa", "vrt.stage1", "fusion.stage1", "vrt.stage2", "fusion.stage2",
                     "vrt.stage3", "fusion.stage3", "vrt.stage4", "fusion.stage4"]


def test_gradients_reach_every_spike_parameter_with_checkpointing() -> None:
    net = build(fuse_stages=(2, 3, 4))
    # stage 1 is not fused: no fusion block and no full-resolution spike attention exist for it
    assert not hasattr(net.fusion, "stage1") and not hasattr(net.spike_tsa, "scale1")
    for block in net.fusion.stages().values():
        torch.nn.init.normal_(block.out_proj.weight, std=0.1)
    # the model.spike_encoder/spike_tsa/fusion.use_checkpoint switches, same weights
    checkpointed = build(fuse_stages=(2, 3, 4), spike_encoder={"blocks_per_scale": 1, "use_checkpoint": True},
                         spike_tsa={**SPIKE_KW, "use_checkpoint": True}, fusion={**SPIKE_KW, "use_checkpoint": True})
    checkpointed.load_state_dict(net.state_dict())
    for model in (net, checkpointed):
        model.vrt.spynet.requires_grad_(False)  # flows need no gradient here; saves SpyNet's backward
    rgb, spike = inputs()
    out_ck = checkpointed(rgb, spike)
    out_ck.square().mean().backward()
    grads_ck = {n: p.grad.clone() for n, p in checkpointed.named_parameters() if not n.startswith("vrt.")}
    for name, g in grads_ck.items():
        assert g.abs().sum() > 0, f"no gradient reaches {name}"
    # the checkpointed graph computes the same gradients as the plain one
    out = net(rgb, spike)
    torch.testing.assert_close(out, out_ck)
    out.square().mean().backward()
    for name, p in net.named_parameters():
        if name in grads_ck:
            torch.testing.assert_close(p.grad, grads_ck[name], atol=1e-6, rtol=1e-4, msg=name)


def test_frozen_backbone_still_trains_the_spike_branch() -> None:
    """A backbone frozen for a whole fit (DeblurModule.setup: VRT's requires_grad=False) still
    passes gradients through to every spike parameter."""
    net = build(fuse_stages=(1,))
    assert net.spike_encoder.num_scales == 1  # nothing reads the 1/2 .. 1/8 spike scales
    torch.nn.init.normal_(net.fusion.stage1.out_proj.weight, std=0.1)
    net.vrt.requires_grad_(False)
    rgb, spike = inputs()
    net(rgb, spike).mean().backward()
    assert all(p.grad is None for p in net.vrt.parameters())
    spike_params = [p for n, p in net.named_parameters() if not n.startswith("vrt.")]
    assert spike_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in spike_params)


def test_backbone_loads_official_checkpoint_and_spike_modules_stay_fresh(tmp_path: Path) -> None:
    torch.manual_seed(7)
    donor = VRT(**VRT_KW)
    path = tmp_path / "vrt_release.pth"
    torch.save({"params": donor.state_dict()}, path)
    net = build()
    spike_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("vrt.")}
    net.load_backbone_checkpoint(path)
    for key, value in donor.state_dict().items():
        assert torch.equal(net.vrt.state_dict()[key], value), key
    for key, value in spike_before.items():
        assert torch.equal(net.state_dict()[key], value), key
    with pytest.raises((FileNotFoundError, RuntimeError, ValueError), match="missing"):
        net.load_backbone_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize(
    ("rgb_shape", "spike_shape"),
    [((1, 2, 3, 40, 40), (1, 3, K, 40, 40)),   # T
     ((1, 2, 3, 40, 40), (1, 2, K, 48, 40)),   # H
     ((1, 2, 3, 40, 40), (1, 2, K, 40, 32)),   # W
     ((1, 2, 3, 40, 40), (1, 2, K + 1, 40, 40)),  # K vs num_bins
     ((2, 2, 3, 40, 40), (1, 2, K, 40, 40)),   # B
     ((1, 2, 3, 40, 40), (2, K, 40, 40))],     # rank
)
def test_mismatched_spike_raises_with_shapes(rgb_shape, spike_shape) -> None:
    net = build()
    with pytest.raises(ValueError) as err:
        net(torch.rand(rgb_shape), torch.rand(spike_shape))
    assert str(tuple(spike_shape)) in str(err.value) and str(tuple(rgb_shape)) in str(err.value)
    with pytest.raises(ValueError, match="needs a spike tensor"):
        net(torch.rand(rgb_shape))


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"model.spike_encoder.channels_per_scale=\[8, 8, 8, 16\].*embed_dims\[:4\]=\[8, 8, 8, 8\]"):
        build(spike_encoder={"channels_per_scale": [8, 8, 8, 16]})
    with pytest.raises(ValueError, match=r"model.fusion.channels_per_scale"):
        build(fusion={**SPIKE_KW, "channels_per_scale": [16] * 4})
    with pytest.raises(ValueError, match=r"model.spike_encoder.spatial_strides=\[2, 2, 1\]"):
        build(spike_encoder={"spatial_strides": [2, 2, 1]})
    with pytest.raises(ValueError, match=r"in_channels=3 != model.num_bins=4"):
        build(spike_encoder={"in_channels": 3})
    with pytest.raises(ValueError, match="model.fuse_stages"):
        build(fusion={**SPIKE_KW, "fuse_stages": [1]})
    with pytest.raises(ValueError, match="fuse_stages is empty"):
        build(fuse_stages=())
    with pytest.raises(ValueError, match=r"model.fuse_stages must be distinct VRT stages in 1..4, got \[1, 5\]"):
        build(fuse_stages=(1, 5))
    # matching explicit channels are accepted
    build(spike_encoder={"channels_per_scale": [8, 8, 8, 8]})


def test_temporal_strides_fuse_into_full_rate_vrt() -> None:
    net = build(spike_encoder={"temporal_strides": [2, 1, 1], "blocks_per_scale": 1})
    net.vrt.spynet.requires_grad_(False)
    for block in net.fusion.stages().values():
        torch.nn.init.normal_(block.out_proj.weight, std=0.1)
    rgb, spike = inputs(t=4)
    with torch.no_grad():
        feats = net.spike_encoder(spike)
        assert [f.shape[2] for f in feats] == [4, 2, 2, 2]
        assert net(rgb, spike).shape == rgb.shape
