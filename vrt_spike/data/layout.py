"""Clip discovery: the GoPro-spike folder layout and the one stem matching of every clip.

::

    <root>/GOPRO_Large/{train,test}_GT/<clip>/<frame>.png            sharp
    <root>/GOPRO_Large/{train,test}_GT_blurred/<clip>/<frame>.png    blurred
    <root>/GOPRO_Large_spike_seq/{train,test}/<clip>/spike/<frame>.dat
    <root>/GOPRO_Large_spike_seq/config.yaml                        spike_h, spike_w

:func:`clip_files` matches one clip's folders by file stem (blurred PNGs, one ``.dat`` per frame,
sharp PNGs when there is ground truth) and is the only matcher: :func:`discover` calls it for each
clip of a layout split (training, validation, evaluation, and ``predict.py`` on a dataset root),
:func:`vrt_spike.data.footage.folder_clip` for two folders of footage. Discovery only lists and
stats files (and reads PNG headers); pixels are decoded by the readers.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from vrt_spike.data.image_io import png_size
from vrt_spike.data.spike_io import SpikeFormatError, count_frames

__all__ = [
    "RGB_DIR", "SPIKE_DIR", "CONFIG_NAME", "sharp_dir", "blur_dir", "spike_dir", "config_path",
    "LayoutError", "SpikeConfig", "Clip", "read_spike_config", "clip_names", "clip_files", "discover",
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


# How many unmatched stems an error lists.
SHOWN_STEMS = 5


@dataclass(frozen=True)
class Clip:
    """One clip's files, frame-aligned: index i of each tuple is RGB frame i (sorted by stem).

    ``sharp`` is None for footage without ground truth; ``spike_frames`` counts each exposure's
    spike frames (of ``spike_size``).
    """

    name: str
    stems: tuple[str, ...]
    blur: tuple[Path, ...]
    spike: tuple[Path, ...]
    sharp: tuple[Path, ...] | None
    rgb_size: tuple[int, int]
    spike_size: tuple[int, int]
    spike_frames: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.stems)


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


def _frame_files(directory: Path, suffix: str, what: str, error: type[ValueError]) -> dict[str, Path]:
    """``{stem: path}`` of the ``suffix`` files in ``directory``; missing or empty is an error."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: missing directory: expected {what} (*{suffix})")
    found = {p.stem: p for p in sorted(directory.iterdir()) if p.is_file() and p.suffix.lower() == suffix}
    if not found:
        raise error(f"{directory}: empty folder: expected {what} (*{suffix}), got none")
    return found


def _shown(stems: Sequence[str]) -> str:
    more = f" and {len(stems) - SHOWN_STEMS} more" if len(stems) > SHOWN_STEMS else ""
    return f"{list(stems[:SHOWN_STEMS])}{more}"


def _match_stems(blur: dict[str, Path], other: dict[str, Path], blur_dir: Path, other_dir: Path, kind: str,
                 error: type[ValueError]) -> None:
    """Refuse ``other`` (``kind``: ``spike .dat``, ``sharp PNG``) unless its stems are the blurred frames'."""
    if blur.keys() == other.keys():
        return
    no_other = sorted(blur.keys() - other.keys())
    no_blur = sorted(other.keys() - blur.keys())
    raise error(
        f"{other_dir}: {kind} files do not match the blurred frames in {blur_dir}: expected one {kind} per blurred "
        f"PNG with the same stem, got {len(blur)} blurred PNG and {len(other)} {kind}; blurred PNG without {kind}: "
        f"{len(no_other)} {_shown(no_other)}; {kind} without blurred PNG: {len(no_blur)} {_shown(no_blur)}")


