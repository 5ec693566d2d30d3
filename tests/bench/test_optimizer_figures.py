"""Optimizer figures (`vrt_spike.bench.optimizer`, `bench.optimizer_figures`): the state bytes are
the analytic count of AdamW's and bitsandbytes' 8-bit AdamW's states, and the step is timed."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vrt_spike import PROJECT_ROOT
from vrt_spike.bench.run import optimizer_figures
from vrt_spike.bench.optimizer import (
    FIGURE_COLUMNS, describe_optimizer, figures_text, measure_optimizer, optimizer_state_bytes,
)

MIN_8BIT = 4096   # bitsandbytes' default min_8bit_size (conf/optim/adamw8bit.yaml)
BLOCK = 256       # bitsandbytes' 8-bit blockwise quantisation block
QMAP = 256 * 4    # one float32 quantisation map of 256 entries, shared by every parameter


def _net() -> nn.Module:
    # Weights above min_8bit_size (8-bit states, one of them not a multiple of the block) and
    # biases below it (32-bit states), in both parameter groups (a `spynet` name is a flow key).
    net = nn.Sequential(nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 70))
    net.add_module("spynet", nn.Linear(70, 80))
    return net


def adamw_bytes(sizes: list[int]) -> int:
    """exp_avg and exp_avg_sq in float32 per parameter, and a float32 step counter per tensor."""
    return 2 * 4 * sum(sizes) + 4 * len(sizes)


def adamw8bit_bytes(sizes: list[int]) -> int:
    """uint8 states and a float32 absmax per block of each of the two states above min_8bit_size,
    float32 states below it, and the two quantisation maps once."""
    total = sum(2 * n + 2 * 4 * math.ceil(n / BLOCK) if n >= MIN_8BIT else 2 * 4 * n for n in sizes)
    return total + (2 * QMAP if any(n >= MIN_8BIT for n in sizes) else 0)


OPTIM = {"lr": 1e-3, "betas": [0.9, 0.99], "flow_keys": ["spynet"], "flow_lr_mult": 0.125}


@pytest.mark.parametrize("extra, optimizer, analytic", [
    ({"name": "adamw"}, "AdamW (fused)", adamw_bytes),  # fused: auto
    ({"name": "adamw", "fused": False}, "AdamW", adamw_bytes),
    ({"name": "adamw8bit", "paged": False, "min_8bit_size": MIN_8BIT}, "AdamW8bit", adamw8bit_bytes),
])
def test_state_bytes_equal_the_analytic_count(extra: dict, optimizer: str, analytic) -> None:
    net = _net()
    sizes = [p.numel() for p in net.parameters()]
    assert sum(n >= MIN_8BIT for n in sizes) == 3 and any(n % BLOCK for n in sizes if n >= MIN_8BIT)
    figures = measure_optimizer(net, {**OPTIM, **extra}, warmup=1, iters=2)
    assert figures.state_bytes == analytic(sizes)
    assert figures.params == sum(sizes) and figures.device == "cpu" and figures.name == extra["name"]
    assert figures.step_ms.n == 2 and 0 < figures.step_ms.p10 <= figures.step_ms.median <= figures.step_ms.p90
    assert figures.optimizer == optimizer
    assert all(p.grad is None for p in net.parameters())  # the measurement leaves no gradients behind


def test_steps_update_the_parameters_and_the_optimizer_is_named() -> None:
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    measure_optimizer(net, {**OPTIM, "name": "adamw"}, warmup=1, iters=1)
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    foreach = torch.optim.AdamW(net.parameters(), fused=False)
    assert describe_optimizer(foreach) == "AdamW" and optimizer_state_bytes(foreach) == 0


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        measure_optimizer(_net(), {**OPTIM, "name": "adamw"}, warmup=0)
    frozen = _net().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        measure_optimizer(frozen, {**OPTIM, "name": "adamw"})


@pytest.mark.slow  # four optimizer steps of the tiny preset, 8-bit ones on a CPU: seconds each
def test_bench_figures_of_the_shipped_groups_on_the_tiny_preset(compose_cfg) -> None:
    model_cfg = compose_cfg("bench", ["model=tiny"]).model
    # what `shipped_optim_config` returns inside the CLI (test_cli_multirun_writes_one_table runs that path)
    optim_cfgs = {name: OmegaConf.to_container(compose_cfg("bench", [f"optim={name}"]).optim, resolve=True)
                  for name in ("adamw", "adamw8bit")}
    assert optim_cfgs["adamw8bit"]["name"] == "adamw8bit" and optim_cfgs["adamw8bit"]["lr"] == optim_cfgs["adamw"]["lr"]
    optim_cfgs["adamw8bit"]["paged"] = False
    rows = optimizer_figures(model_cfg, optim_cfgs, model="tiny", device=torch.device("cpu"), warmup=1, iters=1,
                             seed=0)
    assert [r["optim"] for r in rows] == ["adamw", "adamw8bit"] and all(tuple(r) == FIGURE_COLUMNS for r in rows)
    from vrt_spike.lit.module import build_net

    sizes = [p.numel() for p in build_net(model_cfg).parameters()]
    assert rows[0]["state_mib"] * 2**20 == adamw_bytes(sizes)
    assert rows[1]["state_mib"] * 2**20 == adamw8bit_bytes(sizes)
    assert rows[1]["state_mib"] < 0.4 * rows[0]["state_mib"]
    text = figures_text(rows)
    assert text.count("| tiny |") == 2 and f"{rows[0]['state_mib']:.1f}" in text


@pytest.mark.slow
def test_cli_multirun_writes_one_table(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "vrt_spike.bench", "-m", "model=tiny", "bench.optimizer_figures=true",
                           "bench.device=cpu", "bench.warmup=1", "bench.iters=2",
                           f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "sweep" / "optimizer_figures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["optim"], r["optimizer"]) for r in rows] == [("tiny", "adamw", "AdamW (fused)"),
                                                                         ("tiny", "adamw8bit", "AdamW8bit")]
    assert all(float(r["step_ms_median"]) > 0 for r in rows)
    assert float(rows[1]["state_mib"]) < 0.4 * float(rows[0]["state_mib"])
    assert (tmp_path / "sweep" / "optimizer_figures.md").read_text() in proc.stdout
    assert not list((tmp_path / "sweep").glob(".*.tmp"))
