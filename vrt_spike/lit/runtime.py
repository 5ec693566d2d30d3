"""What a run knows of its Hydra job and its device settings: shared by training, evaluation and prediction."""
from __future__ import annotations

from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

__all__ = ["in_multirun", "hydra_model_choice", "task_overrides", "job_info", "set_tf32"]


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_model_choice() -> str | None:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("model")
    return None


def task_overrides() -> list[str]:
    """This Hydra run's command-line overrides (``hydra.overrides.task``); none outside a Hydra run."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def job_info() -> dict[str, Any]:
    if not HydraConfig.initialized():
        return {"job": None, "overrides": []}
    hc = HydraConfig.get()
    num = hc.job.get("num") if hc.mode == RunMode.MULTIRUN else None
    return {"job": num, "overrides": task_overrides()}


def set_tf32(enabled: bool) -> None:
    """``tf32``: float32 matmuls on TF32 tensor cores (CUDA; ~1e-3 relative rounding, up to 8x the
    fp32 throughput on Ampere and later), or full float32. No effect on CPU."""
    if not isinstance(enabled, bool):
        raise ValueError(f"tf32: expected true or false, got {enabled!r}")
    # The legacy setter, because Lightning reads the legacy getter (mixing the two APIs raises).
    torch.set_float32_matmul_precision("high" if enabled else "highest")
