"""What `train.py` and `evaluate.py` do with a composed Hydra config."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import pickle
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from vrt_spike.atomic import write_text_atomically
from vrt_spike.data.footage import FloorReading, SpikeReading
from vrt_spike.data.splits import Split
from vrt_spike.lit.config import check_config
from vrt_spike.lit.module import FRAME_METRICS, DeblurModule, build_net, score_frames, summarise_frames
from vrt_spike.lit.sweep import write_summary
from vrt_spike.models.classical import FLOOR_METHODS
from vrt_spike.restore import describe_tile

__all__ = ["train", "evaluate", "load_for_inference", "take_checkpoint_data", "CHECKPOINT_DATA_KEYS", "SavePredictions",
           "set_tf32"]

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


def _task_overrides() -> list[str]:
    """This Hydra run's command-line overrides (``hydra.overrides.task``); none outside a Hydra run."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _job_info() -> dict[str, Any]:
    if not HydraConfig.initialized():
        return {"job": None, "overrides": []}
    hc = HydraConfig.get()
    num = hc.job.get("num") if hc.mode == RunMode.MULTIRUN else None
    return {"job": num, "overrides": _task_overrides()}


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
    selector = _val_selector(callbacks, bool(cfg.get("test")))
    status, best, val = "ok", None, {}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        val = {m: _metric(trainer, f"val/{m}") for m in FRAME_METRICS}  # trainer.test resets the metrics
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
        **_job_info(),
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
        **{f"test_{m}": _metric(trainer, f"test/{m}") if best else None for m in FRAME_METRICS},
        "test_scope": _test_scope(trainer, datamodule, module) if best else None,
        "step_time_s": statistics.median(module.step_times_s) if module.step_times_s else None,
        "skipped_steps": module.skipped_steps,
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


def _against_references(prefix: str, psnr: float, ssim: float | None, blur: float, floor: float | None) -> str:
    """``val/psnr 31.92 dB | blurry input 28.17 dB (+3.75) | spike floor 31.19 dB (+0.73)   val/ssim 0.8917``."""
    line = f"{prefix}/psnr {psnr:.2f} dB | blurry input {blur:.2f} dB ({psnr - blur:+.2f})"
    if floor is not None:
        line += f" | spike floor {floor:.2f} dB ({psnr - floor:+.2f})"
    return line + (f"   {prefix}/ssim {ssim:.4f}" if ssim is not None else "")


def _beats(psnr: float, blur: float, floor: float | None) -> str:
    refs = (("the input", blur), ("the spike floor", floor))
    beats = [name for name, ref in refs if ref is not None and psnr > ref]
    misses = [name for name, ref in refs if ref is not None and psnr <= ref]
    verdict = ("beats " + " and ".join(beats)) if beats else ""
    if misses:
        verdict += ("; " if verdict else "") + "does NOT beat " + " or ".join(misses)
    return verdict


def _where(scope: dict[str, Any]) -> str:
    return f"{scope['frames']} frames of {scope['clips']} clips at {scope['size'][0]}x{scope['size'][1]}"


def _verdict(summary: dict[str, Any]) -> list[str]:
    """The lines a user reads first: the model vs the blurry input and vs the non-learned spike floor,
    on the val split (the last validation), then the val-selected checkpoint on the test split."""
    psnr, blur, floor = summary["val_psnr"], summary["val_psnr_input"], summary.get("val_psnr_spike_floor")
    scope, split = summary.get("val_scope"), summary.get("val_split") or "val"
    if psnr is None or blur is None:
        return []
    lines = [_against_references("val", psnr, summary.get("val_ssim"), blur, floor)]
    if scope is not None and not scope["whole_split"]:
        lines.append(f"NOT a verdict: measured on a subset ({scope['scored']} frames at {scope['size'][0]}x"
                     f"{scope['size'][1]}) of the {split} split ({scope['frames']} frames of {scope['clips']} clips); "
                     "set trainer.limit_val_batches=1.0 and data.eval_crop_size=null")
    elif scope is not None:
        lines.append(f"verdict on the whole {split} split ({_where(scope)}, full frames): {_beats(psnr, blur, floor)}")
    test, test_scope = summary.get("test_psnr"), summary.get("test_scope")
    if test is not None and summary.get("test_psnr_input") is not None:
        t_blur, t_floor = summary["test_psnr_input"], summary.get("test_psnr_spike_floor")
        lines.append(_against_references("test", test, summary.get("test_ssim"), t_blur, t_floor))
        best = Path(summary["best_ckpt"]).name if summary.get("best_ckpt") else "?"
        chosen = f"the checkpoint selected on {split} ({best}"
        chosen += f", val/psnr {summary['best_val_psnr']:.2f} dB)" if summary.get("best_val_psnr") is not None else ")"
        where = _where(test_scope) if test_scope else "?"
        whole = "whole " if test_scope and test_scope["whole_split"] else "a subset of the "
        lines.append(f"test figure of {chosen} on the {whole}{summary.get('test_split') or 'test'} split "
                     f"({where}{', full frames' if test_scope and test_scope['whole_split'] else ''}): "
                     f"{_beats(test, t_blur, t_floor)}")
    return lines


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


