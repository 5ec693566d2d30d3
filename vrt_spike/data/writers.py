"""Restored frames to files: PNG images and an H.264 MP4 (PyAV, which bundles FFmpeg), written atomically.

Every writer goes through :func:`vrt_spike.atomic.atomic_path`, so a crash or an interrupt never
leaves a half-written frame or video under the final name.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from einops import rearrange
from PIL import Image
from torch import Tensor

from vrt_spike.atomic import atomic_path

__all__ = ["to_uint8", "side_by_side", "write_png", "write_mp4", "even_size"]

VIDEO_CODEC = "libx264"
VIDEO_PIXEL_FORMAT = "yuv420p"  # what players decode; needs even width and height


def to_uint8(frames: Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8, rounded as ``torchvision.utils.save_image``."""
    scaled = frames.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).byte()
    return rearrange(scaled, "t c h w -> t h w c").numpy()


def side_by_side(panels: Sequence[np.ndarray]) -> np.ndarray:
    """``(T, H, W_i, 3)`` uint8 panels of equal T and H -> ``(T, H, sum W_i, 3)``, left to right."""
    shapes = {p.shape[:2] for p in panels}
    if len(shapes) != 1:
        raise ValueError(f"side_by_side: panels must share (T, H), got shapes {[p.shape for p in panels]}")
    return np.concatenate(panels, axis=2)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 image to ``path`` atomically."""
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(image, "RGB").save(tmp, format="PNG")


def even_size(height: int, width: int) -> tuple[int, int]:
    """The video's frame size: ``yuv420p`` subsamples chroma 2x, so odd sides grow by one pixel."""
    return height + height % 2, width + width % 2


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18) -> None:
    """Encode ``(T, H, W, 3)`` uint8 frames as H.264 to ``path`` atomically.

    Odd sides are padded by repeating the last row/column (see :func:`even_size`).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"{path}: expected (T >= 1, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if not fps > 0:
        raise ValueError(f"{path}: expected a frame rate > 0, got fps={fps}")
    h, w = frames.shape[1:3]
    eh, ew = even_size(h, w)
    frames = np.pad(frames, ((0, 0), (0, eh - h), (0, ew - w), (0, 0)), mode="edge")
    with atomic_path(Path(path)) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = ew, eh, VIDEO_PIXEL_FORMAT
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
