"""Fixtures of the predict tests; puts tests/predict on sys.path for `predict_support`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict_support import SYNTH  # noqa: E402

from vrt_spike.data.synthesize import SynthConfig, synthesize


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, compose_cfg) -> Path:
    """A randomly initialised ``model=tiny`` network saved as train.py saves it (state_dict + hyper_parameters)."""
    from vrt_spike.lit.module import DeblurModule

    torch.manual_seed(0)
    model = compose_cfg("train", ["model=tiny", "paths.output_dir=/tmp/unused"]).model
    module = DeblurModule(model=model, optim={"name": "adamw", "lr": 1e-4})
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 3-frame 40 x 40 test clips (spikes 20 x 20) in the GoPro-spike layout, with GT."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(root, SynthConfig(**SYNTH))
    return root
