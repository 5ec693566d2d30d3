"""The memory plan: the ledger's accounting, the fake trace against the real step, the plan
against a measured peak, the largest batch, the cheapest lever and train.py's pre-flight."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from train_support import ROOT, tiny_overrides

from vrt_spike.lit.memory_fit import (
    MemoryPlanError, Solution, card_verdicts, cards_gib, check_before_fit, levers_for, solve,
)
from vrt_spike.lit.memory_plan import ACT, GIB, GRAD, StepPlan, StorageLedger, plan_training_step
from vrt_spike.lit.training import train

MIB = 2**20
TINY = ["model=tiny", "data.clip_len=2", "data.crop_size=40", "data.batch_size=1", "data.num_bins=8",
        "paths.output_dir=/tmp/unused"]


def test_ledger_counts_storages_once_from_creation_to_free_by_region() -> None:
    block = nn.Linear(256, 256)
    ledger = StorageLedger({block: "block"})
    with ledger:
        a = torch.empty(1024)                 # 4 KiB, made outside any region
        view = a.view(32, 32)                 # a view: no new storage
        with ledger.region("loss"):
            b = torch.ones(2048)              # 8 KiB
        out = block(torch.zeros(4, 256))      # input 4 KiB (other), output 4 KiB (block)
        assert ledger.live[ACT] == 4096 + 8192 + 4096 + 4096
        assert ledger.live_by_region == {"other": 8192, "loss": 8192, "block": 4096}
        del a, view
        assert ledger.total == 8192 + 8192 and ledger.peak == 20480
        del b, out
    assert ledger.total == 0 and ledger.peak == 20480


def test_ledger_moves_a_parameter_gradient_to_its_category() -> None:
    lin = nn.Linear(64, 64, bias=False)
    ledger = StorageLedger()
    lin.weight.register_post_accumulate_grad_hook(lambda p: ledger.recategorize(p.grad, GRAD))
    with ledger:
        lin(torch.ones(8, 64)).sum().backward()
    assert ledger.live[GRAD] == 64 * 64 * 4


def _real_step_peak(compose_cfg, overrides: list[str]) -> tuple[StepPlan, int]:
    """The plan of a tiny step, and the same step run for real under the ledger (the real tensors'
    peak above what was live before it, as the plan's backward peak counts it)."""
    from vrt_spike.lit.module import DeblurModule

    cfg = compose_cfg("train", overrides)
    plan = plan_training_step(cfg, target="cpu")
    torch.manual_seed(0)
    module = DeblurModule(model=cfg.model, optim=cfg.optim, loss=cfg.loss)
    b, t, s, k = (int(cfg.data[key]) for key in ("batch_size", "clip_len", "crop_size", "num_bins"))
    blur, sharp, spike = torch.rand(b, t, 3, s, s), torch.rand(b, t, 3, s, s), torch.rand(b, t, k, s, s)
    ledger = StorageLedger()
    with ledger:
        loss = module.loss_fn(module(blur, spike), sharp)
        loss.backward()
    return plan, ledger.peak


def test_the_fake_trace_keeps_what_the_real_step_keeps(compose_cfg) -> None:
    plan, real_peak = _real_step_peak(compose_cfg, TINY)
    assert plan.backward_peak_bytes == pytest.approx(real_peak, rel=0.01)
    assert plan.peak_bytes > plan.params_bytes + plan.grads_bytes + plan.optimizer_bytes + plan.activations_bytes
    assert sum(plan.by_region.values()) == plan.activations_bytes
    assert {"vrt.stage1", "vrt.stage8", "vrt.spynet", "spike_encoder.scale1", "fusion.stage1", "spike_head",
            "loss"} <= set(plan.by_region)
    # fused AdamW keeps two fp32 moments per parameter (and a step counter per tensor)
    assert 2 * plan.params_bytes <= plan.optimizer_bytes <= 2 * plan.params_bytes + 4 * 4096


def _measured(tmp_path: Path, overrides: list[str]) -> dict:
    """train.py's step measured in a fresh process with glibc's mmap threshold pinned (its RSS rise
    is then the memory its tensors took), and its plan (tests/train/measured_step.py)."""
    out = tmp_path / "measured.json"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "8192", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "train" / "measured_step.py"), str(out), *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


