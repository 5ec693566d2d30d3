"""Shared pytest setup: deterministic, CPU-friendly defaults and the `cuda` marker."""
from __future__ import annotations

import os

import pytest
import torch

import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses, for the tests that compose it)

# W&B never reaches the network from tests.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
