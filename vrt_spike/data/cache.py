"""HDF5 cache of spike representations (counts per channel) for one split.

The cache holds, for every clip, ``counts (F, K, h, w)`` and window ``lengths (F, K)`` at spike
resolution (see :mod:`representations`), so a cached sample equals a freshly computed one bit for
bit and a crop reads only its own box. The file name carries a key over everything that changes
the content: representation, K, TFP window, spike size, row flip and the source files' sizes and
modification times. A config change therefore never reads stale voxels; it builds a new file.
Files are written to a temp name and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from vrt_spike.atomic import atomic_path
from vrt_spike.data.layout import Clip
from vrt_spike.data.representations import REPRESENTATIONS, spike_counts
from vrt_spike.data.spike_io import read_dat

__all__ = ["CacheSpec", "cache_key", "cache_file", "build_cache", "VoxelCache", "CacheError"]

log = logging.getLogger(__name__)
_FORMAT = "vrt-spike-voxel-cache/1"


class CacheError(ValueError):
    """A cache file does not match the requested key."""


@dataclass(frozen=True)
class CacheSpec:
    """Everything besides the source files that determines the cached values."""

    representation: str
    num_bins: int
    tfp_window: int | None
    spike_h: int
    spike_w: int
    flip_rows: bool
    drop_partial: bool

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}")


def cache_key(spec: CacheSpec, clips: list[Clip]) -> str:
    """Hex digest over the spec and the spike files' names, sizes and mtimes."""
    files = []
    for clip in clips:
        for path in clip.spike:
            st = os.stat(path)
            files.append((clip.name, path.name, st.st_size, st.st_mtime_ns))
    payload = json.dumps({"format": _FORMAT, "spec": asdict(spec), "files": files}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_file(cache_dir: str | os.PathLike, split: str, spec: CacheSpec, key: str) -> Path:
    window = f"-w{spec.tfp_window}" if spec.representation == "tfp" and spec.tfp_window is not None else ""
    name = f"{split}-{spec.representation}{window}-K{spec.num_bins}-{spec.spike_h}x{spec.spike_w}-{key[:16]}.h5"
    return Path(cache_dir) / name


def build_cache(path: str | os.PathLike, spec: CacheSpec, clips: list[Clip], key: str) -> Path:
    """Write the cache for ``clips`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    h, w, k = spec.spike_h, spec.spike_w, spec.num_bins
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = _FORMAT
        f.attrs["key"] = key
        f.attrs["spec"] = json.dumps(asdict(spec), sort_keys=True)
        for clip in clips:
            group = f.create_group(clip.name)
            counts = lengths = None
            for i, spike_path in enumerate(clip.spike):
                bits = read_dat(spike_path, h, w, flip=spec.flip_rows, drop_partial=spec.drop_partial)
                c, n = spike_counts(bits, k, spec.representation, spec.tfp_window)
                if counts is None:
                    # 64x64 spatial chunks: a training crop reads only the chunks it overlaps.
                    chunks = (1, k, min(h, 64), min(w, 64))
                    counts = group.create_dataset("counts", (len(clip), k, h, w), dtype=c.dtype, chunks=chunks)
                    lengths = group.create_dataset("lengths", (len(clip), k), dtype=np.int64)
                if c.dtype != counts.dtype:
                    raise CacheError(f"{spike_path}: expected {counts.dtype} counts like the clip's first frame, got {c.dtype} (windows of {n.max()} frames)")
                counts[i] = c
                lengths[i] = n
    log.info("wrote spike cache %s", path)
    return path


class VoxelCache:
    """Read-only view of one cache file; opens lazily in each process (safe with DataLoader workers)."""

    def __init__(self, path: str | os.PathLike, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: spike cache missing (build it with the DataModule's prepare_data())")
            f = h5py.File(self.path, "r")
            if f.attrs.get("key") != self.key:
                actual = f.attrs.get("key")
                f.close()
                raise CacheError(f"{self.path}: cache key mismatch: expected {self.key}, got {actual}")
            self._file, self._pid = f, os.getpid()
        return self._file

    def read(self, clip: str, start: int, stop: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """``(stop - start, K, bh, bw)`` float32 representation of frames ``[start, stop)``.

        Args:
            box: ``(y0, x0, bh, bw)`` on the spike grid, or None for full frames.
        """
        group = self._open()[clip]
        if box is None:
            counts = group["counts"][start:stop]
        else:
            y0, x0, bh, bw = box
            counts = group["counts"][start:stop, :, y0 : y0 + bh, x0 : x0 + bw]
        lengths = group["lengths"][start:stop]
        return counts.astype(np.float32) / lengths.astype(np.float32)[:, :, None, None]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "key": self.key, "_file": None, "_pid": None}
