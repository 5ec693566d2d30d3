"""Every contract region is reported for the real VRTWithSpike (tiny config), with and without
spikes, and the nesting invariant holds on the real network."""
from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig

from vrt_spike.lit.module import build_net
from vrt_spike.timing.timer import StageTimer

K, T, HW = 4, 2, 40  # VRT's smallest input for the tiny window


def tiny_model_cfg(compose_cfg, use_spike: bool, checkpoint: bool, extra: tuple[str, ...] = ()) -> DictConfig:
    """The real `model=tiny` preset, composed by Hydra like the training app does."""
    ckpt = str(checkpoint).lower()
    overrides = ["+model=tiny", f"+data.num_bins={K}", "+data.sharp_instant=0.5625", "+data.sharp_width=0.125", f"model.use_spike={use_spike}", *extra,
                 f"model.vrt.use_checkpoint_attn={ckpt}", f"model.vrt.use_checkpoint_ffn={ckpt}",
                 f"model.spike_tsa.use_checkpoint={ckpt}", f"model.fusion.use_checkpoint={ckpt}"]
    return compose_cfg(None, overrides).model


def contract_regions(use_spike: bool) -> set[str]:
    parts = ["vrt", "vrt.spynet", *(f"vrt.stage{i}" for i in range(1, 9))]
    if use_spike:
        parts += ["spike_encoder", "spike_tsa", "fusion"]
        parts += [f"{b}.scale{i}" for b in ("spike_encoder", "spike_tsa") for i in range(1, 5)]
        parts += [f"fusion.stage{i}" for i in range(1, 5)] + ["spike_head"]
    return ({"step", "forward", "backward", "optimizer_step"}
            | {f"forward.{p}" for p in parts} | {f"backward.{p}" for p in parts})


@pytest.mark.parametrize(("use_spike", "checkpoint"), [(True, True), (False, False)],
                         ids=["spike-checkpointed", "rgb-only"])
def test_every_region_present_for_vrt_with_spike(compose_cfg, use_spike, checkpoint):
    net = build_net(tiny_model_cfg(compose_cfg, use_spike, checkpoint))
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
    recompute = {r for r in values if r.startswith("backward.recompute")}
    if checkpoint:  # every checkpointed part re-runs in backward and is reported there only
        assert {"backward.recompute", "backward.recompute.vrt", "backward.recompute.spike_tsa",
                "backward.recompute.fusion"} <= recompute
        assert {f"backward.recompute.vrt.stage{i}" for i in range(1, 9)} <= recompute
        assert 0 < values["backward.recompute"] <= values["backward"]
    else:  # VRT always checkpoints its second TMSA group's attention (like upstream)
        assert recompute and all(r.startswith(("backward.recompute.vrt", "backward.recompute"))
                                 and "spike" not in r and "fusion" not in r for r in recompute)
    children: dict[str, float] = {}
    for name, ms in values.items():
        if "." in name:
            par = name.rsplit(".", 1)[0]
            children[par] = children.get(par, 0.0) + ms
    for par, total in children.items():
        assert total <= values[par] + 1e-6, par
    timer.detach()


def test_regions_follow_the_fused_stages_like_model_fast(compose_cfg):
    """`model=fast` skips stage-1 fusion: spike_tsa and fusion exist only for stages 2-4 (the
    encoder still computes scale 1 on the way down); timing reports exactly those."""
    net = build_net(tiny_model_cfg(compose_cfg, True, False, ("model.fuse_stages=[2,3,4]",)))
    timer = StageTimer("cpu")
    timer.attach(net)
    net(torch.rand(1, T, 3, HW, HW), torch.rand(1, T, K, HW, HW)).mean().backward()
    timer.end_step()
    forward = {region for _, region, _ in timer.collect() if region.startswith("forward.")}
    assert {r for r in forward if r.startswith("forward.spike_tsa.")} == {
        f"forward.spike_tsa.scale{i}" for i in (2, 3, 4)}
    assert {r for r in forward if r.startswith("forward.fusion.")} == {
        f"forward.fusion.stage{i}" for i in (2, 3, 4)}
    assert {f"forward.spike_encoder.scale{i}" for i in range(1, 5)} <= forward
    timer.detach()
