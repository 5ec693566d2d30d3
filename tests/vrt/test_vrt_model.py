"""VRT backbone: shapes, the stage-hook fusion point, named submodules, layout and bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vrt_spike.models.vrt import VRT

FIXTURE = Path(__file__).with_name("official_gopro_keys.txt")


def _read_layout(path: Path) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in path.read_text().splitlines():
        name, shape = line.split()
        layout[name] = tuple(int(s) for s in shape.split(","))
    return layout


def test_gopro_config_parameter_count_and_official_layout(gopro_kwargs: dict) -> None:
    model = VRT(**gopro_kwargs)
    assert sum(p.numel() for p in model.parameters()) == 18_320_007
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _read_layout(FIXTURE)
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}


def test_output_shape_and_residual(tiny_vrt: VRT, tiny_clip: torch.Tensor, tiny_out: torch.Tensor) -> None:
    out = tiny_out
    assert out.shape == tiny_clip.shape
    assert torch.isfinite(out).all()
    residual = out - tiny_clip
    assert residual.abs().max() > 1e-2  # the body contributes: random weights are not an identity


def test_stage_hook_and_forward_hooks_on_named_stages(
    tiny_vrt: VRT, tiny_clip: torch.Tensor, tiny_out: torch.Tensor
) -> None:
    seen: list[tuple[int, tuple[int, ...]]] = []
    calls: list[str] = []

    def identity(i: int, feat: torch.Tensor) -> torch.Tensor:
        seen.append((i, tuple(feat.shape)))
        calls.append(f"hook{i}")
        return feat

    names = ["spynet"] + [f"stage{i}" for i in range(1, 9)]
    handles = [getattr(tiny_vrt, n).register_forward_hook(lambda m, a, o, n=n: calls.append(n)) for n in names]
    plain = tiny_out
    try:
        with torch.no_grad():
            hooked = tiny_vrt(tiny_clip, stage_hook=identity)
            zero_stage4 = tiny_vrt(tiny_clip, stage_hook=lambda i, f: f * 0 if i == 4 else f)
    finally:
        for h in handles:
            h.remove()
    # SpyNet runs once per flow direction; the stage hook runs right after stages 1-4
    one_pass = ["spynet", "spynet"] + [x for i in range(1, 5) for x in (f"stage{i}", f"hook{i}")]
    one_pass += [f"stage{i}" for i in range(5, 9)]
    assert calls == one_pass + [c for c in one_pass if not c.startswith("hook")]
    keys = list(tiny_vrt.state_dict())
    assert "stage8.0.1.weight" in keys and any(k.startswith("stage8.2.residual_group.blocks.1.") for k in keys)
    b, t, _, h, w = tiny_clip.shape
    assert seen == [(i, (b, 16, t, h // s, w // s)) for i, s in zip((1, 2, 3, 4), (1, 2, 4, 8))]
    torch.testing.assert_close(hooked, plain, rtol=0, atol=0)
    assert (zero_stage4 - plain).abs().max() > 1e-3

    with pytest.raises(ValueError, match=r"stage_hook\(1, feat\) must return shape"):
        tiny_vrt(tiny_clip, stage_hook=lambda i, f: f[:, :, :1])


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 3, 40, 48), r"\(B, T, 3, H, W\), got a 4-D tensor of shape \(3, 3, 40, 48\)"),
        ((1, 3, 4, 40, 48), r"3 channels at dim 2 .* got shape \(1, 3, 4, 40, 48\)"),
        ((1, 1, 3, 40, 48), r"needs T >= 2 frames, got shape \(1, 1, 3, 40, 48\)"),
        ((1, 3, 3, 40, 44), r"multiples of 8 and at least \(40, 40\) .* got H=40, W=44"),
        ((1, 3, 3, 32, 48), r"multiples of 8 and at least \(40, 40\) .* got H=32, W=48"),
    ],
)
def test_bad_input_raises_value_error(tiny_vrt: VRT, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_vrt(torch.zeros(shape))


def test_min_input_size_follows_window(tiny_kwargs: dict) -> None:
    assert VRT(**{**tiny_kwargs, "window_size": [2, 8, 6]}).min_input_hw == (64, 48)


@pytest.mark.parametrize(
    ("override", "match"),
    [({"upscale": 4}, "upscale=1"), ({"nonblind_denoising": True}, "nonblind_denoising"), ({"pa_frames": 4}, "pa_frames=2")],
)
def test_unimplemented_variants_raise(tiny_kwargs: dict, override: dict, match: str) -> None:
    with pytest.raises(NotImplementedError, match=match):
        VRT(**{**tiny_kwargs, **override})


def test_inconsistent_layer_lists_raise(tiny_kwargs: dict) -> None:
    with pytest.raises(ValueError, match="equal lengths, got 9, 8, 9"):
        VRT(**{**tiny_kwargs, "embed_dims": [16] * 7 + [24]})


def test_drop_path_only_acts_in_training(tiny_kwargs: dict, randomize) -> None:
    model = randomize(VRT(**{**tiny_kwargs, "drop_path_rate": 0.5}))
    clip = torch.rand(1, 2, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.eval()
        kept = model(clip)
        model.train()
        dropped = model(clip)
    assert (dropped - kept).abs().max() > 1e-2
