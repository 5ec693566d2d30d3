"""The community GoPro-spike folder layout: discovery and validation.

::

    <root>/GOPRO_Large/{train,test}_GT/<clip>/<frame>.png            sharp
    <root>/GOPRO_Large/{train,test}_GT_blurred/<clip>/<frame>.png    blurred
    <root>/GOPRO_Large_spike_seq/{train,test}/<clip>/spike/<frame>.dat
    <root>/GOPRO_Large_spike_seq/config.yaml                        spike_h, spike_w

Frames are matched by file stem. Discovery only lists and stats files (and reads PNG headers);
pixels are decoded by the dataset.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from vrt_spike.data.image_io import png_size
from vrt_spike.data.spike_io import count_frames

__all__ = [
    "RGB_DIR", "SPIKE_DIR", "CONFIG_NAME", "sharp_dir", "blur_dir", "spike_dir", "config_path",
    "LayoutError", "SpikeConfig", "Clip", "read_spike_config", "clip_names", "discover",
]

RGB_DIR = "GOPRO_Large"
SPIKE_DIR = "GOPRO_Large_spike_seq"
CONFIG_NAME = "config.yaml"


class LayoutError(ValueError):
    """The dataset on disk does not follow the GoPro-spike layout."""


def sharp_dir(split: str, clip: str) -> Path:
    return Path(RGB_DIR) / f"{split}_GT" / clip


def blur_dir(split: str, clip: str) -> Path:
    return Path(RGB_DIR) / f"{split}_GT_blurred" / clip


def spike_dir(split: str, clip: str) -> Path:
    return Path(SPIKE_DIR) / split / clip / "spike"


def config_path(root: str | os.PathLike) -> Path:
    return Path(root) / SPIKE_DIR / CONFIG_NAME


@dataclass(frozen=True)
class SpikeConfig:
    height: int
    width: int


@dataclass(frozen=True)
class Clip:
    """One clip's files, frame-aligned (index i of each list is RGB frame i)."""

    name: str
    sharp: tuple[Path, ...]
    blur: tuple[Path, ...]
    spike: tuple[Path, ...]
    rgb_size: tuple[int, int]
    spike_frames: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.sharp)


def read_spike_config(root: str | os.PathLike) -> SpikeConfig:
    path = config_path(root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing spike config (expected a YAML file with integer keys spike_h, spike_w)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LayoutError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: expected a mapping with spike_h, spike_w, got {type(data).__name__}")
    values = []
    for key in ("spike_h", "spike_w"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise LayoutError(f"{path}: key {key!r} must be a positive integer, got {value!r}")
        values.append(value)
    return SpikeConfig(*values)


def _stems(directory: Path, suffix: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() == suffix and p.is_file()}


def clip_names(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted clip names of ``split`` (the directories under ``<root>/GOPRO_Large/<split>_GT``)."""
    sharp_root = Path(root) / RGB_DIR / f"{split}_GT"
    if not sharp_root.is_dir():
        raise FileNotFoundError(f"{sharp_root}: missing split directory (expected sharp clips of split {split!r})")
    return sorted(p.name for p in sharp_root.iterdir() if p.is_dir())


def discover(root: str | os.PathLike, split: str, *, drop_partial: bool = False,
             clips: Sequence[str] | None = None) -> tuple[SpikeConfig, list[Clip]]:
    """List and validate the clips of ``split``.

    Raises :class:`FileNotFoundError` / :class:`LayoutError` naming the file and the expected vs
    actual value for a missing directory or config, a missing spike file, mismatched frame lists,
    mis-sized ``.dat`` files (see :func:`spike_io.count_frames`) or PNGs of differing sizes.
    ``clips``: only these clip names of the split (a held-out subset, :mod:`vrt_spike.data.splits`),
    each of which must exist; None: every clip.
    """
    root = Path(root)
    spike_cfg = read_spike_config(root)
    sharp_root = root / RGB_DIR / f"{split}_GT"
    names = clip_names(root, split)
    if clips is not None:
        unknown = sorted(set(clips) - set(names))
        if unknown:
            raise FileNotFoundError(f"{sharp_root}: no clip directories {unknown[:5]} (expected the clips the split "
                                    f"names; found {len(names)})")
        names = sorted(set(clips))
    found = []
    for name in names:
        dirs = {"sharp": root / sharp_dir(split, name), "blur": root / blur_dir(split, name), "spike": root / spike_dir(split, name)}
        for kind, d in dirs.items():
            if not d.is_dir():
                raise FileNotFoundError(f"{d}: missing {kind} directory for clip {name!r}")
        sharp = _stems(dirs["sharp"], ".png")
        blur = _stems(dirs["blur"], ".png")
        spike = _stems(dirs["spike"], ".dat")
        if not sharp:
            raise LayoutError(f"{dirs['sharp']}: no PNG frames (expected at least 1)")
        if sorted(blur) != sorted(sharp):
            missing = sorted(set(sharp) - set(blur)) or sorted(set(blur) - set(sharp))
            raise LayoutError(
                f"{dirs['blur']}: frame list does not match {dirs['sharp']}: expected {len(sharp)} frames, "
                f"got {len(blur)} (first differing frame: {missing[0]!r})"
            )
        stems = sorted(sharp)
        for stem in stems:
            if stem not in spike:
                raise FileNotFoundError(
                    f"{dirs['spike'] / (stem + '.dat')}: missing spike file for frame {sharp[stem]} "
                    f"(expected one .dat per RGB frame: {len(stems)}, found {len(spike)})"
                )
        sizes = {png_size(sharp[stems[0]], LayoutError), png_size(blur[stems[0]], LayoutError)}
        if len(sizes) != 1:
            raise LayoutError(f"{blur[stems[0]]}: size differs from {sharp[stems[0]]}: {sorted(sizes)}")
        spike_frames = tuple(
            count_frames(spike[s], spike_cfg.height, spike_cfg.width, drop_partial=drop_partial) for s in stems
        )
        found.append(Clip(
            name=name,
            sharp=tuple(sharp[s] for s in stems),
            blur=tuple(blur[s] for s in stems),
            spike=tuple(spike[s] for s in stems),
            rgb_size=sizes.pop(),
            spike_frames=spike_frames,
        ))
    if not found:
        raise LayoutError(f"{sharp_root}: no clip directories (expected at least 1)")
    return spike_cfg, found
