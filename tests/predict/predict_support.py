"""Helpers of the predict tests (imported via tests/predict on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vrt_spike.data.spike_io import write_dat

SYNTH = {"seed": 0, "train_clips": 0, "test_clips": 2, "frames": 3, "height": 40, "width": 40, "spike_steps": 4}


def write_footage(folder: Path, stems: list[str], rgb_hw: tuple[int, int], spike_hw: tuple[int, int],
                  spike_frames: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """``folder/blur/<stem>.png`` random RGB frames and ``folder/spike/<stem>.dat`` random spikes."""
    rng = np.random.default_rng(seed)
    blur_dir, spike_dir = folder / "blur", folder / "spike"
    blur_dir.mkdir(parents=True)
    spike_dir.mkdir(parents=True)
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (*rgb_hw, 3), dtype=np.uint8)).save(blur_dir / f"{stem}.png")
        write_dat(spike_dir / f"{stem}.dat", rng.integers(0, 2, (spike_frames, *spike_hw), dtype=np.uint8))
    return blur_dir, spike_dir


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
