"""Fail-fast checks of a composed train/evaluate config: each error names the key, expected and actual."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from vrt_spike import PROJECT_ROOT

__all__ = ["check_config", "register_resolvers", "apply_overrides", "checkpointing_overrides", "set_checkpointing",
           "checkpointing_summary"]

_SCALE = 8  # VRT stage 4 runs at 1/8 of the input
_SPAWNED_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def register_resolvers() -> None:
    """The resolvers conf/ uses: ``${project_root:}`` (so every entry point resolves paths from the
    project root), ``${synthetic_sharp_instant:N}``: the embedded synthetic data's ground truth is
    sub-frame N // 2 of the N sub-frames an exposure averages (vrt_spike.data.simulate), and this is
    its centre as a fraction of the exposure; ``${sweep_name:default}``: the sweep directory's name in a
    job of a sweep, else ``default`` (``vrt_spike.lit.runtime.sweep_name``: one W&B group per sweep)."""
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("sweep_name", _sweep_name, replace=True)
    OmegaConf.register_new_resolver("synthetic_sharp_instant", lambda n: (int(n) // 2 + 0.5) / int(n), replace=True)


def _sweep_name(default: str) -> str:
    from vrt_spike.lit.runtime import sweep_name

    return sweep_name(default)


register_resolvers()  # on import: whoever composes conf/ imports vrt_spike.lit first


def _get(cfg: DictConfig, key: str, default=None):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return default
        node = node[part]
    return node


def check_config(cfg: DictConfig) -> None:
    """Raise ``ValueError`` for values that would only fail (or silently misbehave) deep inside a run."""
    vrt = _get(cfg, "model.vrt")
    if vrt is None:
        raise ValueError("model.vrt is missing: choose a preset with model=baseline|opt|fast|tiny")
    depths = list(vrt.depths)
    for key in ("embed_dims", "num_heads"):
        other = list(vrt[key])
        if len(other) != len(depths):
            raise ValueError(f"model.vrt.depths has {len(depths)} entries but model.vrt.{key} has {len(other)}: "
                             f"they must have one entry per stage/group (depths={depths}, {key}={other})")
    if len(depths) < 8:
        raise ValueError(f"model.vrt.depths must list stages 1-7 and at least one stage-8 group (>= 8 entries), "
                         f"got {len(depths)}: {depths}")
    if any(int(d) < 1 for d in depths):
        raise ValueError(f"model.vrt.depths entries must be >= 1, got {depths}")
    window = [int(w) for w in vrt.window_size]
    if len(window) != 3:
        raise ValueError(f"model.vrt.window_size must be [T, H, W], got {window}")
    crop = _get(cfg, "data.crop_size")
    if crop is not None:
        # VRT's 1/8-scale stage needs one full window, and SpyNet's coarsest level > 32 px.
        need = max(_SCALE * max(window[1:]), 40)
        if int(crop) < need or int(crop) % _SCALE:
            raise ValueError(f"data.crop_size={crop} does not fit model.vrt.window_size={window}: the crop must be a "
                             f"multiple of {_SCALE} and >= max({_SCALE} x spatial window, 40) = {need} "
                             f"(the 1/{_SCALE}-scale stage needs a whole window); use a larger crop or a smaller window")
    for key in ("data.batch_size", "data.clip_len"):
        value = _get(cfg, key)
        if value is not None and int(value) < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    strategy = _get(cfg, "trainer.strategy")
    if isinstance(strategy, str) and strategy.startswith(_SPAWNED_STRATEGIES):
        raise ValueError(f"trainer.strategy={strategy}: expected ddp or auto. A spawned strategy fits in worker "
                         "processes, and the run's summary, selected checkpoint and test need the fit's state in the "
                         "process that called fit (several devices in a sweep: each job runs under torchrun)")
    precision = str(_get(cfg, "trainer.precision", "32"))
    allowed = ("32", "32-true", "16-mixed", "bf16-mixed", "64", "64-true", "bf16-true", "16-true")
    if precision not in allowed:
        raise ValueError(f"trainer.precision: expected one of 32, 16-mixed, bf16-mixed, got {precision!r}")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A copy of the composed ``cfg`` with ``key=value`` overrides (Hydra's syntax) applied.

    Keys only: a config group choice (``optim=adamw8bit``) would need the group's file, so it is
    refused with the key named; give the keys it sets instead (``optim.name=adamw8bit``).
    """
    cfg = copy.deepcopy(cfg)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key, value = override.key_or_group, override.value()
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig) and not isinstance(value, Mapping):
            raise ValueError(f"override {override.input_line!r}: {key} is a config group or block here, not a key; "
                             f"give its keys ({key}.<name>=...)")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def checkpointing_overrides(model_cfg: Mapping[str, Any], on: bool) -> list[str]:
    """The ``model.*`` overrides that turn every activation-checkpoint switch of ``model_cfg`` on or
    off: each boolean ``use_checkpoint*`` key, and, turning them on, VRT's exceptions
    (``no_checkpoint_attn_blocks``, ``no_checkpoint_ffn_blocks``) emptied."""
    out: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}"
            if str(key).startswith("use_checkpoint") and isinstance(value, bool):
                if value != on:
                    out.append(f"{path}={str(on).lower()}")
            elif on and str(key).startswith("no_checkpoint_") and value:
                out.append(f"{path}=[]")
            elif isinstance(value, Mapping):
                walk(value, path)

    walk(model_cfg, "model")
    return out


def set_checkpointing(model_cfg: Mapping[str, Any], on: bool) -> dict[str, Any]:
    """A copy of the resolved ``model_cfg`` with :func:`checkpointing_overrides` applied."""
    node = OmegaConf.create({"model": dict(model_cfg)})
    return OmegaConf.to_container(apply_overrides(node, checkpointing_overrides(model_cfg, on)).model)


def checkpointing_summary(model_cfg: Mapping[str, Any]) -> str:
    """Which activation-checkpoint switches of the model config are on (``off`` when none): every
    boolean key whose name starts with ``use_checkpoint``, as ``vrt.use_checkpoint_attn+...``."""
    on: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if str(key).startswith("use_checkpoint") and isinstance(value, bool):
                if value:
                    on.append(f"{prefix}{key}")
            elif isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")

    walk(model_cfg, "")
    return "+".join(on) if on else "off"
