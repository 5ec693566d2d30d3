"""What `train.py` does with a composed config: fit, select on val, score the selected checkpoint on test once, report."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from vrt_spike.lit.config import check_config
from vrt_spike.lit.memory_fit import check_before_fit
from vrt_spike.lit.module import FRAME_METRICS, DeblurModule
from vrt_spike.lit.run_figures import RunFigures
from vrt_spike.lit.runtime import hydra_model_choice, job_info, set_tf32
from vrt_spike.lit.sweep import write_summary
from vrt_spike.lit.verdict import print_report

__all__ = ["train"]

log = logging.getLogger(__name__)


def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def _resolve_ckpt(ckpt_path: str | None, output_dir: Path) -> str | None:
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: no {path}. `last` resumes a run in its own directory: pass the crashed run's "
                "directory with hydra.run.dir=<run dir> ckpt_path=last, or give ckpt_path=<file.ckpt>")
        return str(path)
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path: no checkpoint file at {ckpt_path}")
    return ckpt_path


def logged_metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test); returns and writes ``<run dir>/summary.json``."""
    figures = RunFigures()
    check_config(cfg)
    set_tf32(cfg.get("tf32", True))
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")  # plain containers in checkpoints
    module = DeblurModule(model=cfg.model, optim=cfg.optim, scheduler=cfg.scheduler, loss=cfg.loss,
                          seed=cfg.seed, **cfg.get("module", {}))
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    model_choice = hydra_model_choice()
    loggers: list[Logger] = []
    for node in (cfg.get("logger") or {}).values():
        if isinstance(node, DictConfig) and "_target_" in node:
            extra = {}
            if node._target_.endswith("WandbLogger"):  # tags from config plus the preset
                extra["tags"] = [*(node.get("tags") or []), *([f"model={model_choice}"] if model_choice else [])]
            loggers.append(hydra.utils.instantiate(node, **extra))
    if not loggers:  # LearningRateMonitor needs a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_before_fit(cfg, trainer, output_dir)  # stops a step the memory plan says cannot fit
    if trainer.is_global_zero:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    ckpt = _resolve_ckpt(cfg.get("ckpt_path"), output_dir)
    selector = _val_selector(callbacks, bool(cfg.get("test")))
    status, best, val = "ok", None, {}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        val = {m: logged_metric(trainer, f"val/{m}") for m in FRAME_METRICS}  # trainer.test resets the metrics
        if cfg.get("test"):
            best = _selected_checkpoint(selector)
            trainer.test(module, datamodule=datamodule, ckpt_path=best)
    except BaseException as err:
        status = f"failed: {type(err).__name__}"
        raise
    finally:
        if trainer.is_global_zero:
            _finish_wandb(loggers, status)
    splits = datamodule.splits  # set up by fit (train, val) and test
    summary = {
        **job_info(),
        "model": model_choice,
        "status": status,
        "steps": int(trainer.global_step),
        # the last validation, on the val split (selection); the test figures below are the
        # val-selected checkpoint's on the test split, measured once (test=true)
        "val_split": splits["val"].describe(),
        **{f"val_{m}": val.get(m) for m in FRAME_METRICS},
        "val_scope": _val_scope(trainer, datamodule, module),
        "best_ckpt": (selector.best_model_path or None) if selector is not None else None,
        "best_val_psnr": _best_score(selector),
        "test_split": splits["test"].describe() if best else None,
        **{f"test_{m}": logged_metric(trainer, f"test/{m}") if best else None for m in FRAME_METRICS},
        "test_scope": _test_scope(trainer, datamodule, module) if best else None,
        "skipped_steps": module.skipped_steps,
        **figures.collect(trainer, module.net, callbacks),
        "run_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        write_summary(output_dir, summary)
        print_report(summary, callbacks)
    return summary


def _finish_wandb(loggers: list[Logger], status: str) -> None:
    # One W&B run per job: finish it before the next multirun job starts in this process.
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if status == "ok" else 1)


def _val_selector(callbacks: list[Callback], test: bool) -> ModelCheckpoint | None:
    """The checkpoint callback that selects on a ``val/`` metric (``callbacks.checkpoint_best``).

    ``test=true`` scores what it selected, so a run without one is refused before training starts,
    as is a checkpoint or early-stopping callback that monitors anything but validation.
    """
    selectors = [c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor]
    monitors = [(type(c).__name__, c.monitor) for c in (*selectors, *(c for c in callbacks if isinstance(c, EarlyStopping)))]
    wrong = [(name, m) for name, m in monitors if not str(m).startswith("val/")]
    if wrong:
        raise ValueError(f"checkpoint selection and early stopping read the val split only: {wrong[0][0]} monitors "
                         f"{wrong[0][1]!r} (expected a val/ metric, e.g. val/psnr)")
    if test and not selectors:
        raise ValueError("test=true scores the checkpoint selected on val/psnr, but no ModelCheckpoint monitors a val/ "
                         "metric: keep callbacks.checkpoint_best (callbacks=default), or run test=false")
    return selectors[0] if selectors else None


def _best_score(selector: ModelCheckpoint | None) -> float | None:
    score = None if selector is None else selector.best_model_score
    return None if score is None else float(score)


def _selected_checkpoint(selector: ModelCheckpoint | None) -> str:
    if selector is None or not selector.best_model_path:
        raise RuntimeError("test=true: no checkpoint was selected on val (no validation ran): lower "
                           "trainer.val_check_interval to at most trainer.max_steps")
    return selector.best_model_path


def _scope(dataset: Any, scored: int, limit: Any) -> dict[str, Any]:
    """Frames and clips of a val/test split, the frame size, the frames this rank ``scored``, and whether
    the loader covered the whole split (no ``limit_*_batches`` below 1.0, no ``eval_crop_size``)."""
    frames = sum(len(clip) for clip in dataset.clips)
    crop = getattr(dataset, "crop_size", None)
    whole = crop is None and (limit is None or (isinstance(limit, float) and limit >= 1.0))
    return {"frames": frames, "clips": len(dataset.clips), "scored": scored,
            "size": list(dataset.clips[0].rgb_size) if crop is None else [crop, crop], "whole_split": whole}


def _val_scope(trainer: L.Trainer, datamodule: Any, module: DeblurModule) -> dict[str, Any] | None:
    """What the last validation scored: frames, clips, frame size, and whether that is the whole split."""
    data_val = getattr(datamodule, "data_val", None)
    if data_val is None or not module.val_frames_scored:
        return None
    return _scope(data_val, module.val_frames_scored, trainer.limit_val_batches)


def _test_scope(trainer: L.Trainer, datamodule: Any, module: DeblurModule) -> dict[str, Any] | None:
    """What ``test=true`` scored (every rank's frames, gathered by the module)."""
    data_test = getattr(datamodule, "data_test", None)
    if data_test is None or not module.test_frames:
        return None
    return _scope(data_test, len(module.test_frames), trainer.limit_test_batches)
