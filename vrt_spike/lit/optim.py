"""Optimizers and the learning-rate schedule.

Parameter groups follow KAIR's VRT training: parameters whose name contains one of ``flow_keys``
(SpyNet and the flow-guided deformable alignment, ``spynet`` / ``deform``) get
``lr * flow_lr_mult`` and can be frozen for the first ``flow_freeze_steps`` steps (KAIR's
``fix_keys`` / ``fix_lr_mul`` / ``fix_iter``). Every group carries a ``name`` (``main``, ``flow``)
that the LightningModule uses for freezing and logging.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "split_param_groups", "build_optimizer", "cosine_with_warmup", "build_scheduler"]

OPTIMIZERS = ("adamw", "adamw8bit")


def split_param_groups(net: nn.Module, flow_keys: list[str] | tuple[str, ...]) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """``{"main": [...], "flow": [...]}`` of trainable ``(name, parameter)`` pairs."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"main": [], "flow": []}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        key = "flow" if any(k in name for k in flow_keys) else "main"
        groups[key].append((name, param))
    return groups


def build_optimizer(net: nn.Module, optim_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """torch ``AdamW`` or bitsandbytes ``AdamW8bit`` (``PagedAdamW8bit`` on CUDA when ``paged``).

    ``optim_cfg`` keys: ``name`` (adamw | adamw8bit), ``lr``, ``betas``, ``eps``, ``weight_decay``,
    ``flow_keys``, ``flow_lr_mult``, and for 8-bit ``paged`` (auto: on CUDA) and
    ``min_8bit_size`` (tensors smaller than this keep 32-bit states, bitsandbytes' rule).
    """
    cfg = dict(optim_cfg)
    name = str(cfg.get("name", "adamw"))
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: expected one of {list(OPTIMIZERS)}, got {name!r}")
    lr = float(cfg["lr"])
    mult = float(cfg.get("flow_lr_mult", 1.0))
    if lr <= 0 or mult < 0:
        raise ValueError(f"optim.lr must be > 0 and optim.flow_lr_mult >= 0, got lr={lr}, flow_lr_mult={mult}")
    split = split_param_groups(net, list(cfg.get("flow_keys") or []))
    groups = [{"name": "main", "params": [p for _, p in split["main"]], "lr": lr}]
    if split["flow"]:
        groups.append({"name": "flow", "params": [p for _, p in split["flow"]], "lr": lr * mult})
    if not any(g["params"] for g in groups):
        raise ValueError("build_optimizer: the network has no trainable parameters")
    kwargs = {"betas": tuple(float(b) for b in cfg.get("betas", (0.9, 0.999))),
              "eps": float(cfg.get("eps", 1e-8)), "weight_decay": float(cfg.get("weight_decay", 0.0))}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **kwargs)

    import bitsandbytes as bnb

    paged = cfg.get("paged", "auto")
    on_cuda = next(net.parameters()).is_cuda
    if paged == "auto":
        paged = on_cuda
    elif not isinstance(paged, bool):
        raise ValueError(f"optim.paged: expected auto, true or false, got {paged!r}")
    if paged and not on_cuda:
        raise ValueError("optim.paged=true needs the network on CUDA (paged optimizer states live in unified memory); "
                         "use optim.paged=auto or false on CPU")
    cls = bnb.optim.PagedAdamW8bit if paged else bnb.optim.AdamW8bit
    return cls(groups, lr=lr, min_8bit_size=int(cfg.get("min_8bit_size", 4096)), **kwargs)


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up ``0 -> 1`` over ``warmup_steps``, then cosine to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, scheduler_cfg: Mapping[str, Any], total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine with warm-up over ``total_steps`` optimizer steps (``scheduler.warmup_steps``, ``min_lr_ratio``)."""
    warmup = int(scheduler_cfg.get("warmup_steps", 0))
    floor = float(scheduler_cfg.get("min_lr_ratio", 0.0))
    if warmup < 0 or not 0.0 <= floor <= 1.0:
        raise ValueError(f"scheduler.warmup_steps must be >= 0 and scheduler.min_lr_ratio in [0, 1], got {warmup}, {floor}")
    if total_steps < 1:
        raise ValueError(f"scheduler: total optimizer steps must be >= 1, got {total_steps} (set trainer.max_steps)")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, total_steps, warmup, floor))