def clip_files(name: str, blur_folder: str | os.PathLike, spike_folder: str | os.PathLike, spike_size: tuple[int, int],
               size_source: str, *, sharp_folder: str | os.PathLike | None = None, drop_partial: bool = False,
               error: type[ValueError] = LayoutError) -> Clip:
    """One clip from ``blur_folder/<stem>.png``, ``spike_folder/<stem>.dat`` and, with ground truth,
    ``sharp_folder/<stem>.png``: the same stems in every folder, in stem order.

    ``spike_size``: ``(h, w)`` of a spike frame, from ``size_source`` (the config file or key that
    errors name). Raises :class:`FileNotFoundError` for a missing folder and ``error`` (the
    caller's type) naming the folder or file and the expected vs actual value for an empty folder,
    stems that do not match (the first :data:`SHOWN_STEMS` of each side), sharp and blurred PNGs of
    different sizes, a ``.dat`` that is not whole spike frames (see :func:`spike_io.count_frames`;
    ``drop_partial`` drops a trailing partial frame with a warning) or holds none.
    """
    blur_folder, spike_folder = Path(blur_folder), Path(spike_folder)
    blur = _frame_files(blur_folder, ".png", "blurred RGB frames", error)
    sharp = None
    if sharp_folder is not None:
        sharp_folder = Path(sharp_folder)
        sharp = _frame_files(sharp_folder, ".png", f"one sharp frame per blurred frame ({len(blur)})", error)
        _match_stems(blur, sharp, blur_folder, sharp_folder, "sharp PNG", error)
    spike = _frame_files(spike_folder, ".dat", f"one spike stream per blurred frame ({len(blur)})", error)
    _match_stems(blur, spike, blur_folder, spike_folder, "spike .dat", error)
    stems = sorted(blur)
    first = stems[0]
    rgb_size = png_size(blur[first], error)
    if sharp is not None:
        sharp_size = png_size(sharp[first], error)
        if sharp_size != rgb_size:
            raise error(f"{sharp[first]}: size differs from {blur[first]}: expected {rgb_size[0]}×{rgb_size[1]}, "
                        f"got {sharp_size[0]}×{sharp_size[1]}")
    frames = []
    for stem in stems:
        try:
            frames.append(count_frames(spike[stem], *spike_size, drop_partial=drop_partial))
        except SpikeFormatError as err:
            raise error(f"{err} (spike size from {size_source})") from err
        if frames[-1] == 0:
            raise error(f"{spike[stem]}: empty spike stream: expected >= 1 frame of {spike_size[0]}×{spike_size[1]}, "
                        "got 0 bytes")
    return Clip(name, tuple(stems), tuple(blur[s] for s in stems), tuple(spike[s] for s in stems),
                None if sharp is None else tuple(sharp[s] for s in stems), rgb_size, spike_size, tuple(frames))


def _clip_dirs(split_root: Path, what: str) -> list[str]:
    if not split_root.is_dir():
        raise FileNotFoundError(f"{split_root}: missing split directory (expected {what})")
    return sorted(p.name for p in split_root.iterdir() if p.is_dir())


def clip_names(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted clip names of ``split`` (the directories under ``<root>/GOPRO_Large/<split>_GT``)."""
    return _clip_dirs(Path(root) / RGB_DIR / f"{split}_GT", f"sharp clips of split {split!r}")


def discover(root: str | os.PathLike, split: str, *, sharp: bool = True, drop_partial: bool = False,
             clips: Sequence[str] | None = None) -> list[Clip]:
    """The clips of ``split`` under a GoPro-spike ``root``, each matched by :func:`clip_files`.

    ``sharp``: with ground truth (training, validation, evaluation: the clips are the directories
    of ``<split>_GT``), or from the blurred frames and spikes alone (``predict.py``: the clips of
    ``<split>_GT_blurred``; the ``*_GT`` folders may be missing). ``clips``: only these clip names
    of the split (a held-out subset, :mod:`vrt_spike.data.splits`), each of which must exist; None:
    every clip. Raises :class:`FileNotFoundError` / :class:`LayoutError` naming the file and the
    expected vs actual value (a missing or invalid config, a missing split, and :func:`clip_files`'s).
    """
    root = Path(root)
    spike_cfg = read_spike_config(root)
    kind, folder = ("sharp", f"{split}_GT") if sharp else ("blurred", f"{split}_GT_blurred")
    split_root = root / RGB_DIR / folder
    names = _clip_dirs(split_root, f"{kind} clips of split {split!r}")
    if not names:
        raise LayoutError(f"{split_root}: empty folder: expected clip directories, got none")
    if clips is not None:
        unknown = sorted(set(clips) - set(names))
        if unknown:
            raise FileNotFoundError(f"{split_root}: no clip directories {unknown[:5]} (expected the clips the split "
                                    f"names; found {len(names)})")
        names = sorted(set(clips))
    return [clip_files(name, root / blur_dir(split, name), root / spike_dir(split, name),
                       (spike_cfg.height, spike_cfg.width), str(config_path(root)),
                       sharp_folder=root / sharp_dir(split, name) if sharp else None, drop_partial=drop_partial)
            for name in names]
