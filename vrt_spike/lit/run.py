"""What `train.py` and `evaluate.py` do with a composed Hydra config."""
from __future__ import annotations

import csv
import io
import logging
import os
import pickle
import statistics
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from vrt_spike.data.footage import ClipDataset, SpikeReading, gt_clips
from vrt_spike.lit.config import check_config
from vrt_spike.lit.module import DeblurModule, build_net
from vrt_spike.lit.sweep import write_summary

__all__ = ["train", "evaluate", "load_for_inference", "SavePredictions"]

log = logging.getLogger(__name__)


def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _refuse_multirun_ddp(trainer: L.Trainer) -> None:
    env = trainer.strategy.cluster_environment if hasattr(trainer.strategy, "cluster_environment") else None
    external = env is not None and env.creates_processes_externally
    if _in_multirun() and trainer.world_size > 1 and not external:
        raise RuntimeError(
            f"multirun (-m) with trainer.devices={trainer.num_devices} (world size {trainer.world_size}) is refused: "
            "Lightning starts the extra DDP processes by re-running this command line, so each of them would "
            "re-run the whole sweep (duplicated jobs, ranks that never meet). Run the jobs one by one "
            "(a shell loop over single runs), or sweep on a cluster with hydra/launcher=submitit_slurm, where "
            "SLURM starts one process per device (see README: Multi-node).")


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


def _model_choice() -> str | None:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("model")
    return None


def _job_info() -> dict[str, Any]:
    if not HydraConfig.initialized():
        return {"job": None, "overrides": []}
    hc = HydraConfig.get()
    num = hc.job.get("num") if hc.mode == RunMode.MULTIRUN else None
    return {"job": num, "overrides": list(hc.overrides.task)}


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test); returns and writes ``<run dir>/summary.json``."""
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")  # plain containers in checkpoints
    module = DeblurModule(model=cfg.model, optim=cfg.optim, scheduler=cfg.scheduler, loss=cfg.loss,
                          seed=cfg.seed, **cfg.get("module", {}))
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    model_choice = _model_choice()
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
    _refuse_multirun_ddp(trainer)
    if trainer.is_global_zero:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    ckpt = _resolve_ckpt(cfg.get("ckpt_path"), output_dir)
    status = "ok"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule, ckpt_path="best" if trainer.checkpoint_callback else None)
    except BaseException as err:
        status = f"failed: {type(err).__name__}"
        raise
    finally:
        if trainer.is_global_zero:
            _finish_wandb(loggers, status)
    summary = {
        **_job_info(),
        "model": model_choice,
        "status": status,
        "steps": int(trainer.global_step),
        "val_psnr": _metric(trainer, "val/psnr"),
        "val_ssim": _metric(trainer, "val/ssim"),
        "val_psnr_input": _metric(trainer, "val/psnr_input"),
        "test_psnr": _metric(trainer, "test/psnr"),
        "step_time_s": statistics.median(module.step_times_s) if module.step_times_s else None,
        "skipped_steps": module.skipped_steps,
        "best_ckpt": getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
        "run_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        write_summary(output_dir, summary)
        _print_report(summary, callbacks)
    return summary


def _finish_wandb(loggers: list[Logger], status: str) -> None:
    # One W&B run per job: finish it before the next multirun job starts in this process.
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if status == "ok" else 1)


def _print_report(summary: dict[str, Any], callbacks: list[Callback]) -> None:
    psnr, floor = summary["val_psnr"], summary["val_psnr_input"]
    lines = [f"\nRun dir: {summary['run_dir']}"]
    if psnr is not None and floor is not None:
        verdict = "beats" if psnr > floor else "does NOT beat"
        lines.append(f"val/psnr {psnr:.2f} dB vs blurry input val/psnr_input {floor:.2f} dB: "
                     f"{psnr - floor:+.2f} dB ({verdict} the input)   val/ssim {summary['val_ssim']:.4f}")
    if summary["step_time_s"] is not None:
        lines.append(f"median training step: {summary['step_time_s'] * 1e3:.0f} ms over {summary['steps']} steps")
    print("\n".join(lines), flush=True)
    for cb in callbacks:
        report = getattr(cb, "summary", None)
        if callable(report):
            text = report()
            if text:
                print(text, flush=True)


# ---------------------------------------------------------------------------------------- evaluate


class SavePredictions(Callback):
    """Writes each restored test frame to ``<out_dir>/<clip>/<frame:06d>.png``."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        from torchvision.utils import save_image

        for s, clip in enumerate(batch["clip"]):
            clip_dir = self.out_dir / clip
            clip_dir.mkdir(parents=True, exist_ok=True)
            for t in range(outputs.shape[1]):
                save_image(outputs[s, t].cpu(), clip_dir / f"{int(batch['frame_start'][s]) + t:06d}.png")


