"""Optimizer-state memory and optimizer-step time of a network under a configured optimizer.

    figures = measure_optimizer(net, {"name": "adamw8bit", "lr": 4e-4, "paged": False})

The optimizer is the one training builds (`vrt_spike.lit.optim.build_optimizer`, parameter
groups included). Every trainable parameter gets a fixed random gradient, `warmup` steps create
the states (and compile any kernels), then `iters` steps are timed: CUDA events on a GPU (one
synchronisation after the loop), the host clock on a CPU (`vrt_spike.timing.clock.time_callable`).

State bytes are exact: the bytes of every distinct tensor storage held in `optimizer.state`
(moments, step counters, 8-bit block maxima); a storage shared by several parameters, such as
bitsandbytes' quantisation maps, counts once.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vrt_spike.lit.optim import build_optimizer
from vrt_spike.tables import markdown_table
from vrt_spike.timing.clock import Spread, time_callable
from vrt_spike.timing.memory import storage_bytes

MIB = 1024 * 1024


@dataclass(frozen=True)
class OptimizerFigures:
    """One optimizer on one network: what it keeps and how long its step takes."""

    name: str           # optim.name (adamw | adamw8bit)
    optimizer: str      # what ran, e.g. "AdamW (fused)", "AdamW8bit"
    params: int         # trainable parameters
    state_bytes: int
    step_ms: Spread
    device: str

    @property
    def state_mib(self) -> float:
        return self.state_bytes / MIB


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the distinct tensor storages in `optimizer.state` (see the module doc)."""
    return storage_bytes(_tensors(list(optimizer.state.values())))


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """The class that runs, and for torch's Adam family whether the fused kernel was asked for."""
    name = type(optimizer).__name__
    if optimizer.defaults.get("fused"):
        return f"{name} (fused)"
    return name


def measure_optimizer(net: nn.Module, optim_cfg: Mapping[str, Any], *, warmup: int = 3,
                      iters: int = 10, seed: int = 0) -> OptimizerFigures:
    """State bytes and step time of `build_optimizer(net, optim_cfg)` on `net`'s device.

    Changes `net`'s parameters (the steps run) and sets their `.grad`; the optimizer is dropped.
    """
    if warmup < 1:
        raise ValueError(f"measure_optimizer: warmup must be >= 1 (the first step creates the states), got {warmup}")
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("measure_optimizer: the network has no trainable parameters")
    device = params[0].device
    generator = torch.Generator(device=device).manual_seed(seed)
    for p in params:
        p.grad = 1e-3 * torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype)
    optimizer = build_optimizer(net, optim_cfg)
    times = time_callable(optimizer.step, warmup=warmup, iters=iters, device=device)
    figures = OptimizerFigures(
        name=str(optim_cfg.get("name", "adamw")), optimizer=describe_optimizer(optimizer),
        params=sum(p.numel() for p in params), state_bytes=optimizer_state_bytes(optimizer),
        step_ms=Spread.of(times), device=str(device))
    del optimizer
    net.zero_grad(set_to_none=True)
    return figures


FIGURE_COLUMNS = ("model", "optim", "optimizer", "params", "state_mib", "step_ms_median",
                  "step_ms_p10", "step_ms_p90", "device")


def figures_row(model: str, figures: OptimizerFigures) -> dict[str, Any]:
    """A flat row (`FIGURE_COLUMNS`) for CSV files and tables."""
    return {"model": model, "optim": figures.name, "optimizer": figures.optimizer,
            "params": figures.params, "state_mib": figures.state_mib,
            "step_ms_median": figures.step_ms.median, "step_ms_p10": figures.step_ms.p10,
            "step_ms_p90": figures.step_ms.p90, "device": figures.device}


def figures_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of `figures_row` rows (or their CSV strings): one line per model and optimizer."""
    lines = [(r["model"], r["optim"], r["optimizer"], int(r["params"]) / 1e6, float(r["state_mib"]),
              f"{float(r['step_ms_median']):.2f} [{float(r['step_ms_p10']):.2f}, {float(r['step_ms_p90']):.2f}]",
              r["device"]) for r in rows]
    columns = ("model", "optim", "optimizer", "params (M)", "state MiB", "step ms median [p10, p90]", "device")
    return markdown_table(columns, lines, formats={"params (M)": ".2f", "state MiB": ".1f"},
                          right=("params (M)", "state MiB", "step ms median [p10, p90]")) + "\n"