# ``module.tile: ckpt`` (evaluate.py's and predict.py's default): restore as the checkpoint's run
# validated (its own module.tile), so evaluate.py split=val reproduces the run's val/psnr.
TILE_FROM_CHECKPOINT = "ckpt"
# An official VRT release carries no window of its own: upstream's GoPro deblurring test setting
# (main_test_vrt.py, task 006_VRT_videodeblurring_GoPro: --tile 18 192 192 --tile_overlap 2 20 20).
OFFICIAL_VRT_TILE = {"tile": [18, 192, 192], "tile_overlap": [2, 20, 20]}


# The data.* keys of a run's spike settings: how ``.dat`` streams become the network's input
# (SpikeReading) and how the spike floor is computed (FloorReading). A train.py checkpoint carries
# its run's values (Lightning saves the DataModule's hyper-parameters as ``datamodule_hyper_parameters``)
# and evaluate.py / predict.py take them from there.
CHECKPOINT_DATA_KEYS = (*SpikeReading.DATA_KEYS, *FloorReading.DATA_KEYS)
# Of those, the ones a command line may set to another value than the checkpoint's: whether a
# trailing partial spike frame is dropped (whole frames read the same either way), which floor is
# scored beside the restored frames, and how a camera stores its rows (a property of the
# recording's file format, not of the network: other footage may store them unflipped). None
# changes what the network is given.
OVERRIDABLE_DATA_KEYS = ("drop_partial_frames", "spike_floor", "flip_spike_rows")


def _given_keys(overrides: Sequence[str]) -> set[str]:
    """The config keys ``overrides`` set (``data.num_bins=8``, ``+key=...``, ``++key=...``). A group
    choice (``data=gopro_spike``) names the group, not the keys its file sets."""
    return {o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_delete()}


