"""What ``train.py`` does with one composed config: a single run, or one job of a sweep.

A job of a sweep (``-m``, any launcher or sweeper):

- **resumes**: a job whose directory holds a complete ``summary.json`` with the same overrides is not
  run again (re-running a sweep into its ``hydra.sweep.dir`` runs only what is missing or failed);
- **runs DDP under torchrun** when its trainer has several processes to start (``trainer.devices=3``):
  Lightning would start them by re-running the command line, i.e. the whole sweep, so the job runs
  ``torchrun --nproc-per-node=N train.py <the job's overrides>`` in its own directory instead: every
  rank is a single run (summary, checkpoints and W&B run as one), started with the job's number;
- **fails as a row**: an exception becomes ``summary.json`` with ``status: failed``, ``error_type``
  and ``error`` (the traceback goes to the job's log); the sweep goes on, and the sweep summary
  (``vrt_spike.lit.sweep``) ends the multirun with a non-zero status naming the failed jobs.

A single run that fails writes the same failed summary and raises.
"""
from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from vrt_spike import PROJECT_ROOT
from vrt_spike.lit.runtime import hydra_model_choice, in_multirun, job_info, task_overrides
from vrt_spike.lit.sweep import SUMMARY_FILE, read_summary, write_summary
from vrt_spike.lit.training import train

__all__ = ["run_task", "OBJECTIVE_KEYS", "objectives"]

log = logging.getLogger(__name__)

# summary.json figures a sweeper may optimise (`objectives` in conf/train.yaml)
OBJECTIVE_KEYS = ("val_psnr", "val_ssim", "best_val_psnr", "test_psnr", "test_ssim", "samples_per_s",
                  "peak_mem_bytes", "params", "step_time_s")


def run_task(cfg: DictConfig) -> float | tuple[float, ...]:
    """Run ``cfg`` and return its ``objectives`` (one: a float; several: a tuple; NaN where a job failed)."""
    keys = _objective_keys(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if in_multirun():
        done = _complete_summary(output_dir)
        if done is not None:
            log.info("job %s is complete in %s (summary.json): not run again", done.get("job"), output_dir)
            return objectives(done, keys)
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)  # a failed try's row
    started_at = time.time()
    try:
        processes = _processes_to_start(cfg) if in_multirun() else 1
        summary = _run_under_torchrun(cfg, processes, output_dir) if processes > 1 else train(cfg)
    except Exception as err:
        log.exception("run failed: %s: %s", type(err).__name__, err)  # the traceback, in the job's log
        summary = _failed_summary(err, started_at, output_dir)
        if not in_multirun():
            raise
    return objectives(summary, keys)


def objectives(summary: dict[str, Any], keys: list[str]) -> float | tuple[float, ...]:
    values = tuple(math.nan if summary.get(k) is None else float(summary[k]) for k in keys)
    return values[0] if len(values) == 1 else values


def _objective_keys(cfg: DictConfig) -> list[str]:
    keys = [str(k) for k in cfg.get("objectives") or ["val_psnr"]]
    wrong = [k for k in keys if k not in OBJECTIVE_KEYS]
    if wrong:
        raise ValueError(f"objectives: {wrong[0]!r} is not a summary.json figure a sweeper can optimise "
                         f"(expected some of {list(OBJECTIVE_KEYS)}), got {keys}")
    return keys


def _complete_summary(output_dir: Path) -> dict[str, Any] | None:
    """The job's summary when it finished before (same overrides, status ok), else None."""
    summary = read_summary(output_dir)
    if summary is None or summary.get("status") != "ok":
        return None
    overrides = task_overrides()
    if summary.get("overrides") != overrides:
        raise ValueError(f"{output_dir} holds a finished job with overrides {summary.get('overrides')}, not this job's "
                         f"{overrides}: a sweep resumes into its hydra.sweep.dir only with the same sweep; give a new "
                         "hydra.sweep.dir for a different one")
    return summary


def _processes_to_start(cfg: DictConfig) -> int:
    """The processes Lightning would start for this job by re-running the command line (1 outside DDP, or
    where the cluster starts them, e.g. SLURM or torchrun): a trainer of the config, without callbacks."""
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[], logger=False)
    external = trainer.strategy.cluster_environment.creates_processes_externally \
        if hasattr(trainer.strategy, "cluster_environment") else True
    return int(trainer.world_size) if trainer.world_size > 1 and not external else 1


def _run_under_torchrun(cfg: DictConfig, processes: int, output_dir: Path) -> dict[str, Any]:
    """This job as ``torchrun --nproc-per-node=<processes> train.py``: ranks started with the job's overrides,
    directory and number (``hydra.job.num``), so rank 0 writes the job's summary as a single run does."""
    hc = HydraConfig.get()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               str(PROJECT_ROOT / "train.py"), f"--config-name={hc.job.config_name}", *task_overrides(),
               "hydra.mode=RUN", f'hydra.run.dir="{output_dir}"', f'hydra.sweep.dir="{hc.sweep.dir}"',
               f"hydra.job.num={hc.job.num}", "hydra.output_subdir=null",  # .hydra/ is the job's, written once
               "hydra.job.name=train_ddp_rank${oc.env:RANK}"]  # one log file per rank
    log.info("job %s: DDP of %d processes under torchrun (rank logs: %s/train_ddp_rank*.log)", hc.job.num, processes,
             output_dir)
    exit_code = subprocess.run(command, cwd=PROJECT_ROOT).returncode
    summary = read_summary(output_dir)
    if summary is None:
        raise ChildProcessError(f"torchrun exited with status {exit_code} and rank 0 wrote no {SUMMARY_FILE} "
                                f"(killed or crashed); the ranks' logs are {output_dir}/train_ddp_rank*.log")
    if summary.get("status") != "ok":  # rank 0 wrote its failed summary before raising
        log.error("job %s failed under torchrun: %s: %s (traceback in %s/train_ddp_rank0.log)", hc.job.num,
                  summary.get("error_type"), summary.get("error"), output_dir)
    return summary


def _failed_summary(err: Exception, started_at: float, output_dir: Path) -> dict[str, Any]:
    summary = {**job_info(), "model": hydra_model_choice(), "status": "failed", "error_type": type(err).__name__,
               "error": str(err), "started_at": started_at, "ended_at": time.time(), "run_dir": str(output_dir)}
    if rank_zero_only.rank == 0:
        write_summary(output_dir, summary)
    return summary
