"""StageTimer on toy networks with the contract's submodule names (CPU, deterministic clock)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vrt_spike.timing.regions import find_regions
from vrt_spike.timing.timer import StageTimer

FORWARD_WITH_SPIKE = (
    ["forward", "forward.vrt", "forward.vrt.spynet"]
    + [f"forward.vrt.stage{i}" for i in range(1, 9)]
    + ["forward.spike_encoder", "forward.spike_tsa", "forward.fusion"]
    + [f"forward.spike_encoder.scale{i}" for i in range(1, 5)]
    + [f"forward.spike_tsa.scale{i}" for i in range(1, 5)]
    + [f"forward.fusion.stage{i}" for i in range(1, 5)]
)
TOTALS = ["step", "data", "backward", "optimizer_step"]


def by_step(rows, step):
    return {region: ms for s, region, ms in rows if s == step}


def assert_nesting(values: dict[str, float], tol: float = 1e-6) -> None:
    """Children sum to no more than their parent; every region fits in the step."""
    children: dict[str, float] = {}
    for name, ms in values.items():
        assert ms >= 0, name
        if name != "step":
            assert ms <= values["step"] + tol, name
        if "." in name:
            children[name.rsplit(".", 1)[0]] = children.get(name.rsplit(".", 1)[0], 0) + ms
    for par, total in children.items():
        assert par in values, f"{par} missing while its children are present"
        assert total <= values[par] + tol, f"children of {par} sum to {total} > {values[par]}"
    top = sum(values.get(n, 0) for n in ("data", "forward", "backward", "optimizer_step"))
    assert top <= values["step"] + tol


def test_every_region_present_with_and_without_spikes(toy_net_cls, run_steps):
    for use_spike in (True, False):
        net = toy_net_cls(use_spike=use_spike)
        timer = StageTimer("cpu")
        timer.attach(net)
        values = by_step(run_steps(net, timer, steps=2), 1)
        expected = FORWARD_WITH_SPIKE if use_spike else [
            r for r in FORWARD_WITH_SPIKE if "spike" not in r and "fusion" not in r]
        backward = ["backward." + r.removeprefix("forward.") for r in expected if r != "forward"]
        assert set(expected + backward + TOTALS) <= set(values), \
            set(expected + backward + TOTALS) - set(values)
        if not use_spike:
            assert not any("spike" in r or "fusion" in r for r in values)
        assert_nesting(values)


def test_attribution_is_exact_with_known_costs(toy_net_cls, run_steps, fake_clock):
    net = toy_net_cls()
    net.vrt.stage8[0].sleep_ms = 20
    net.fusion.stage2.mix.sleep_ms = 30  # runs inside vrt.forward, yet is not part of forward.vrt
    net.spike_tsa.scale3.sleep_ms = 5
    net.vrt.stage5.blocks[1].mlp.backward_sleep_ms = 12
    timer = StageTimer("cpu")
    timer.attach(net)
    v = by_step(run_steps(net, timer, steps=2), 1)
    clock_noise = 1.0  # every clock read advances the fake clock by 1 µs; < 1000 reads per step
    assert 20 <= v["forward.vrt.stage8"] < 20 + clock_noise
    assert 30 <= v["forward.fusion.stage2"] < 30 + clock_noise
    assert 30 <= v["forward.fusion"] < 30 + clock_noise
    assert 20 <= v["forward.vrt"] < 20 + clock_noise  # fusion's 30 ms not counted in vrt
    assert 5 <= v["forward.spike_tsa.scale3"] <= v["forward.spike_tsa"] < 5 + clock_noise
    assert 55 <= v["forward"] < 55 + clock_noise
    assert 12 <= v["backward.vrt.stage5"] < 12 + clock_noise
    assert 12 <= v["backward.vrt"] < 12 + clock_noise
    assert 12 <= v["backward"] < 12 + clock_noise
    assert v["backward.vrt.stage6"] < clock_noise and v["forward.vrt.stage5"] < clock_noise
    assert 67 <= v["step"] < 67 + clock_noise
    assert_nesting(v)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_recompute_is_backward_not_forward(toy_net_cls, run_steps, fake_clock, reentrant):
    net = toy_net_cls(checkpoint_attn=True, reentrant=reentrant)
    net.vrt.stage3.blocks[0].attn.sleep_ms = 10  # checkpointed: runs again in backward
    net.vrt.stage3.blocks[0].mlp.sleep_ms = 4  # not checkpointed
    timer = StageTimer("cpu")
    timer.attach(net)
    v = by_step(run_steps(net, timer, steps=2), 1)
    assert 14 <= v["forward.vrt.stage3"] < 15  # once, not twice
    assert 14 <= v["forward"] < 15
    assert 10 <= v["backward.recompute.vrt.stage3"] < 11
    assert 10 <= v["backward.recompute.vrt"] <= v["backward.recompute"] < 11
    assert v["backward.recompute"] <= v["backward"]
    assert v["backward.vrt.stage3"] < 1  # the recompute is not the stage's own backward
    assert "backward.recompute.vrt.stage1" in v  # every checkpointed stage shows up
    assert_nesting(v)


def test_recompute_of_a_whole_region(toy_net_cls, run_steps, fake_clock):
    net = toy_net_cls(checkpoint_tsa=True)  # spike_tsa checkpoints each scale module
    net.spike_tsa.scale2.sleep_ms = 7
    timer = StageTimer("cpu")
    timer.attach(net)
    v = by_step(run_steps(net, timer, steps=2), 1)
    assert 7 <= v["forward.spike_tsa.scale2"] < 8
    assert 7 <= v["backward.recompute.spike_tsa.scale2"] < 8
    assert 7 <= v["backward.recompute.spike_tsa"] < 8
    assert_nesting(v)


def test_disabled_registers_no_hooks(toy_net_cls, run_steps, hooks_of):
    net = toy_net_cls(checkpoint_attn=True)
    timer = StageTimer("cpu", enabled=False)
    timer.attach(net)
    assert hooks_of(net) == []
    assert run_steps(net, timer, steps=2) == []
    assert hooks_of(net) == []


def test_detach_removes_every_hook(toy_net_cls, run_steps, hooks_of):
    net = toy_net_cls(checkpoint_attn=True)
    timer = StageTimer("cpu")
    timer.attach(net)
    assert len(hooks_of(net)) > 0
    rows = run_steps(net, timer, steps=1)
    timer.detach()
    assert hooks_of(net) == []
    assert {s for s, *_ in rows} == {0}
    # After detach the network runs without timings.
    out = net(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 3, 8, 8))
    out.mean().backward()
    timer.end_step()
    assert {r for _, r, _ in timer.collect()} == {"step"}


def test_collect_rows_shape_and_memory_column(toy_net_cls, run_steps):
    net = toy_net_cls()
    timer = StageTimer("cpu")
    timer.attach(net)
    run_steps(net, timer, steps=1)  # collects step 0
    with timer.region("forward_only"):
        net(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 3, 8, 8))
    timer.end_step()
    opt_rows = timer.collect(with_memory=True)
    assert all(len(r) == 4 and r[0] == 1 and r[3] is None for r in opt_rows)  # no memory on CPU
    assert [r[1] for r in opt_rows] == sorted(r[1] for r in opt_rows)
    assert timer.collect() == []  # resolved rows are handed out once


def test_discard_step_drops_gap(fake_clock, toy_net_cls):
    net = toy_net_cls()
    timer = StageTimer("cpu")
    timer.attach(net)
    with timer.region("data"):
        fake_clock.sleep(0.005)
    timer.end_step()
    fake_clock.sleep(1.0)  # e.g. validation
    block = timer.region("data").__enter__()
    timer.discard_step()
    fake_clock.sleep(0.5)
    with timer.region("data"):
        fake_clock.sleep(0.002)
    timer.end_step()
    del block
    v = by_step(timer.collect(), 1)
    assert 2 <= v["step"] < 2.1 and 2 <= v["data"] < 2.1


def test_errors_name_the_problem(toy_net_cls):
    timer = StageTimer("cpu")
    with pytest.raises(ValueError, match="none of the contract's submodules"):
        timer.attach(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="dotted name"):
        timer.region("a..b")
    net = toy_net_cls()
    del net.vrt.stage4
    with pytest.raises(ValueError, match=r"'vrt'.*\['stage4'\]"):
        timer.attach(net)
    timer2 = StageTimer("cpu")
    timer2.attach(toy_net_cls())
    with pytest.raises(RuntimeError, match="twice"):
        timer2.attach(toy_net_cls())
    with timer2.region("backward"):
        with pytest.raises(RuntimeError, match=r"still open: \['backward'\]"):
            timer2.end_step()
    with pytest.raises(ValueError, match="CUDA"):
        StageTimer("cpu", track_memory=True)


def test_bare_vrt_uses_the_same_names(toy_net_cls, run_steps):
    vrt = toy_net_cls(use_spike=False).vrt
    names = {r.forward_name for r in find_regions(vrt)}
    assert names == {"forward", "forward.vrt.spynet", *(f"forward.vrt.stage{i}" for i in range(1, 9))}


@pytest.mark.cuda
def test_cuda_events_and_peak_memory(toy_net_cls, run_steps):
    net = toy_net_cls().cuda()
    timer = StageTimer(torch.device("cuda"))
    timer.attach(net)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(2):
        out = net(torch.rand(1, 2, 3, 8, 8, device="cuda"), torch.rand(1, 2, 3, 8, 8, device="cuda"))
        with timer.region("backward"):
            out.mean().backward()
        with timer.region("optimizer_step"):
            opt.step()
        timer.end_step()
    rows = timer.collect(with_memory=True)
    v = {r: (ms, peak) for s, r, ms, peak in rows if s == 1}
    assert set(FORWARD_WITH_SPIKE) <= set(v)
    assert v["forward"][1] is not None and v["forward"][1] > 0
    assert_nesting({k: ms for k, (ms, _) in v.items()}, tol=1e-3)
