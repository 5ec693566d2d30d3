"""Loading a checkpoint for inference with its training run's settings (`load_for_inference`, used by
evaluate.py and predict.py): its model config, its restoration window and its spike settings."""
from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from vrt_spike.data.footage import FloorReading, SpikeReading
from vrt_spike.lit.module import DeblurModule, build_net
from vrt_spike.lit.runtime import task_overrides

__all__ = ["load_for_inference", "take_checkpoint_data", "CHECKPOINT_DATA_KEYS", "TILE_FROM_CHECKPOINT"]

log = logging.getLogger(__name__)


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

