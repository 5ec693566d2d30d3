"""Tiny synthetic GoPro-spike datasets shared by the data tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vrt_spike.data.synthesize import SynthConfig, synthesize

# 2 train + 1 val + 1 test clips of 6 frames, RGB 32x32, spikes 16x16, 12 spike frames per RGB frame.
TINY = SynthConfig(train_clips=2, val_clips=1, test_clips=1, frames=6, height=32, width=32, sub_frames=3, spike_steps=4,
                   objects=1)


@pytest.fixture(scope="session")
def tiny_cfg() -> SynthConfig:
    return TINY


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset built once per session; treat as read-only (use `tiny_copy` to modify)."""
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    synthesize(root, TINY)
    return root


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny dataset."""
    root = tmp_path / "synthetic"
    shutil.copytree(tiny_root, root)
    return root
