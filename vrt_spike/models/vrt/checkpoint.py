"""Loading the official VRT and SpyNet release files (``weights_only=True``, strict)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


def _read_state_dict(path: str | Path, what: str) -> dict[str, Tensor]:
    """A raw state dict or ``{'params': state_dict}`` from ``path``; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weight file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "params" in obj and isinstance(obj["params"], Mapping):
        obj = obj["params"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"{what} weight file {path} must hold a state dict or {{'params': state_dict}}, "
            f"got {type(obj).__name__} with keys {list(obj)[:5] if isinstance(obj, Mapping) else '-'}"
        )
    return dict(obj)


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} [{shown}{', ...' if len(keys) > limit else ''}]"


def _load_strict(model: nn.Module, state: Mapping[str, Tensor], path: Path | str, optional: set[str] = frozenset()) -> None:
    """``load_state_dict(strict)`` with an error listing missing, unexpected and mis-shaped keys.

    Keys in ``optional`` may be absent from the file (they keep the model's values).
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f"{type(model).__name__} weights in {path} do not match the model: missing keys {_describe(missing)}; "
            f"unexpected keys {_describe(unexpected)}; shape mismatches {_describe(mismatched)}"
        )
    model.load_state_dict({**{k: own[k] for k in optional if k not in state}, **state}, strict=True)


def load_vrt_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official VRT release file (e.g. ``006_VRT_videodeblurring_GoPro.pth``) into ``model``.

    Accepts a raw state dict or ``{'params': ...}``; strict: any missing, unexpected or mis-shaped
    key raises a RuntimeError listing them. Returns ``model``.
    """
    _load_strict(model, _read_state_dict(path, "VRT"), path)
    return model


def load_spynet_weights(spynet: nn.Module, path: str | Path) -> nn.Module:
    """Load the official SpyNet file (``spynet_sintel_final-3d2a1287.pth``: ``basic_module.*`` keys).

    The file holds no ``mean``/``std`` normalisation buffers; those keep their fixed values.
    """
    _load_strict(spynet, _read_state_dict(path, "SpyNet"), path, optional={"mean", "std"})
    return spynet
