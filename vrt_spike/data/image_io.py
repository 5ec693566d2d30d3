"""PNG frames: the project's one image reader (training, validation, evaluation, footage).

Frames are 8-bit RGB. As KAIR's ``cv2.imread`` and torchvision's ``read_image(mode=RGB)`` do, a
grayscale PNG reads as three equal channels, a palette PNG as its colours and an RGBA (or
grayscale + alpha) PNG as its colour channels, alpha dropped: spike cameras and many third-party
recordings are monochrome. Each such conversion is logged once per mode and process. What cannot
be an 8-bit frame is refused with the file named: an unreadable file, 16 bits per channel (Pillow
would silently truncate 16-bit RGB), or a size other than the clip's.
"""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

__all__ = ["png_size", "read_png"]

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow modes read as RGB, and how (what the log says once).
AS_RGB = {"L": "three equal channels", "1": "three equal channels", "LA": "three equal channels, alpha dropped",
          "P": "the palette's colours", "PA": "the palette's colours, alpha dropped", "RGBA": "alpha dropped"}
_logged_modes: set[str] = set()


def _png_header(head: bytes, path: Path, error: type[ValueError], expected: str) -> tuple[int, int, int]:
    """``(height, width, bit depth)`` from a PNG's first 26 bytes (the signature, then IHDR)."""
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise error(f"{path}: unreadable PNG (expected {expected}): no PNG signature and IHDR header")
    width, height = struct.unpack(">II", head[16:24])
    return height, width, head[24]


def _open(path: Path, error: type[ValueError], expected: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as err:
        raise error(f"{path}: unreadable PNG (expected {expected}): {err}") from err


def _decode(f: BinaryIO, path: Path, expected: str) -> tuple[np.ndarray, str]:
    """Pixels ``(H, W, 3)`` (modes of :data:`AS_RGB` converted) and the file's Pillow mode."""
    try:
        with Image.open(f) as im:
            im.load()
            return np.asarray(im.convert("RGB") if im.mode in AS_RGB else im), im.mode
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: unreadable PNG (expected {expected}): {err}") from err


def png_size(path: str | os.PathLike, error: type[ValueError] = ValueError) -> tuple[int, int]:
    """``(height, width)`` of a PNG from its header (no decoding); ``error`` is the caller's error type."""
    path = Path(path)
    with _open(path, error, "a PNG image") as f:
        height, width, _ = _png_header(f.read(26), path, error, "a PNG image")
    return height, width


def read_png(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 of an 8-bit PNG of ``size`` (grayscale, palette and alpha read as RGB)."""
    path = Path(path)
    expected = f"an RGB image of {size[0]}×{size[1]}, 8 bits per channel"
    with _open(path, ValueError, expected) as f:  # one open for the header and the pixels: a hot path
        _, _, depth = _png_header(f.read(26), path, ValueError, expected)
        if depth > 8:
            raise ValueError(f"{path}: expected {expected}, got a {depth}-bit PNG (convert it to 8 bits per channel)")
        f.seek(0)
        array, mode = _decode(f, path, expected)
    if mode != "RGB" and mode not in AS_RGB:
        raise ValueError(f"{path}: expected {expected}, got mode {mode!r}")
    if mode in AS_RGB and mode not in _logged_modes:
        _logged_modes.add(mode)
        log.info("reading mode-%s PNGs as RGB (%s), first: %s", mode, AS_RGB[mode], path)
    if array.shape[:2] != tuple(size):
        raise ValueError(f"{path}: expected size {size[0]}×{size[1]} like the clip's first frame, got "
                         f"{array.shape[0]}×{array.shape[1]}")
    return array
