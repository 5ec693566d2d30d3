"""What a run knows of its Hydra job and its device settings: shared by training, evaluation and prediction."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

__all__ = ["in_multirun", "sweep_job_num", "sweep_name", "hydra_model_choice", "task_overrides", "job_info",
           "device_label", "set_tf32"]


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_job_num() -> int | None:
    """This run's job number in a sweep: a multirun job's, or the one a DDP job's ranks are started with
    (``hydra.job.num``, see ``vrt_spike.lit.sweep_job``); None for a single run."""
    if not HydraConfig.initialized():
        return None
    job = HydraConfig.get().job
    return None if OmegaConf.is_missing(job, "num") else int(job.num)


def sweep_name(default: str) -> str:
    """The sweep directory's name in a job of a sweep (one W&B group per sweep), else ``default``."""
    if sweep_job_num() is None:
        return default
    return Path(HydraConfig.get().sweep.dir).name


def hydra_model_choice() -> str | None:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("model")
    return None


def task_overrides() -> list[str]:
    """This Hydra run's command-line overrides (``hydra.overrides.task``); none outside a Hydra run."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def job_info() -> dict[str, Any]:
    return {"job": sweep_job_num(), "overrides": task_overrides()}


def device_label(device: torch.device, device_ids: list[int]) -> str:
    """The devices a run uses, in ``hydra.launcher.devices``' terms: ``cuda:<ids>`` as CUDA_VISIBLE_DEVICES
    (or nvidia-smi) names them, or ``cpu:<cores>`` this process may run on."""
    from vrt_spike.lit.devices import format_cores

    if device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        names = [d.strip() for d in visible.split(",")] if visible else None
        return "cuda:" + ",".join(names[i] if names else str(i) for i in device_ids)
    return f"{device.type}:{format_cores(sorted(os.sched_getaffinity(0)))}"


def set_tf32(enabled: bool) -> None:
    """``tf32``: float32 matmuls on TF32 tensor cores (CUDA; ~1e-3 relative rounding, up to 8x the
    fp32 throughput on Ampere and later), or full float32. No effect on CPU."""
    if not isinstance(enabled, bool):
        raise ValueError(f"tf32: expected true or false, got {enabled!r}")
    # The legacy setter, because Lightning reads the legacy getter (mixing the two APIs raises).
    torch.set_float32_matmul_precision("high" if enabled else "highest")
