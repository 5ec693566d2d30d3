"""Every contract region is reported for the real VRTWithSpike (tiny config), with and without
spikes, and the nesting invariant holds on the real network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vrt_spike.models.vrt_spike import VRTWithSpike
from vrt_spike.timing.timer import StageTimer

ROOT = Path(__file__).resolve().parents[2]
TRAINING_KEYS = ("compile", "pretrained", "freeze_backbone_steps")
K, T, HW = 4, 2, 40


def tiny_model_kwargs(use_spike: bool) -> dict:
    cfg = OmegaConf.load(ROOT / "conf" / "model" / "baseline.yaml").model
    cfg.num_bins = K
    cfg.vrt.merge_with({"img_size": [T, HW, HW], "window_size": [2, 4, 4], "depths": [1] * 11,
                        "embed_dims": [8] * 7 + [12] * 4, "num_heads": [1] * 11,
                        "deformable_groups": 2})
    cfg.spike_tsa.heads = cfg.fusion.heads = 1
    cfg.spike_encoder.blocks_per_scale = 1
    kw = OmegaConf.to_container(cfg, resolve=True)
    kw["use_spike"] = use_spike
    return {k: v for k, v in kw.items() if k not in TRAINING_KEYS}


def contract_regions(use_spike: bool) -> set[str]:
    parts = ["vrt", "vrt.spynet", *(f"vrt.stage{i}" for i in range(1, 9))]
    if use_spike:
        parts += ["spike_encoder", "spike_tsa", "fusion"]
        parts += [f"{b}.scale{i}" for b in ("spike_encoder", "spike_tsa") for i in range(1, 5)]
        parts += [f"fusion.stage{i}" for i in range(1, 5)]
    return ({"step", "forward", "backward", "backward.recompute", "optimizer_step"}
            | {f"forward.{p}" for p in parts} | {f"backward.{p}" for p in parts})


@pytest.mark.parametrize("use_spike", [True, False], ids=["spike", "rgb-only"])
def test_every_region_present_for_vrt_with_spike(use_spike):
    torch.set_num_threads(1)
    net = VRTWithSpike(**tiny_model_kwargs(use_spike))
    timer = StageTimer("cpu")
    timer.attach(net)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    out = net(torch.rand(1, T, 3, HW, HW), torch.rand(1, T, K, HW, HW) if use_spike else None)
    with timer.region("backward"):
        out.mean().backward()
    with timer.region("optimizer_step"):
        opt.step()
    timer.end_step()
    values = {region: ms for _, region, ms in timer.collect()}
    missing = contract_regions(use_spike) - set(values)
    assert not missing, sorted(missing)
    if not use_spike:
        assert not any("spike" in r or "fusion" in r for r in values)
    # The checkpointed baseline recomputes attention in backward; it is reported there only.
    assert values["backward.recompute"] > 0
    assert values["backward.recompute"] <= values["backward"]
    children: dict[str, float] = {}
    for name, ms in values.items():
        if "." in name:
            par = name.rsplit(".", 1)[0]
            children[par] = children.get(par, 0.0) + ms
    for par, total in children.items():
        assert total <= values[par] + 1e-6, par
    timer.detach()
