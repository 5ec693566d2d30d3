"""Whole clips for inference: a blurred RGB video and its spike stream, ground truth optional.

Clips are :class:`vrt_spike.data.layout.Clip` records, matched by :func:`layout.clip_files`, the one
discovery: :func:`layout.discover` finds them in a dataset root in the GoPro-spike layout (with
ground truth for validation and evaluation, or from the blurred frames and spikes alone, the
``*_GT`` folders then may be missing), and :func:`folder_clip` in two folders, one PNG per frame and
one ``.dat`` per frame with the same stems.

:func:`read_clip` decodes a clip exactly as :class:`~vrt_spike.data.dataset.SpikeDeblurDataset`
decodes its full-frame (or centre-cropped) samples; :class:`ClipDataset` is the thin Dataset on top
(one whole clip per item).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vrt_spike.data.image_io import read_png
from vrt_spike.data.layout import Clip, clip_files
from vrt_spike.data.representations import normalise, spike_counts
from vrt_spike.data.spike_io import read_dat
from vrt_spike.data.transforms import Box, center_crop_box, full_box, spike_scale, upsample_spike
from vrt_spike.models.spike_floor import FLOOR_METHODS, spike_floor

__all__ = [
    "FootageError", "SpikeReading", "FloorReading", "folder_clip", "read_clip", "read_spikes", "ClipDataset",
]


class FootageError(ValueError):
    """Input footage that cannot be restored as given (the message names the file or folder)."""


@dataclass(frozen=True)
class SpikeReading:
    """How ``.dat`` streams become the network's spike input (the ``data.*`` keys of training)."""

    # The data.* keys from_data_config reads (a train.py checkpoint carries its run's values).
    DATA_KEYS: ClassVar[tuple[str, ...]] = (
        "num_bins", "representation", "tfp_window", "spike_upsample", "flip_spike_rows", "drop_partial_frames")

    num_bins: int
    representation: str = "voxel"
    tfp_window: int | None = None
    upsample: str = "nearest"
    flip_rows: bool = True
    drop_partial: bool = False

    @classmethod
    def from_data_config(cls, data: Mapping[str, Any]) -> SpikeReading:
        """From a ``data.*`` config (``num_bins``, ``representation``, ``tfp_window``, ``spike_upsample``, ...)."""
        return cls(int(data["num_bins"]), str(data.get("representation", "voxel")), data.get("tfp_window"),
                   str(data.get("spike_upsample", "nearest")), bool(data.get("flip_spike_rows", True)),
                   bool(data.get("drop_partial_frames", False)))


@dataclass(frozen=True)
class FloorReading:
    """The non-learned spike reading scored beside every restored frame (``data.spike_floor``)."""

    # The data.* keys from_data_config reads.
    DATA_KEYS: ClassVar[tuple[str, ...]] = (
        "spike_floor", "sharp_instant", "sharp_width", "spike_threshold", "spike_gain")

    method: str  # one of spike_floor.FLOOR_METHODS
    center: float  # data.sharp_instant
    width: float  # data.sharp_width
    threshold: float = 2.0  # camera constants of tfp
    gain: float = 1.0

    @classmethod
    def from_data_config(cls, data: Mapping[str, Any]) -> FloorReading | None:
        """From ``data.spike_floor`` (None when it is null), ``sharp_instant``, ``sharp_width``, ``spike_*``."""
        method = data.get("spike_floor")
        if method is None:
            return None
        if method not in FLOOR_METHODS:
            raise ValueError(f"data.spike_floor must be one of {FLOOR_METHODS} or null, got {method!r}")
        return cls(str(method), float(data["sharp_instant"]), float(data["sharp_width"]),
                   float(data.get("spike_threshold", 2.0)), float(data.get("spike_gain", 1.0)))

    def read(self, blur: Tensor, raw: np.ndarray) -> Tensor:
        """``blur (3, H, W)`` and its exposure's raw ``(N, h, w)`` 0/1 spikes -> the reading ``(3, H, W)``."""
        return spike_floor(self.method, blur, torch.from_numpy(raw.astype(np.float32)), center=self.center,
                           width=self.width, threshold=self.threshold, gain=self.gain)


