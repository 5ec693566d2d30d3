"""Raw spike-camera streams (``.dat``) as SpikeCV and the cameras store them.

A ``.dat`` file has no header. Each frame is ``H * W`` bits; pixel ``p = y * W + x`` lives in
byte ``p // 8`` at bit ``p % 8`` (least significant bit first). Cameras write the rows upside
down, so by default rows are flipped on write and flipped back on read.

Reads are memory-mapped: a frame range decodes only its own bytes.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from vrt_spike.atomic import write_bytes_atomically

__all__ = ["SpikeFormatError", "frame_bytes", "count_frames", "read_dat", "write_dat", "encode_frames"]


class SpikeFormatError(ValueError):
    """A ``.dat`` file (or the spike size it is read with) is inconsistent."""


def frame_bytes(height: int, width: int) -> int:
    """Bytes per spike frame; ``H * W`` must be a multiple of 8 (frames are byte aligned)."""
    if height <= 0 or width <= 0:
        raise SpikeFormatError(f"spike size must be positive, got H×W = {height}×{width}")
    bits = height * width
    if bits % 8:
        raise SpikeFormatError(
            f"spike frames must be byte aligned: H×W = {height}×{width} = {bits} bits is not a multiple of 8"
        )
    return bits // 8


def count_frames(path: str | os.PathLike, height: int, width: int, *, drop_partial: bool = False) -> int:
    """Number of whole frames in ``path``.

    A size that is not a whole number of frames raises :class:`SpikeFormatError` naming the file,
    H×W and the size; with ``drop_partial=True`` the trailing partial frame is ignored with a warning.
    """
    nbytes = frame_bytes(height, width)
    size = os.path.getsize(path)
    frames, rest = divmod(size, nbytes)
    if rest:
        msg = (
            f"{path}: size {size} bytes is not a whole number of {height}×{width} spike frames "
            f"({nbytes} bytes each): expected a multiple of {nbytes}, got {frames} frames + {rest} bytes"
        )
        if not drop_partial:
            raise SpikeFormatError(msg)
        warnings.warn(msg + "; dropping the trailing partial frame", stacklevel=2)
    return frames


def read_dat(
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    start: int = 0,
    stop: int | None = None,
    flip: bool = True,
    drop_partial: bool = False,
) -> np.ndarray:
    """Decode frames ``[start, stop)`` of a ``.dat`` file.

    Returns:
        ``(N, H, W)`` uint8 array of 0/1 spikes, rows in image order (top row first) when ``flip``.
    """
    total = count_frames(path, height, width, drop_partial=drop_partial)
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise SpikeFormatError(f"{path}: frame range [{start}, {stop}) outside the file's {total} frames")
    n = stop - start
    if n == 0:
        return np.zeros((0, height, width), np.uint8)
    nbytes = frame_bytes(height, width)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=start * nbytes, shape=(n * nbytes,))
    bits = np.unpackbits(raw, bitorder="little").reshape(n, height, width)
    del raw  # release the mapping; `bits` is an independent array
    if flip:
        bits = np.ascontiguousarray(bits[:, ::-1])
    return bits


def encode_frames(spikes: np.ndarray, *, flip: bool = True) -> bytes:
    """Bytes of ``(N, H, W)`` 0/1 spikes in the ``.dat`` layout."""
    spikes = np.asarray(spikes)
    if spikes.ndim != 3:
        raise SpikeFormatError(f"spikes must be (N, H, W), got shape {spikes.shape}")
    if spikes.size and not np.isin(spikes, (0, 1)).all():
        raise SpikeFormatError("spikes must be 0/1 (or bool)")
    n, h, w = spikes.shape
    frame_bytes(h, w)
    if flip:
        spikes = spikes[:, ::-1]
    return np.packbits(spikes.astype(np.uint8, copy=False).reshape(n, h * w), axis=1, bitorder="little").tobytes()


def write_dat(path: str | os.PathLike, spikes: np.ndarray, *, flip: bool = True) -> None:
    """Write ``(N, H, W)`` 0/1 spikes to ``path`` atomically (:mod:`vrt_spike.atomic`)."""
    data = encode_frames(spikes, flip=flip)
    write_bytes_atomically(path, data)
