"""Paired crops and augmentations stay consistent across blur, sharp and spikes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vrt_spike.data import layout
from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.spike_io import write_dat
from vrt_spike.data.transforms import AugmentParams, PairedAugment, random_crop_box, spike_scale, upsample_spike


def _upsample(x: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(x, scale, 0), scale, 1)


def write_pattern_dataset(root: Path, frames: int = 4, rgb: tuple[int, int] = (16, 24), scale: int = 2) -> None:
    """A dataset whose spikes are known functions of the RGB frames.

    Frame t: binary spike-resolution patterns A_t, B_t. Blur = (A_t, B_t, 10 t) upsampled by
    `scale`, sharp = same with 10 t + 5 in channel 2. Spikes fire A_t in the first half of the
    exposure and B_t in the second, so K=2 voxel bins are exactly (A_t, B_t).
    """
    rng = np.random.default_rng(0)
    sh, sw = rgb[0] // scale, rgb[1] // scale
    (root / layout.SPIKE_DIR).mkdir(parents=True)
    layout.config_path(root).write_text(yaml.safe_dump({"spike_h": sh, "spike_w": sw}))
    for d in (layout.sharp_dir("train", "c0"), layout.blur_dir("train", "c0"), layout.spike_dir("train", "c0")):
        (root / d).mkdir(parents=True)
    for t in range(frames):
        a, b = (rng.random((2, sh, sw)) < 0.5).astype(np.uint8)
        for d, c2 in ((layout.blur_dir("train", "c0"), 10 * t), (layout.sharp_dir("train", "c0"), 10 * t + 5)):
            img = np.stack([_upsample(a, scale) * 255, _upsample(b, scale) * 255, np.full(rgb, c2)], -1).astype(np.uint8)
            Image.fromarray(img).save(root / d / f"{t:04d}.png")
        write_dat(root / layout.spike_dir("train", "c0") / f"{t:04d}.dat", np.stack([a] * 4 + [b] * 4))


@pytest.fixture
def pattern_root(tmp_path: Path) -> Path:
    write_pattern_dataset(tmp_path)
    return tmp_path


def _check_consistent(sample: dict) -> bool:
    """Asserts the pairing invariants; returns whether time was reversed."""
    blur, sharp, spike = sample["blur"], sample["sharp"], sample["spike"]
    order = blur[:, 2, 0, 0] * 255
    reversed_ = bool(order[0] > order[-1])
    steps = torch.diff(order).round()
    assert torch.equal(steps, torch.full_like(steps, -10.0 if reversed_ else 10.0))  # consecutive frames
    torch.testing.assert_close(sharp[:, 2] * 255, blur[:, 2] * 255 + 5, atol=1e-4, rtol=0)
    torch.testing.assert_close(sharp[:, :2], blur[:, :2])  # same geometry on blur and sharp
    first, last = (1, 0) if reversed_ else (0, 1)  # bins are time: reversed with the clip
    torch.testing.assert_close(spike[:, 0], blur[:, first])
    torch.testing.assert_close(spike[:, 1], blur[:, last])
    return reversed_


def test_random_crops_and_augments_are_paired(pattern_root):
    ds = SpikeDeblurDataset(
        pattern_root, "train", clip_len=3, crop_size=8, num_bins=2,
        augment={"hflip": True, "vflip": True, "rot90": True, "time_reverse": True}, cache_dir=None,
    )
    seen_reversed = set()
    for seed in range(24):
        torch.manual_seed(seed)
        sample = ds[seed % len(ds)]
        assert sample["blur"].shape == (3, 3, 8, 8) and sample["spike"].shape == (3, 2, 8, 8)
        seen_reversed.add(_check_consistent(sample))
    assert seen_reversed == {True, False}


def test_crop_box_matches_source_on_both_grids(pattern_root):
    ds = SpikeDeblurDataset(
        pattern_root, "train", clip_len=2, crop_size=8, num_bins=2,
        augment={"hflip": False, "vflip": False, "rot90": False, "time_reverse": False},
    )
    full = np.asarray(Image.open(ds.clips[0].blur[0]), dtype=np.float32) / 255
    origins = set()
    for seed in range(20):
        torch.manual_seed(seed)
        sample = ds[0]
        crop = sample["blur"][0, 0].numpy()
        hits = [(y, x) for y in range(0, 16 - 8 + 1) for x in range(0, 24 - 8 + 1)
                if np.array_equal(full[y : y + 8, x : x + 8, 0], crop) and np.array_equal(full[y : y + 8, x : x + 8, 1], sample["blur"][0, 1].numpy())]
        assert hits and all(y % 2 == 0 and x % 2 == 0 for y, x in hits[:1])
        origins.add(hits[0])
        _check_consistent(sample)
    assert len(origins) > 3  # crops really are random


def test_full_frames_in_test_mode(pattern_root):
    ds = SpikeDeblurDataset(pattern_root, "train", clip_len=4, crop_size=None, num_bins=2, stride=4)
    assert len(ds) == 1
    sample = ds[0]
    assert sample["blur"].shape == (4, 3, 16, 24) and sample["spike"].shape == (4, 2, 16, 24)
    assert not _check_consistent(sample)


def test_windows_cover_every_frame(pattern_root):
    ds = SpikeDeblurDataset(pattern_root, "train", clip_len=3, crop_size=None, num_bins=2, stride=3)
    assert [s for _, s in ds.samples] == [0, 1]  # last window aligned to the clip end


def test_upsampling_modes():
    spike = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    near = upsample_spike(spike, (8, 8), "nearest")
    np.testing.assert_array_equal(near, spike.repeat(2, -2).repeat(2, -1))
    bil = upsample_spike(spike, (8, 8), "bilinear")
    expected = torch.nn.functional.interpolate(torch.from_numpy(spike), size=(8, 8), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(bil, expected.numpy())
    assert 0 <= bil.min() and bil.max() <= 1 and not np.array_equal(bil, near)
    # non-integer ratios (full frames only): nearest-exact source pixels
    odd = upsample_spike(np.arange(3, dtype=np.float32).reshape(1, 1, 1, 3), (1, 5))
    np.testing.assert_array_equal(odd[0, 0, 0], [0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match="'cubic'"):
        upsample_spike(spike, (8, 8), "cubic")


def test_nearest_crop_then_upsample_equals_upsample_then_crop():
    torch.manual_seed(0)
    spike = np.random.default_rng(1).random((1, 2, 10, 12), dtype=np.float32)
    full = upsample_spike(spike, (20, 24))
    for _ in range(10):
        box = random_crop_box((20, 24), (10, 12), 8, "x")
        y0, x0, h, w = box.rgb
        sy, sx, sh, sw = box.spike
        np.testing.assert_array_equal(upsample_spike(spike[..., sy : sy + sh, sx : sx + sw], (h, w)), full[..., y0 : y0 + h, x0 : x0 + w])


def test_scale_and_crop_errors_name_sizes():
    with pytest.raises(ValueError, match=r"clipA: RGB size 32×32.*spike size 12×16.*2.66667 and 2"):
        spike_scale((32, 32), (12, 16), "clipA")
    with pytest.raises(ValueError, match="clipA: crop_size must be a positive multiple of the RGB/spike scale 2, got 7"):
        random_crop_box((32, 32), (16, 16), 7, "clipA")


def test_rotation_by_90_only_for_square_crops():
    aug = PairedAugment(hflip=False, vflip=False, rot90=True)
    rots = set()
    for seed in range(40):
        torch.manual_seed(seed)
        rots.add(aug.sample(square=False).rot90)
    assert rots == {0, 2}
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    spike = np.stack([x[:, 0], -x[:, 0]], axis=1)  # (1, 2, 2, 3): two time bins
    blur, sharp, spk = PairedAugment.apply(AugmentParams(rot90=1, time_reverse=True), x, x, spike)
    assert blur.shape == (1, 1, 3, 2)
    np.testing.assert_array_equal(blur, np.rot90(x, 1, axes=(-2, -1)))
    np.testing.assert_array_equal(spk[:, 0], -blur[:, 0])  # bins swapped by time reversal
