"""Bad values fail fast naming the key (every preset composes and builds: tests/models_spike/test_model_presets.py)."""
from __future__ import annotations

import pytest
import torch
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf

from vrt_spike.lit.config import (
    apply_overrides, check_config, checkpointing_overrides, checkpointing_summary, set_checkpointing,
)


def test_unknown_preset_names_the_group(compose_cfg) -> None:
    with pytest.raises((MissingConfigException, HydraException), match="model"):
        compose_cfg("train", ["model=huge", "paths.output_dir=/tmp/unused"])


def test_depths_of_wrong_length_fail_fast(compose_cfg) -> None:
    cfg = compose_cfg("train", ["model=baseline", "model.vrt.depths=[8,8,8]", "paths.output_dir=/tmp/unused"])
    with pytest.raises(ValueError, match=r"model\.vrt\.depths has 3 entries but model\.vrt\.embed_dims has 11"):
        check_config(cfg)


def test_window_larger_than_crop_fails_fast(compose_cfg) -> None:
    cfg = compose_cfg("train", ["model=baseline", "data.crop_size=32", "paths.output_dir=/tmp/unused"])
    with pytest.raises(ValueError, match=r"data\.crop_size=32 .*model\.vrt\.window_size=\[6, 8, 8\].*>= .* = 64"):
        check_config(cfg)


def test_unknown_precision_and_optimizer_fail_fast(compose_cfg) -> None:
    cfg = compose_cfg("train", ["model=tiny", "trainer.precision=8-mixed", "paths.output_dir=/tmp/unused"])
    with pytest.raises(ValueError, match="trainer.precision"):
        check_config(cfg)
    from vrt_spike.lit.optim import build_optimizer

    with pytest.raises(ValueError, match=r"optim\.name: expected one of \['adamw', 'adamw8bit'\], got 'sgd'"):
        build_optimizer(torch.nn.Linear(2, 2), {"name": "sgd", "lr": 1e-3})


def test_perceptual_loss_needs_local_weights(tmp_path) -> None:
    from vrt_spike.lit.losses import RestorationLoss

    with pytest.raises(ValueError, match="loss.perceptual_weights"):
        RestorationLoss(perceptual_weight=0.1)
    with pytest.raises(FileNotFoundError, match="loss.perceptual_weights: no file at"):
        RestorationLoss(perceptual_weight=0.1, perceptual_weights=str(tmp_path / "vgg19.pth"))


def test_checkpointing_switches_all_on_all_off_and_the_summary() -> None:
    cfg = {"vrt": {"use_checkpoint_attn": True, "use_checkpoint_ffn": False, "no_checkpoint_attn_blocks": [1]},
           "spike_tsa": {"use_checkpoint": True}}
    assert checkpointing_summary(cfg) == "vrt.use_checkpoint_attn+spike_tsa.use_checkpoint"
    assert checkpointing_summary({"vrt": {"use_checkpoint_attn": False}}) == "off"
    off = set_checkpointing(cfg, on=False)
    assert checkpointing_summary(off) == "off"
    assert off["vrt"]["no_checkpoint_attn_blocks"] == [1] and cfg["spike_tsa"]["use_checkpoint"]
    on = set_checkpointing(cfg, on=True)
    assert checkpointing_summary(on) == "vrt.use_checkpoint_attn+vrt.use_checkpoint_ffn+spike_tsa.use_checkpoint"
    assert on["vrt"]["no_checkpoint_attn_blocks"] == []  # all on: no block excepted
    assert checkpointing_overrides(cfg, on=True) == ["model.vrt.use_checkpoint_ffn=true",
                                                     "model.vrt.no_checkpoint_attn_blocks=[]"]


def test_apply_overrides_sets_keys_and_refuses_a_group_choice() -> None:
    cfg = OmegaConf.create({"optim": {"name": "adamw", "lr": 1e-3}, "data": {"batch_size": 2}})
    out = apply_overrides(cfg, ["data.batch_size=3", "optim.name=adamw8bit", "+optim.paged=false"])
    assert (out.data.batch_size, out.optim.name, out.optim.paged) == (3, "adamw8bit", False)
    assert cfg.data.batch_size == 2  # a copy
    with pytest.raises(ValueError, match="optim is a config group"):
        apply_overrides(cfg, ["optim=adamw8bit"])

