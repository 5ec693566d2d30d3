"""conf/model presets compose with Hydra, pass the config checks and build VRTWithSpike and its RGB-only
backbone (tiny also runs a forward)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from vrt_spike.lit.config import check_config
from vrt_spike.lit.module import TRAINING_KEYS
from vrt_spike.lit.module import build_net as build_model
from vrt_spike.models.vrt_with_spike import VRTWithSpike

OFFICIAL_GOPRO = dict(  # KAIR options/vrt/006_train_vrt_videodeblurring_gopro.json, netG
    upscale=1, img_size=[6, 192, 192], window_size=[6, 8, 8], depths=[8] * 7 + [4] * 4, indep_reconsts=[9, 10],
    embed_dims=[96] * 7 + [120] * 4, num_heads=[6] * 11, pa_frames=2, deformable_groups=16,
    nonblind_denoising=False, use_checkpoint_attn=True, use_checkpoint_ffn=True,
    no_checkpoint_attn_blocks=[2, 3, 4], no_checkpoint_ffn_blocks=[1, 2, 3, 4, 5, 9], mul_attn_ratio=0.75, mlp_ratio=2.0)


def build_net(cfg: DictConfig) -> VRTWithSpike:
    assert set(TRAINING_KEYS) <= set(cfg.model)  # every preset states the training-side keys
    check_config(cfg)
    net = build_model(cfg.model)
    assert net.use_spike and hasattr(net, "spike_encoder")
    rgb_only = build_model({**cfg.model, "use_spike": False})
    assert not hasattr(rgb_only, "spike_encoder")
    # the RGB-only baseline is exactly the backbone's parameters
    assert sum(p.numel() for p in rgb_only.parameters()) == sum(p.numel() for p in rgb_only.vrt.parameters())
    return net


def spike_cfg(cfg: DictConfig) -> tuple:
    m = cfg.model
    return (m.spike_tsa.chunk_size, m.spike_tsa.max_batch_tokens, m.fusion.chunk_size, m.fusion.max_batch_tokens,
            list(m.fuse_stages), m.spike_tsa.heads, m.fusion.heads, m.spike_tsa.mlp_ratio)


@pytest.mark.parametrize("name", ["baseline", "opt", "fast"])
def test_full_size_presets_compose_and_build(compose_cfg, name: str) -> None:
    cfg = compose_cfg("train", [f"model={name}"])
    vrt = cfg.model.vrt
    assert cfg.model.num_bins == cfg.data.num_bins
    assert cfg.model.pretrained is None and cfg.model.compile is False
    if name == "baseline":
        assert {k: OmegaConf.to_container(vrt)[k] for k in OFFICIAL_GOPRO} == OFFICIAL_GOPRO
        assert spike_cfg(cfg) == (64, 49152, 64, 49152, [1, 2, 3, 4], 4, 4, 2.0)
        assert "precision" not in cfg.get("trainer", {}) or cfg.trainer.precision != "bf16-mixed"
    elif name == "opt":
        assert list(vrt.depths) == [8, 7, 8, 8, 8, 8, 8, 3, 3, 3, 3] and list(vrt.window_size) == [6, 7, 7]
        assert spike_cfg(cfg) == (64, 49152, 80, 65536, [1, 2, 3, 4], 4, 4, 2.0)
        assert cfg.trainer.precision == "bf16-mixed"
    else:
        assert list(vrt.depths) == [8, 6, 6, 8, 8, 8, 8, 2, 2, 2, 2] and list(vrt.window_size) == [6, 6, 6]
        assert spike_cfg(cfg) == (96, 65536, 96, 65536, [2, 3, 4], 4, 4, 2.0)
        assert cfg.trainer.precision == "bf16-mixed" and cfg.data.batch_size == 2

    net = build_net(cfg)
    assert net.spike_encoder.in_channels == cfg.data.num_bins
    assert net.spike_encoder.channels_per_scale == list(vrt.embed_dims[:4])
    fused = sorted(int(n[len("stage"):]) for n, _ in net.fusion.named_children())
    assert fused == list(cfg.model.fuse_stages)
    vrt_params = sum(p.numel() for p in net.vrt.parameters())
    if name == "baseline":
        assert vrt_params == 18_320_007  # the official GoPro VRT
    else:
        assert vrt_params < 18_320_007


def test_tiny_preset_runs_a_forward(compose_cfg) -> None:
    cfg = compose_cfg("train", ["model=tiny"])
    net = build_net(cfg)
    spynet = sum(p.numel() for p in net.vrt.spynet.parameters())
    others = sum(p.numel() for p in net.parameters()) - spynet
    assert others < 500_000
    k = cfg.data.num_bins
    rgb, spike = torch.rand(1, 3, 3, 64, 64), torch.rand(1, 3, k, 64, 64)
    with torch.no_grad():
        out = net.eval()(rgb, spike)
        # zero-initialised fusion and spike head: the untrained output is VRT's, with its residual
        # added to the S-SDM reading of the voxels (the presets' residual_base)
        assert net.residual_base == "sdm" and net.spike_head is not None
        assert torch.equal(out, net.vrt(rgb, residual_base=net.spike_prior(rgb, spike)))
    assert out.shape == rgb.shape and torch.isfinite(out).all()
