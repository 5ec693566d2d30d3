"""Optimizers and the learning-rate schedule.

Parameter groups follow KAIR's VRT training: parameters whose name contains one of ``flow_keys``
(SpyNet and the flow-guided deformable alignment, ``spynet`` / ``deform``) get
``lr * flow_lr_mult`` and can be frozen for the first ``flow_freeze_steps`` steps (KAIR's
``fix_keys`` / ``fix_lr_mul`` / ``fix_iter``). Every group carries a ``name`` (``main``, ``flow``)
that the LightningModule uses for freezing and logging.

A step whose gradients are not all finite is skipped on the device (:class:`NonFiniteStepGuard`):
the host never waits for the decision.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import get_total_norm

__all__ = ["OPTIMIZERS", "split_param_groups", "build_optimizer", "NonFiniteStepGuard", "cosine_with_warmup",
           "build_scheduler"]

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


def _auto_bool(cfg: Mapping[str, Any], key: str, auto: bool) -> bool:
    value = cfg.get(key, "auto")
    if value == "auto":
        return auto
    if not isinstance(value, bool):
        raise ValueError(f"optim.{key}: expected auto, true or false, got {value!r}")
    return value


def build_optimizer(net: nn.Module, optim_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """torch ``AdamW`` (fused) or bitsandbytes ``AdamW8bit`` (``PagedAdamW8bit`` when ``paged``).

    ``optim_cfg`` keys: ``name`` (adamw | adamw8bit), ``lr``, ``betas``, ``eps``, ``weight_decay``,
    ``flow_keys``, ``flow_lr_mult``; for AdamW ``fused`` (auto: on; one kernel per step on CUDA
    and CPU, and the only torch AdamW that skips a non-finite step on the device); for 8-bit
    ``paged`` (auto: off; true needs CUDA) and ``min_8bit_size`` (tensors smaller than this keep
    32-bit states, bitsandbytes' rule).
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
        return torch.optim.AdamW(groups, lr=lr, fused=_auto_bool(cfg, "fused", True), **kwargs)

    import bitsandbytes as bnb

    # Paged states live in unified memory and are prefetched per parameter: worth it only when
    # the states would not fit otherwise (docs/PERFORMANCE.md, "Optimizers"), so off unless asked.
    paged = _auto_bool(cfg, "paged", False)
    if paged and not next(net.parameters()).is_cuda:
        raise ValueError("optim.paged=true needs the network on CUDA (paged optimizer states live in unified memory); "
                         "use optim.paged=false on CPU")
    cls = bnb.optim.PagedAdamW8bit if paged else bnb.optim.AdamW8bit
    return cls(groups, lr=lr, min_8bit_size=int(cfg.get("min_8bit_size", 4096)), **kwargs)


class NonFiniteStepGuard:
    """Skips optimizer steps whose gradients are not all finite, decided on the device.

    :meth:`before_step` runs between backward and ``optimizer.step()``. Under DDP the gradients
    are all-reduced by then, so every rank sees the same ones and takes the same decision without
    a collective of its own. A fused torch optimizer (``_step_supports_amp_scaling``, the
    protocol ``torch.amp.GradScaler`` uses) receives the flag as ``found_inf`` and leaves
    parameters, moments and step count untouched on its own kernel; any other optimizer
    (bitsandbytes 8-bit) gets zeroed gradients instead: no NaN reaches its weights or states, but
    its moments decay and the weights move by their momentum for that step.

    The counts stay on the device (:attr:`counts`); the host reads them at its logging interval.
    """

    def __init__(self) -> None:
        self._skipped: Tensor | None = None  # steps skipped so far
        self._run: Tensor | None = None  # non-finite steps in a row, up to the last step
        self._longest: Tensor | None = None  # longest such run so far

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        # The max-norm propagates NaN and Inf and cannot overflow as a sum of squares can.
        found_inf = (~torch.isfinite(get_total_norm(grads, norm_type=float("inf")))).float()
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = found_inf
        else:
            keep = found_inf == 0
            for g in grads:
                g.masked_fill_(~keep, 0.0)
        if self._skipped is None:
            self._skipped = torch.zeros((), device=found_inf.device)
            self._run, self._longest = self._skipped.clone(), self._skipped.clone()
        self._skipped += found_inf
        self._run = (self._run + 1) * found_inf
        torch.maximum(self._longest, self._run, out=self._longest)

    def counts(self) -> tuple[int, int]:
        """``(steps skipped, longest run of skipped steps in a row)``: one host read."""
        if self._skipped is None:
            return 0, 0
        skipped, longest = torch.stack([self._skipped, self._longest]).tolist()
        return int(skipped), int(longest)


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
