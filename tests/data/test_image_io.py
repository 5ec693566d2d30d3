"""The one PNG reader: grayscale, palette and RGBA frames read as RGB; what is not an 8-bit frame is refused."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vrt_spike.data import image_io
from vrt_spike.data.image_io import png_size, read_png
from vrt_spike.data.layout import LayoutError


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


def test_grayscale_palette_and_alpha_read_as_rgb(tmp_path: Path, rgb: np.ndarray, caplog) -> None:
    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    Image.fromarray(np.dstack([rgb, np.full(grey.shape, 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb, "RGB").quantize(16).save(tmp_path / "p.png")
    Image.fromarray(np.dstack([grey, grey]), "LA").save(tmp_path / "la.png")
    image_io._logged_modes.clear()
    with caplog.at_level(logging.INFO, logger="vrt_spike.data.image_io"):
        assert np.array_equal(read_png(tmp_path / "l.png", (6, 10)), np.repeat(grey[..., None], 3, axis=2))
        read_png(tmp_path / "l.png", (6, 10))
        assert np.array_equal(read_png(tmp_path / "rgba.png", (6, 10)), rgb)
        assert np.array_equal(read_png(tmp_path / "la.png", (6, 10)), np.repeat(grey[..., None], 3, axis=2))
        with Image.open(tmp_path / "p.png") as im:
            palette_rgb = np.asarray(im.convert("RGB"))
        assert np.array_equal(read_png(tmp_path / "p.png", (6, 10)), palette_rgb)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 4 and sum("mode-L PNGs as RGB (three equal channels)" in m for m in said) == 1, said


def test_what_is_not_an_8bit_frame_is_refused_with_the_file_named(tmp_path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")  # mode I;16
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'deep.png'}: expected an RGB image of 6×10, "
                                                   "8 bits per channel, got a 16-bit PNG")):
        read_png(tmp_path / "deep.png", (6, 10))
    Image.fromarray(rgb, "RGB").save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'small.png'}: expected size 6×12") + ".*got 6×10"):
        read_png(tmp_path / "small.png", (6, 12))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'text.png'}: unreadable PNG")):
        read_png(tmp_path / "text.png", (6, 10))
    with pytest.raises(LayoutError, match=re.escape(f"{tmp_path / 'text.png'}: unreadable PNG")):
        png_size(tmp_path / "text.png", LayoutError)
    assert png_size(tmp_path / "small.png") == (6, 10)