def folder_clip(blur_dir: str | os.PathLike, spike_dir: str | os.PathLike, spike_hw: Sequence[int], *,
                name: str | None = None, drop_partial: bool = False) -> Clip:
    """A clip from ``blur_dir/<stem>.png`` and ``spike_dir/<stem>.dat`` (spikes of ``spike_hw``).

    The clip is named after ``blur_dir`` unless ``name`` is given. ``spike_hw`` is typed by hand:
    the frame size must be an integer multiple of it, which catches a wrong one.
    """
    if len(spike_hw) != 2 or any(int(v) <= 0 for v in spike_hw):
        raise FootageError(f"input.spike_hw: expected [height, width] of the spike sensor, got {list(spike_hw)}")
    blur_path, spike_size = Path(blur_dir), (int(spike_hw[0]), int(spike_hw[1]))
    clip = clip_files(name or blur_path.name, blur_path, spike_dir, spike_size, "input.spike_hw",
                      drop_partial=drop_partial, error=FootageError)
    spike_scale(clip.rgb_size, spike_size, f"{clip.blur[0]} (spike size {spike_size[0]}×{spike_size[1]} from "
                                           "input.spike_hw)")
    return clip


def _box(clip: Clip, crop_size: int | None) -> Box:
    if crop_size is None:
        return full_box(clip.rgb_size, clip.spike_size)
    return center_crop_box(clip.rgb_size, clip.spike_size, crop_size, str(clip.blur[0].parent))


def read_spikes(clip: Clip, index: int, reading: SpikeReading) -> np.ndarray:
    """Raw ``(N, h, w)`` 0/1 spikes of frame ``index``'s exposure, rows in image order."""
    h, w = clip.spike_size
    return read_dat(clip.spike[index], h, w, flip=reading.flip_rows, drop_partial=reading.drop_partial)


def read_clip(clip: Clip, reading: SpikeReading, *, crop_size: int | None = None,
              floor: FloorReading | None = None) -> dict[str, Tensor]:
    """Decode a whole clip: ``blur (T, 3, H, W)``, ``spike (T, K, H, W)`` on the RGB grid, and
    ``sharp (T, 3, H, W)`` when the clip has ground truth; float32 in [0, 1]. With ``floor``, also
    ``spike_floor (T, 3, H, W)``: that reading of each frame's raw stream (not of the voxels).

    ``crop_size``: the centre crop of evaluation (``data.eval_crop_size``), or None for full frames.
    """
    short = [i for i, n in enumerate(clip.spike_frames) if n < reading.num_bins]
    if short:
        raise FootageError(f"{clip.spike[short[0]]}: expected >= num_bins={reading.num_bins} spike frames per "
                           f"exposure, got {clip.spike_frames[short[0]]}")
    box = _box(clip, crop_size)
    y0, x0, bh, bw = box.rgb
    sy, sx, sh, sw = box.spike

    def rgb(paths: tuple[Path, ...]) -> Tensor:
        frames = np.stack([read_png(p, clip.rgb_size)[y0 : y0 + bh, x0 : x0 + bw] for p in paths])
        return torch.from_numpy(np.divide(frames.transpose(0, 3, 1, 2), 255, dtype=np.float32))

    blur = rgb(clip.blur)
    counts, floor_frames = [], []
    for i in range(len(clip)):
        raw = read_spikes(clip, i, reading)[:, sy : sy + sh, sx : sx + sw]
        counts.append(normalise(*spike_counts(raw, reading.num_bins, reading.representation, reading.tfp_window)))
        if floor is not None:
            floor_frames.append(floor.read(blur[i], raw))
    spike = upsample_spike(np.stack(counts), (bh, bw), reading.upsample)
    out = {"blur": blur, "spike": torch.from_numpy(np.ascontiguousarray(spike, dtype=np.float32))}
    if clip.sharp is not None:
        out["sharp"] = rgb(clip.sharp)
    if floor is not None:
        out["spike_floor"] = torch.stack(floor_frames)
    return out


class ClipDataset(Dataset):
    """One whole clip per item: :func:`read_clip`'s tensors plus ``clip`` (name) and ``frame_start`` (0).

    The DataModule's val and test loaders are this dataset (``evaluate.py`` scores through them) and
    ``predict.py`` decodes with the same :func:`read_clip`, so every score reads the same frames the
    same way.
    """

    def __init__(self, clips: Sequence[Clip], reading: SpikeReading, *, crop_size: int | None = None,
                 floor: FloorReading | None = None) -> None:
        self.clips, self.reading, self.crop_size, self.floor = list(clips), reading, crop_size, floor

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        frames = read_clip(clip, self.reading, crop_size=self.crop_size, floor=self.floor)
        return {**frames, "clip": clip.name, "frame_start": 0}
