"""Fixtures of the training-app tests; puts tests/train on sys.path for `train_support`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_support import SYNTH  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 + 2 clip, 6-frame, 64 x 64 synthetic GoPro-spike dataset."""
    from vrt_spike.data.synthesize import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(root, SynthConfig(**SYNTH))
    return root