def _read_checkpoint(path: Path) -> Any:
    """``torch.load`` of ``ckpt_path``, with an error naming the file when it is not a checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path: no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as err:
        raise ValueError(f"ckpt_path={path}: not a PyTorch checkpoint (expected a train.py .ckpt or an official VRT "
                         f"release .pth, {path.stat().st_size} bytes that torch.load cannot read): "
                         f"{type(err).__name__}: {err}") from err


def load_for_inference(cfg: DictConfig) -> DeblurModule:
    """The network of ``cfg.ckpt_path`` in a :class:`DeblurModule` tiled as ``cfg.module.tile`` (evaluate, predict)."""
    path = Path(cfg.ckpt_path)
    payload = _read_checkpoint(path)
    tile = OmegaConf.to_container(cfg.module.tile, resolve=True) if cfg.module.get("tile") else None
    if isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
        # A train.py checkpoint: its own model config builds the matching network.
        hparams = {**payload["hyper_parameters"], "tile": tile, "log_images": False}
        module = DeblurModule(**hparams)
        module.load_state_dict(payload["state_dict"])
        log.info("loaded Lightning checkpoint %s (model config from the checkpoint)", path)
        return module
    # An official VRT release: the RGB-only baseline of the configured preset.
    if cfg.model.get("use_spike", True):
        raise ValueError(f"ckpt_path={path} is not a train.py checkpoint (no state_dict/hyper_parameters), so it is "
                         "taken as an official VRT release, which has no spike branch: add model.use_spike=false")
    net = build_net(cfg.model)
    net.load_backbone_checkpoint(path)
    return DeblurModule(model=cfg.model, optim={"name": "adamw", "lr": 1e-4}, net=net, tile=tile, log_images=False)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _whole_clip_loader(data: DictConfig) -> DataLoader:
    """The test split one whole clip per batch, so each frame is restored as predict.py restores it."""
    # The DataModule only builds the embedded synthetic set when it is missing (data.build_if_missing).
    hydra.utils.instantiate(data, cache=False, _convert_="all").prepare_data()
    clips = gt_clips(data.root, data.test_split, drop_partial=bool(data.get("drop_partial_frames", False)))
    dataset = ClipDataset(clips, SpikeReading.from_data_config(data), crop_size=data.get("eval_crop_size"))
    return DataLoader(dataset, batch_size=1, num_workers=int(data.get("num_workers", 0)))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Per-clip and mean PSNR/SSIM on every frame of the test split: printed, and written to ``out_csv``."""
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    module = load_for_inference(cfg)
    with open_dict(cfg):
        cfg.model = module.hparams.model  # the network the checkpoint holds
    callbacks: list[Callback] = [SavePredictions(output_dir / "images")] if cfg.save_images else []
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
    trainer.test(module, dataloaders=_whole_clip_loader(cfg.data))
    clips = module.test_clips
    n = len(module.test_frames)
    mean = {m: sum(r[m] for r in module.test_frames) / n for m in ("psnr", "ssim", "psnr_input")}
    rows = [*clips, {"clip": "mean (all frames)", "frames": n, **mean}]
    if trainer.is_global_zero:
        out_csv = Path(cfg.out_csv)
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(out_csv, rows, ["clip", "frames", "psnr", "ssim", "psnr_input"])
        _write_csv(out_csv.with_name(out_csv.stem + "_frames.csv"), module.test_frames,
                   ["clip", "frame", "psnr", "ssim", "psnr_input"])
        width = max(len(r["clip"]) for r in rows)
        print(f"\n{'clip':<{width}}  frames    PSNR    SSIM  PSNR(input)")
        for r in rows:
            print(f"{r['clip']:<{width}}  {r['frames']:>6}  {r['psnr']:6.2f}  {r['ssim']:.4f}  {r['psnr_input']:6.2f}")
        print(f"written: {out_csv}", flush=True)
    return {"clips": clips, "mean": mean, "csv": str(cfg.out_csv)}
