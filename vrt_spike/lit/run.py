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
from vrt_spike.lit.module import FRAME_METRICS, DeblurModule, build_net, score_frames, summarise_frames
from vrt_spike.lit.sweep import write_summary
from vrt_spike.models.classical import FLOOR_METHODS

__all__ = ["train", "evaluate", "load_for_inference", "SavePredictions", "set_tf32"]

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


def set_tf32(enabled: bool) -> None:
    """``tf32``: float32 matmuls on TF32 tensor cores (CUDA; ~1e-3 relative rounding, up to 8x the
    fp32 throughput on Ampere and later), or full float32. No effect on CPU."""
    if not isinstance(enabled, bool):
        raise ValueError(f"tf32: expected true or false, got {enabled!r}")
    # The legacy setter, because Lightning reads the legacy getter (mixing the two APIs raises).
    torch.set_float32_matmul_precision("high" if enabled else "highest")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test); returns and writes ``<run dir>/summary.json``."""
    check_config(cfg)
    set_tf32(cfg.get("tf32", True))
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
        "val_psnr_spike_floor": _metric(trainer, "val/psnr_spike_floor"),
        "val_scope": _val_scope(trainer, datamodule, module),
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


def _val_scope(trainer: L.Trainer, datamodule: Any, module: DeblurModule) -> dict[str, Any] | None:
    """What the last validation scored: frames, clips, frame size, and whether that is the whole split."""
    data_val = getattr(datamodule, "data_val", None)
    if data_val is None or not module.val_frames_scored:
        return None
    frames = sum(len(clip) for clip in data_val.clips)
    crop = getattr(data_val, "crop_size", None)
    limit = trainer.limit_val_batches
    whole = crop is None and (limit is None or (isinstance(limit, float) and limit >= 1.0))
    return {"frames": frames, "clips": len(data_val.clips), "scored": module.val_frames_scored,
            "size": list(data_val.clips[0].rgb_size) if crop is None else [crop, crop], "whole_split": whole}


def _verdict(summary: dict[str, Any]) -> list[str]:
    """The line a user reads first: model vs the blurry input and vs the non-learned spike floor."""
    psnr, blur, floor = summary["val_psnr"], summary["val_psnr_input"], summary.get("val_psnr_spike_floor")
    scope = summary.get("val_scope")
    if psnr is None or blur is None:
        return []
    line = f"val/psnr {psnr:.2f} dB | blurry input {blur:.2f} dB ({psnr - blur:+.2f})"
    if floor is not None:
        line += f" | spike floor {floor:.2f} dB ({psnr - floor:+.2f})"
    line += f"   val/ssim {summary['val_ssim']:.4f}"
    if scope is None:
        return [line]
    where = f"{scope['frames']} frames of {scope['clips']} clips"
    if not scope["whole_split"]:
        return [line, f"NOT a verdict: measured on a subset ({scope['scored']} frames at {scope['size'][0]}x"
                      f"{scope['size'][1]}) of the val split ({where}); set trainer.limit_val_batches=1.0 and "
                      "data.eval_crop_size=null"]
    where += f" at {scope['size'][0]}x{scope['size'][1]}"
    beats = [name for name, ref in (("the input", blur), ("the spike floor", floor)) if ref is not None and psnr > ref]
    misses = [name for name, ref in (("the input", blur), ("the spike floor", floor)) if ref is not None and psnr <= ref]
    verdict = ("beats " + " and ".join(beats)) if beats else ""
    if misses:
        verdict += ("; " if verdict else "") + "does NOT beat " + " or ".join(misses)
    return [line, f"verdict on the whole val split ({where}, full frames): {verdict}"]


def _print_report(summary: dict[str, Any], callbacks: list[Callback]) -> None:
    lines = [f"\nRun dir: {summary['run_dir']}", *_verdict(summary)]
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
        # Compiling is a choice of this run (model.compile on the command line), not of the weights.
        hparams["model"] = {**hparams["model"], **{k: cfg.model[k] for k in ("compile", "compile_mode")
                                                   if k in cfg.model}}
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


def _floor_frames(cfg: DictConfig, method: str) -> list[dict[str, Any]]:
    """Per-frame rows of a non-learned spike reading over the test split (no network, no Lightning)."""
    with open_dict(cfg):
        cfg.data.spike_floor = method
        cfg.data.cache = False  # the floor reads the raw stream; voxel caches would go unused
        cfg.data.clip_len, cfg.data.eval_stride = 1, 1  # a per-frame reading: any clip length, each frame once
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("test")
    rows: list[dict[str, Any]] = []
    for batch in datamodule.test_dataloader():
        rows += score_frames(batch["spike_floor"], batch)
    unique = {(r["clip"], r["frame"]): r for r in rows}  # the last window may overlap the one before
    return [unique[k] for k in sorted(unique)]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Per-clip and mean PSNR/SSIM on the test split: printed, and written to ``out_csv``.

    ``method=checkpoint`` (default) scores ``ckpt_path``; ``method=sdm|tfp`` scores that non-learned
    reading of the spike stream (:mod:`vrt_spike.models.classical`) on the same frames.
    """
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    set_tf32(cfg.get("tf32", True))
    method = cfg.get("method", "checkpoint")
    if method in FLOOR_METHODS:
        frames, is_zero = _floor_frames(cfg, method), True
    elif method == "checkpoint":
        if cfg.get("ckpt_path") is None:
            raise ValueError("evaluate.py method=checkpoint needs ckpt_path=<file> (a train.py .ckpt or an official VRT "
                             "release); or score a non-learned spike reading with method=sdm or method=tfp")
        module = load_for_inference(cfg)
        with open_dict(cfg):
            cfg.model = module.hparams.model  # the network the checkpoint holds
        callbacks: list[Callback] = [SavePredictions(output_dir / "images")] if cfg.save_images else []
        trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
        trainer.test(module, dataloaders=_whole_clip_loader(cfg.data))
        frames, is_zero = module.test_frames, trainer.is_global_zero
        floor_method = cfg.data.get("spike_floor")
        if floor_method and module.use_spike:  # every restored frame stands beside its spike floor
            floor = {(r["clip"], r["frame"]): r["psnr"] for r in _floor_frames(cfg, floor_method)}
            frames = [{**r, "psnr_spike_floor": floor[(r["clip"], r["frame"])]} for r in frames]
    else:
        raise ValueError(f"evaluate.py method must be checkpoint or one of {FLOOR_METHODS}, got {method!r}")
    clips, mean = summarise_frames(frames)
    n = len(frames)
    rows = [*clips, {"clip": "mean (all frames)", "frames": n, **mean}]
    if is_zero:
        metrics = [m for m in FRAME_METRICS if m in mean]
        out_csv = Path(cfg.out_csv)
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(out_csv, rows, ["clip", "frames", *metrics])
        _write_csv(out_csv.with_name(out_csv.stem + "_frames.csv"), frames, ["clip", "frame", *metrics])
        width = max(len(r["clip"]) for r in rows)
        heads = {"psnr": "PSNR", "ssim": "SSIM", "psnr_input": "PSNR(input)", "psnr_spike_floor": "PSNR(floor)"}
        print(f"\n{method if method != 'checkpoint' else cfg.ckpt_path}")
        print(f"{'clip':<{width}}  frames  " + "  ".join(f"{heads[m]:>11}" for m in metrics))
        for r in rows:
            print(f"{r['clip']:<{width}}  {r['frames']:>6}  " + "  ".join(f"{r[m]:>11.4f}" if m == "ssim" else f"{r[m]:>11.2f}"
                                                                      for m in metrics))
        print(f"written: {out_csv}", flush=True)
    return {"clips": clips, "mean": mean, "csv": str(cfg.out_csv)}