ACCURACY = [
    pytest.param(["model=tiny", "data.clip_len=2", "data.crop_size=48", "data.batch_size=1"], id="tiny-fp32"),
    pytest.param(["model=tiny", "data.clip_len=3", "data.crop_size=64", "data.batch_size=2",
                  "trainer.precision=bf16-mixed"], id="tiny-bf16", marks=pytest.mark.slow),
    # everything recomputed keeps little: a crop where the tensors, not the process's ~15 MiB of
    # kernel workspaces and page rounding, make the peak
    pytest.param(["model=tiny", "data.clip_len=4", "data.crop_size=96", "data.batch_size=2",
                  "model.vrt.use_checkpoint_attn=true", "model.vrt.use_checkpoint_ffn=true",
                  "model.vrt.use_checkpoint_align=true", "model.spike_tsa.use_checkpoint=true",
                  "model.fusion.use_checkpoint=true", "model.spike_encoder.use_checkpoint=true"], id="tiny-checkpointed", marks=pytest.mark.slow),
    pytest.param(["model=baseline", "data.clip_len=2", "data.crop_size=64"], id="baseline-fp32",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("overrides", ACCURACY)
def test_planned_peak_within_10_percent_of_a_measured_training_step(tmp_path: Path, overrides: list[str]) -> None:
    result = _measured(tmp_path, overrides)
    assert result["kind"] == "cpu_tensors_rss_rise"
    assert result["planned"] == pytest.approx(result["measured"], rel=0.10), result


def _plan_with_peak(peak: int) -> StepPlan:
    blank = {f.name: 0 for f in dataclasses.fields(StepPlan)}
    return StepPlan(**{**blank, "by_region": {}, "phases": {}, "backward_peak_parts": {}, "shape": {}, "optimizer": "",
                       "precision": "32", "peak_phase": "backward", "overrides": [], "peak_bytes": peak})


def _formula_planner(fixed: int, per_unit: int, key: str):
    """A planner whose peak is ``fixed + per_unit * batch`` (or per pixel of the crop)."""
    def plan(cfg, target: str = "cuda") -> StepPlan:
        size = int(cfg.data.batch_size) if key == "batch" else int(cfg.data.crop_size) ** 2
        return _plan_with_peak(fixed + per_unit * size)
    return plan


@pytest.mark.parametrize(("key", "fixed", "per_unit", "capacity", "answer"), [
    ("batch", 10 * GIB, 3 * GIB, 46 * GIB, 12),    # 10 + 3 * 12 = 46 fits, 13 does not
    ("batch", 50 * GIB, 3 * GIB, 46 * GIB, None),  # not even batch 1
    ("crop", 2 * GIB, int(0.9 * MIB), 46 * GIB, 216),  # 2 GiB + 0.9 MiB per pixel: 216^2 fits, 224^2 does not
])
def test_solve_finds_the_largest_size_that_fits(compose_cfg, key: str, fixed: int, per_unit: int, capacity: int, answer) -> None:
    cfg = compose_cfg("train", ["model=baseline", "data.crop_size=256", "paths.output_dir=/tmp/unused"])
    solution = solve(cfg, key, capacity, planner=_formula_planner(fixed, per_unit, key))
    assert isinstance(solution, Solution) and solution.value == answer
    if answer is not None:
        assert solution.peak_bytes <= capacity < solution.next_peak_bytes
        assert solution.next_value == answer + (1 if key == "batch" else 8)
        assert len(solution.tried) <= 6  # the line's guess, then its neighbours: a few plans, not a scan
    assert "fits" in solution.describe()


def test_the_cli_plans_solves_the_batch_and_writes_its_json(compose_cfg, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """`memory.solve=batch`: the plan's table and verdicts, and the largest batch that fits memory.device_gb
    while one more does not, in memory_plan.json."""
    from vrt_spike.bench.memory import plan_main

    # the tiny step: ~28 MiB and ~65 MiB per sample; 0.19 GiB holds batch 2, not 3 (few plans, all small)
    cfg = compose_cfg("memory", [*TINY[:-1], f"paths.output_dir={tmp_path}", "memory.solve=batch",
                                 "memory.device_gb=0.19", "memory.reserve_gb=0"])
    peak = plan_main(cfg)
    out = capsys.readouterr().out
    assert "activations" in out and "vrt.stage1" in out and "PEAK" in out
    assert "48 GB: fits" in out and "0.19 GB (memory.device_gb): fits" in out
    written = json.loads((tmp_path / "memory_plan.json").read_text())
    assert {"peak_bytes", "params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "by_region",
            "overrides", "cards"} <= set(written)
    assert written["peak_bytes"] == peak and written["shape"]["crop_size"] == 40
    assert written["params_bytes"] == written["grads_bytes"] > 0  # every parameter trains, in fp32
    assert sum(written["by_region"].values()) == written["activations_bytes"]
    solution, capacity = written["solve"], int(0.19 * GIB)
    assert solution["capacity_bytes"] == capacity and solution["value"] >= 2
    assert solution["peak_bytes"] <= capacity < solution["next_peak_bytes"]  # it fits, one more does not
    assert solution["next_value"] == solution["value"] + 1
    assert len(solution["tried"]) <= 5  # the line's guess and its neighbours, not a scan


def test_verdicts_and_the_levers_that_apply(compose_cfg) -> None:
    plan = _plan_with_peak(40 * GIB)
    verdicts = card_verdicts(plan, cards_gib(40), reserve_gib=2.0)
    assert [(v["card"], v["fits"]) for v in verdicts] == [
        ("24 GB", False), ("48 GB", True), ("80 GB", True), ("141 GB", True), ("40 GB (memory.device_gb)", False)]
    assert verdicts[1]["headroom_bytes"] == 6 * GIB
    baseline = compose_cfg("train", ["model=baseline", "paths.output_dir=/tmp/unused"])
    assert [lever.name for lever in levers_for(baseline)] == ["bf16 mixed precision", "every checkpoint switch on"]
    tiny = compose_cfg("train", ["model=tiny", "paths.output_dir=/tmp/unused"])
    names = [lever.name for lever in levers_for(tiny)]
    assert names == ["bf16 mixed precision", "alignment checkpointing", "every checkpoint switch on"]


def test_preflight_stops_a_fit_that_cannot_fit_and_names_the_cheapest_lever(compose_cfg, synthetic_root: Path, tmp_path: Path) -> None:
    cfg = compose_cfg("train", [*tiny_overrides(synthetic_root), f"paths.output_dir={tmp_path}", "memory.check=true",
                                "memory.reserve_gb=0"])
    fp32 = plan_training_step(cfg, target="cpu").peak_bytes
    OmegaConf.update(cfg, "memory.device_gb", fp32 * 0.9 / GIB)  # bf16 fits there, fp32 does not
    with pytest.raises(MemoryPlanError) as err:
        train(cfg)
    message = str(err.value)
    assert "does NOT fit" in message and "cheapest lever: bf16 mixed precision: trainer.precision=bf16-mixed" in message
    assert "memory.check=false" in message
    written = json.loads((tmp_path / "memory_plan.json").read_text())
    assert written["fits"] is False and written["lever"] == ["trainer.precision=bf16-mixed"]
    assert written["peak_bytes"] == fp32
    assert not (tmp_path / "checkpoints").exists()  # stopped before the first step


def test_preflight_is_off_on_a_cpu_by_default_and_skipped_with_check_false(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("train", [*TINY[:-1], f"paths.output_dir={tmp_path}", "memory.device_gb=0.001"])
    cpu_trainer = type("T", (), {"strategy": type("S", (), {"root_device": torch.device("cpu")})()})()
    assert check_before_fit(cfg, cpu_trainer, tmp_path) is None  # auto: CUDA only
    OmegaConf.update(cfg, "memory.check", False)
    assert check_before_fit(cfg, cpu_trainer, tmp_path) is None
    OmegaConf.update(cfg, "memory.check", "yes")
    with pytest.raises(ValueError, match="memory.check: expected auto, true or false, got 'yes'"):
        check_before_fit(cfg, cpu_trainer, tmp_path)
