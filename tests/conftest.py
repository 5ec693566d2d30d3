"""Shared pytest setup: deterministic, CPU-friendly defaults, the `cuda` marker and the one Hydra
composition of conf/ every test uses (`compose_cfg`)."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses, for the tests that compose it)
from vrt_spike import PROJECT_ROOT

# W&B never reaches the network from tests.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# `make test` runs two pytest-xdist workers on two cores: each computes on one thread (two workers of
# torch's default two threads would oversubscribe the cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


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


def _compose(config_name: str | None, overrides: Sequence[str] = ()) -> DictConfig:
    """conf/<config_name>.yaml with ``overrides``, as the apps compose it (``None``: no primary config,
    the groups given with ``+group=option`` alone). The context manager clears Hydra's global state on
    exit, so compositions never leak into one another."""
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture(scope="session")
def compose_cfg() -> Callable[..., DictConfig]:
    """``compose_cfg("train", ["model=tiny", ...])``: a composed config (see :func:`_compose`)."""
    return _compose