def _as_given(value: Any) -> str:
    """``value`` as a Hydra command line writes it (null, true, false)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _same_setting(a: Any, b: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) if numbers else a == b


def take_checkpoint_data(cfg: DictConfig, saved: Mapping[str, Any], ckpt_path: Path, overrides: Sequence[str]) -> None:
    """Set ``cfg.data``'s :data:`CHECKPOINT_DATA_KEYS` to the training run's values ``saved`` (its
    DataModule's hyper-parameters), logged once. A key given in ``overrides`` keeps its value; given
    with another value than the checkpoint's, a key other than :data:`OVERRIDABLE_DATA_KEYS` is a
    ValueError naming the key and both values."""
    given = _given_keys(overrides)
    taken = []
    with open_dict(cfg):
        for key in CHECKPOINT_DATA_KEYS:
            if key not in saved:
                continue
            value, configured = saved[key], cfg.data.get(key)
            if f"data.{key}" in given:
                if key not in OVERRIDABLE_DATA_KEYS and not _same_setting(configured, value):
                    raise ValueError(
                        f"data.{key}={_as_given(configured)} is given on the command line, but the checkpoint "
                        f"{ckpt_path} was trained with data.{key}={_as_given(value)}: its network reads spikes, and "
                        f"the spike floor is computed, as in its training run. Leave data.{key} out (the "
                        "checkpoint's value is taken)")
                continue
            cfg.data[key] = value
            differs = "" if _same_setting(configured, value) else f" (config: {_as_given(configured)})"
            taken.append(f"{key}={_as_given(value)}{differs}")
    if taken:
        log.info("spike settings of the checkpoint's training run (%s): data.%s", ckpt_path, ", data.".join(taken))


def load_for_inference(cfg: DictConfig, overrides: Sequence[str] | None = None) -> DeblurModule:
    """The network of ``cfg.ckpt_path`` in a :class:`DeblurModule` restoring as ``cfg.module.tile``
    (evaluate, predict): ``ckpt`` is the checkpoint's own window (:data:`TILE_FROM_CHECKPOINT`).

    A train.py checkpoint also sets ``cfg.data``'s spike settings to its run's
    (:func:`take_checkpoint_data`); ``overrides`` are the command line's (default: this Hydra run's),
    which must agree with them.
    """
    path = Path(cfg.ckpt_path)
    payload = _read_checkpoint(path)
    tile_cfg = cfg.module.get("tile")
    from_ckpt = tile_cfg == TILE_FROM_CHECKPOINT
    tile = None if from_ckpt or not tile_cfg else OmegaConf.to_container(tile_cfg, resolve=True)
    if isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
        # A train.py checkpoint: its own model config builds the matching network, and its run's
        # data settings read the spikes (checkpoints from before they were saved: cfg.data as given).
        if payload.get("datamodule_hyper_parameters"):
            take_checkpoint_data(cfg, payload["datamodule_hyper_parameters"], path,
                                 _task_overrides() if overrides is None else overrides)
        saved = payload["hyper_parameters"]
        hparams = {**saved, "tile": saved.get("tile") if from_ckpt else tile, "log_images": False}
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
    return DeblurModule(model=cfg.model, optim={"name": "adamw", "lr": 1e-4}, net=net,
                        tile=OFFICIAL_VRT_TILE if from_ckpt else tile, log_images=False)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, buf.getvalue())


EVAL_SPLITS = ("val", "test")


def _split_loader(cfg: DictConfig, split: str) -> tuple[DataLoader, Split]:
    """The DataModule's loader of ``split`` (val or test): every whole clip of it, one per batch, with
    the spike floor; the frames validation (val) and ``test=true`` (test) score in a training run."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"evaluate.py split must be one of {EVAL_SPLITS}, got {split!r}")
    # The DataModule only builds the embedded synthetic set when it is missing (data.build_if_missing).
    datamodule = hydra.utils.instantiate(cfg.data, cache=False, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    return loader, datamodule.splits[split]


def _floor_frames(loader: DataLoader) -> list[dict[str, Any]]:
    """Per-frame rows of the non-learned spike reading the loader carries (no network, no Lightning)."""
    rows: list[dict[str, Any]] = []
    for batch in loader:
        rows += score_frames(batch["spike_floor"], batch)
    return rows


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-clip and mean PSNR/SSIM on ``cfg.split`` (test by default; val gives a run's val figure):
    printed, and written to ``out_csv``.

    ``method=checkpoint`` (default) scores ``ckpt_path``; ``method=sdm|tfp`` scores that non-learned
    reading of the spike stream (:mod:`vrt_spike.models.classical`) on the same frames. Every
    restored frame stands beside its blurry input and the spike floor (``data.spike_floor``).
    A train.py checkpoint brings its run's spike settings (:func:`load_for_inference`, which reads
    ``overrides``: the command line's, default this Hydra run's).
    """
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    set_tf32(cfg.get("tf32", True))
    method = cfg.get("method", "checkpoint")
    split_role = str(cfg.get("split", "test"))
    restored = "no network"
    if method in FLOOR_METHODS:
        with open_dict(cfg):
            cfg.data.spike_floor = method
        loader, split = _split_loader(cfg, split_role)
        frames, is_zero = _floor_frames(loader), True
    elif method == "checkpoint":
        if cfg.get("ckpt_path") is None:
            raise ValueError("evaluate.py method=checkpoint needs ckpt_path=<file> (a train.py .ckpt or an official VRT "
                             "release); or score a non-learned spike reading with method=sdm or method=tfp")
        module = load_for_inference(cfg, overrides)
        with open_dict(cfg):
            cfg.model = module.hparams.model  # the network the checkpoint holds
        callbacks: list[Callback] = [SavePredictions(output_dir / "images")] if cfg.save_images else []
        trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks)
        loader, split = _split_loader(cfg, split_role)
        trainer.test(module, dataloaders=loader)
        frames, is_zero = module.test_frames, trainer.is_global_zero
        restored = describe_tile(module.hparams.tile)
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
        print(f"\n{method if method != 'checkpoint' else cfg.ckpt_path} on the {split.describe()} split "
              f"({restored})")
        print(f"{'clip':<{width}}  frames  " + "  ".join(f"{heads[m]:>11}" for m in metrics))
        for r in rows:
            print(f"{r['clip']:<{width}}  {r['frames']:>6}  " + "  ".join(f"{r[m]:>11.4f}" if m == "ssim" else f"{r[m]:>11.2f}"
                                                                      for m in metrics))
        print(f"written: {out_csv}", flush=True)
    return {"clips": clips, "mean": mean, "csv": str(cfg.out_csv), "split": split.describe()}
