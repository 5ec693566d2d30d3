"""Same function as the official VRT: outputs (and gradients) against upstream ``network_vrt.py``.

Needs the upstream file, which is not part of this repository: set ``VRT_OFFICIAL_DIR`` to a
directory holding it, e.g.::

    mkdir -p /tmp/vrt_official
    git -C <VRT clone> show HEAD:models/network_vrt.py > /tmp/vrt_official/network_vrt.py
    VRT_OFFICIAL_DIR=/tmp/vrt_official pytest tests/vrt/test_vrt_official_parity.py -m '' -s

Errors are relative to the largest *residual* ``|official(x) - x|``, so the input that the global
skip adds back does not hide differences in the network body.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from benchmarks.vrt_attention import load_official_vrt
from vrt_spike.models.vrt import VRT

FIXTURE = Path(__file__).with_name("official_gopro_keys.txt")
TOLERANCE = 1e-5

REDUCED_A: dict[str, Any] = dict(
    upscale=1, img_size=[4, 40, 40], window_size=[2, 4, 4], depths=[2] * 7 + [2] * 2, indep_reconsts=[8],
    embed_dims=[16] * 7 + [24] * 2, num_heads=[2] * 9, deformable_groups=2,
)
# temporal window 4 (clips of 2-3 frames are shorter), odd mutual depth split, no qkv bias, custom scale
REDUCED_B: dict[str, Any] = dict(
    upscale=1, img_size=[4, 40, 40], window_size=[4, 4, 4], depths=[3] * 7 + [1] * 3, indep_reconsts=[9],
    embed_dims=[12] * 7 + [16] * 3, num_heads=[3] * 7 + [4] * 3, mul_attn_ratio=0.5, mlp_ratio=1.5,
    qkv_bias=False, qk_scale=0.3, deformable_groups=3,
)


@pytest.fixture(scope="module")
def official() -> ModuleType:
    directory = os.environ.get("VRT_OFFICIAL_DIR")
    if not directory:
        pytest.skip("VRT_OFFICIAL_DIR is not set: point it at a directory holding upstream models/network_vrt.py")
    return load_official_vrt(directory)


def _pair(official: ModuleType, kwargs: dict[str, Any], randomize, **ours_kwargs: Any) -> tuple[VRT, torch.nn.Module]:
    ours = randomize(VRT(**kwargs, **ours_kwargs))
    theirs = official.VRT(**kwargs)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor, x: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / (theirs - x).abs().max()).item()


def test_fixture_matches_official_gopro_layout(official: ModuleType, gopro_kwargs: dict) -> None:
    theirs = {k: tuple(v.shape) for k, v in official.VRT(**gopro_kwargs).state_dict().items()}
    fixture = {}
    for line in FIXTURE.read_text().splitlines():
        name, shape = line.split()
        fixture[name] = tuple(int(s) for s in shape.split(","))
    assert theirs == fixture


@pytest.mark.parametrize(
    ("config", "shape", "attn_impl"),
    [
        ("A", (1, 3, 3, 40, 48), "sdpa"),  # odd T; W pads at stages 3-4
        ("A", (2, 2, 3, 48, 40), "sdpa"),  # batch 2, T = temporal window
        ("A", (1, 3, 3, 40, 48), "explicit"),
        ("B", (1, 3, 3, 40, 40), "sdpa"),  # T shorter than the temporal window 4
        ("B", (1, 2, 3, 40, 40), "sdpa"),
        ("B", (1, 5, 3, 40, 56), "sdpa"),  # T pads 5 -> 8; W = 7 windows at 1/8 scale, padded
    ],
)
def test_reduced_config_outputs_match(official: ModuleType, randomize, config: str, shape, attn_impl: str) -> None:
    kwargs = REDUCED_A if config == "A" else REDUCED_B
    ours, theirs = _pair(official, kwargs, randomize, attn_impl=attn_impl)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        error = _relative_error(ours.eval()(x), theirs.eval()(x), x)
    print(f"parity config {config} {shape} {attn_impl}: max relative error {error:.2e}")
    assert error < TOLERANCE


def test_training_gradients_match(official: ModuleType, randomize) -> None:
    kwargs = {**REDUCED_A, "drop_path_rate": 0.0}
    ours, theirs = _pair(official, kwargs, randomize)
    x = torch.rand(1, 3, 3, 40, 40, generator=torch.Generator().manual_seed(8))
    results = []
    for model in (ours.train(), theirs.train()):
        out = model(x)
        (out - x).square().mean().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out_o, grad_o), (out_t, grad_t) = results
    assert _relative_error(out_o, out_t, x) < TOLERANCE
    errors = {n: ((grad_o[n] - g).abs().max() / g.abs().max()).item() for n, g in grad_t.items() if g.abs().max() > 0}
    worst = max(errors, key=errors.get)
    print(f"parity gradients: worst relative error {errors[worst]:.2e} ({worst})")
    assert errors[worst] < 1e-4  # per tensor, relative to its largest entry; summation order differs
    assert set(errors) == {n for n, _ in ours.named_parameters() if grad_o[n].abs().max() > 0}


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 6, 3, 64, 64), (1, 4, 3, 72, 64)])
def test_gopro_config_outputs_match(official: ModuleType, gopro_kwargs: dict, randomize, shape) -> None:
    """Full GoPro deblurring config; (1, 4, 3, 72, 64): T below the window 6, H pads at 1/4 and 1/8."""
    ours, theirs = _pair(official, gopro_kwargs, randomize)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        error = _relative_error(ours.eval()(x), theirs.eval()(x), x)
    print(f"parity GoPro {shape}: max relative error {error:.2e}")
    assert error < TOLERANCE
