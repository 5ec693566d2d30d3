"""``model.compile``: the network is compiled in place, checkpoints move between compiled and eager
runs, compiled training equals eager training, and a compiled fit with validation and the timing
callback stays within a few recompiles."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from train_support import tiny_overrides

from vrt_spike.lit.module import DeblurModule
from vrt_spike.lit.training import train
from host_syncs import SyncsPerBatch
from vrt_spike.timing.callback import is_compiled


@pytest.fixture(scope="module")
def tiny_cfg(compose_cfg):
    return compose_cfg("train", ["model=tiny", "paths.output_dir=/tmp/unused"])


def _module(cfg, **model) -> DeblurModule:
    return DeblurModule({**cfg.model, **model}, cfg.optim, cfg.scheduler)


def test_compiled_in_place_and_checkpoints_load_both_ways(tiny_cfg) -> None:
    eager = _module(tiny_cfg)
    compiled = _module(tiny_cfg, compile=True, compile_mode="reduce-overhead")
    assert is_compiled(compiled.net) and not is_compiled(eager.net)
    # No second registered submodule (a torch.compile wrapper would add `_forward_fn._orig_mod.*`).
    assert [n for n, _ in compiled.named_children()] == [n for n, _ in eager.named_children()]
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert all(k.startswith(("net.", "val_", "loss_fn")) for k in compiled.state_dict())
    torch.manual_seed(1)
    for p in eager.parameters():
        p.data.normal_()
    compiled.load_state_dict(eager.state_dict(), strict=True)
    back = _module(tiny_cfg)
    back.load_state_dict(compiled.state_dict(), strict=True)
    for (name, a), b in zip(eager.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_compile_mode_is_checked(tiny_cfg) -> None:
    with pytest.raises(ValueError, match=r"model.compile_mode: expected one of \['default', 'reduce-overhead', "
                                         r"'max-autotune'\], got 'fast'"):
        _module(tiny_cfg, compile=True, compile_mode="fast")


@pytest.mark.slow
def test_compiled_training_step_equals_eager(tiny_cfg) -> None:
    """Inductor on the CPU: outputs and every gradient of one training step. Tolerances: 1e-5 on the
    outputs (measured 4.8e-7), 1e-4 of each gradient's largest entry (measured <= 3.3e-5), except
    SpyNet's two finest levels, 1e-2 (measured 6.4e-3): their tiny gradients flow through
    ``grid_sample`` and the deformable offsets, where fused float32 arithmetic rounds otherwise
    (aot_eager, the same graph without inductor's kernels, agrees to 2e-6)."""
    torch.manual_seed(0)
    eager = _module(tiny_cfg)
    compiled = _module(tiny_cfg, compile=True)
    compiled.load_state_dict(eager.state_dict())
    k = int(tiny_cfg.model.num_bins)
    gen = torch.Generator().manual_seed(3)
    blur, spike, sharp = torch.rand(2, 2, 3, 48, 48, generator=gen), torch.rand(2, 2, k, 48, 48, generator=gen), \
        torch.rand(2, 2, 3, 48, 48, generator=gen)
    results = []
    for module in (eager, compiled):
        module.train()
        out = module(blur, spike)
        module.loss_fn(out, sharp).backward()
        results.append((out.detach(), {n: p.grad for n, p in module.net.named_parameters() if p.grad is not None}))
    (eager_out, eager_grads), (compiled_out, compiled_grads) = results
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        tol = 1e-2 if name.startswith(("vrt.spynet.basic_module.4.", "vrt.spynet.basic_module.5.")) else 1e-4
        torch.testing.assert_close(compiled_grads[name], grad, rtol=0, atol=tol * grad.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.slow
def test_compiled_fit_with_validation_and_timing(compose_cfg, synthetic_root: Path, tmp_path: Path, caplog) -> None:
    """train.py with model.compile=true, a validation and the timing callback: few recompiles, no
    host sync per step, whole-step timing regions, and a checkpoint an eager module loads."""
    steps = 6
    cfg = compose_cfg("train", [*tiny_overrides(synthetic_root, steps), f"paths.output_dir={tmp_path}",
                                "model.compile=true", f"trainer.val_check_interval={steps // 2}",
                                "trainer.log_every_n_steps=1000", "callbacks.timing.interval=1000",
                                "data.num_workers=1", "+callbacks.sync_probe._target_=host_syncs.SyncsPerBatch"])
    SyncsPerBatch.runs.clear()
    torch._dynamo.reset()
    torch._logging.set_logs(recompiles=True)
    try:
        with caplog.at_level(logging.DEBUG, logger="torch._dynamo"):
            summary = train(cfg)
    finally:
        torch._logging.set_logs()
    recompiles = [r for r in caplog.records if "Recompiling function" in r.getMessage()]
    assert summary["status"] == "ok" and summary["steps"] == steps and summary["val_psnr"] is not None
    assert len(recompiles) <= 8, [r.getMessage()[:300] for r in recompiles]
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage() or "cache_size_limit" in r.getMessage()]
    (probe,) = SyncsPerBatch.runs
    per_step, sites = probe.per_step(first=steps // 2)  # the steps after the validation: compiled, warm
    assert per_step == 0, dict(sites)
    timing = tmp_path / "timing"
    meta = json.loads((timing / "meta.json").read_text())
    assert meta["compiled"] is True and "forward.vrt.stage8" in meta["regions_not_seen"]
    rows = (timing / "summary.csv").read_text()
    for region in ("forward", "backward", "optimizer_step", "data"):
        assert f"\n{region}," in rows
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    eager = DeblurModule(**{**last["hyper_parameters"], "model": {**last["hyper_parameters"]["model"], "compile": False}})
    eager.load_state_dict(last["state_dict"], strict=True)
