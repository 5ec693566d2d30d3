"""Inference from a checkpoint: loading it with its run's settings (`load_for_inference`, used by evaluate.py and predict.py) and scoring it on a whole split (`evaluate`, what `evaluate.py` does)."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from vrt_spike.atomic import write_text_atomically
from vrt_spike.data.footage import FloorReading, SpikeReading
from vrt_spike.data.writers import to_uint8, write_png
from vrt_spike.data.splits import Split
from vrt_spike.lit.module import FRAME_METRICS, DeblurModule, build_net, score_frames, summarise_frames
from vrt_spike.lit.runtime import set_tf32, task_overrides
from vrt_spike.models.spike_floor import FLOOR_METHODS
from vrt_spike.restore import describe_tile

__all__ = ["evaluate", "load_for_inference", "take_checkpoint_data", "CHECKPOINT_DATA_KEYS", "TILE_FROM_CHECKPOINT", "SavePredictions"]

log = logging.getLogger(__name__)


class SavePredictions(Callback):
    """Writes each restored test frame to ``<out_dir>/<clip>/<frame:06d>.png``."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        for s, clip in enumerate(batch["clip"]):
            for t, frame in enumerate(to_uint8(outputs[s])):
                write_png(self.out_dir / clip / f"{int(batch['frame_start'][s]) + t:06d}.png", frame)


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
                                 task_overrides() if overrides is None else overrides)
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
    reading of the spike stream (:mod:`vrt_spike.models.spike_floor`) on the same frames. Every
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
