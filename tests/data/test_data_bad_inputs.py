"""Every bad input gets an error naming the file and the expected vs actual value."""
from __future__ import annotations

import re

import pytest
import torch

from vrt_spike.data import layout
from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.layout import LayoutError
from vrt_spike.data.spike_io import SpikeFormatError

CLIP = "synth_train_001"


def _dataset(root, **kwargs) -> SpikeDeblurDataset:
    args = {"clip_len": 3, "crop_size": 16, "num_bins": 4} | kwargs
    return SpikeDeblurDataset(root, "train", **args)


def test_missing_spike_file(tiny_copy):
    spike_dir = tiny_copy / layout.spike_dir("train", CLIP)
    (spike_dir / "000002.dat").unlink()
    with pytest.raises(LayoutError) as err:
        _dataset(tiny_copy)
    msg = str(err.value)
    assert msg.startswith(str(spike_dir)) and str(tiny_copy / layout.blur_dir("train", CLIP)) in msg
    assert "expected one spike .dat per blurred PNG with the same stem, got 6 blurred PNG and 5 spike .dat" in msg
    assert "blurred PNG without spike .dat: 1 ['000002']; spike .dat without blurred PNG: 0 []" in msg


def test_spike_file_without_a_frame(tiny_copy):
    spike_dir = tiny_copy / layout.spike_dir("train", CLIP)
    (spike_dir / "000009.dat").write_bytes((spike_dir / "000000.dat").read_bytes())
    with pytest.raises(LayoutError, match=re.escape("spike .dat without blurred PNG: 1 ['000009']")):
        _dataset(tiny_copy)


def test_mis_sized_dat(tiny_copy):
    bad = tiny_copy / layout.spike_dir("train", CLIP) / "000004.dat"
    size = bad.stat().st_size  # 12 frames of 16x16 = 384 bytes
    with bad.open("ab") as f:
        f.write(b"\x00" * 7)
    with pytest.raises(LayoutError) as err:
        _dataset(tiny_copy)
    assert isinstance(err.value.__cause__, SpikeFormatError)
    msg = str(err.value)
    assert str(bad) in msg and "16×16" in msg and f"{size + 7} bytes" in msg and "multiple of 32" in msg
    assert msg.endswith(f"(spike size from {layout.config_path(tiny_copy)})")
    # explicit opt-in drops the trailing partial frame, with a warning
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        ds = _dataset(tiny_copy, drop_partial_frames=True)
    assert ds.clips[1].spike_frames[4] == 12


def test_unreadable_png_at_load_time(tiny_copy):
    bad = tiny_copy / layout.blur_dir("train", CLIP) / "000003.png"
    bad.write_bytes(b"not a png at all")
    ds = _dataset(tiny_copy, crop_size=None, stride=3)
    index = next(i for i, (c, s) in enumerate(ds.samples) if ds.clips[c].name == CLIP and s == 3)
    with pytest.raises(ValueError) as err:
        ds[index]
    msg = str(err.value)
    assert str(bad) in msg and "unreadable PNG" in msg and "expected an RGB image of 32×32" in msg


def test_unreadable_first_png_at_discovery(tiny_copy):
    bad = tiny_copy / layout.sharp_dir("train", CLIP) / "000000.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(LayoutError, match=re.escape(str(bad)) + ": unreadable PNG"):
        _dataset(tiny_copy)


def test_png_of_wrong_size(tiny_copy):
    from PIL import Image

    bad = tiny_copy / layout.sharp_dir("train", CLIP) / "000005.png"
    Image.new("RGB", (30, 32)).save(bad)
    ds = _dataset(tiny_copy, crop_size=None, stride=3)
    index = next(i for i, (c, s) in enumerate(ds.samples) if ds.clips[c].name == CLIP and s == 3)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ": expected size 32×32 .* got 32×30"):
        ds[index]


def test_mismatched_frame_counts(tiny_copy):
    blur_dir = tiny_copy / layout.blur_dir("train", CLIP)
    (blur_dir / "000005.png").unlink()
    with pytest.raises(LayoutError) as err:
        _dataset(tiny_copy)
    msg = str(err.value)
    assert msg.startswith(str(tiny_copy / layout.sharp_dir("train", CLIP))) and str(blur_dir) in msg
    assert "got 5 blurred PNG and 6 sharp PNG" in msg and "sharp PNG without blurred PNG: 1 ['000005']" in msg


def test_clip_shorter_than_clip_len(tiny_root):
    with pytest.raises(ValueError) as err:
        _dataset(tiny_root, clip_len=7)
    msg = str(err.value)
    assert str(tiny_root / layout.sharp_dir("train", "synth_train_000")) in msg
    assert "expected >= 7 frames, got 6" in msg


def test_crop_larger_than_frame(tiny_root):
    with pytest.raises(ValueError) as err:
        _dataset(tiny_root, crop_size=40)
    msg = str(err.value)
    assert str(tiny_root / layout.sharp_dir("train", "synth_train_000")) in msg
    assert "crop_size 40 is larger than the frame: expected <= 32×32, got 40" in msg


def test_missing_config_yaml(tiny_copy):
    cfg = layout.config_path(tiny_copy)
    cfg.unlink()
    with pytest.raises(FileNotFoundError) as err:
        _dataset(tiny_copy)
    msg = str(err.value)
    assert str(cfg) in msg and "spike_h, spike_w" in msg


def test_bad_config_value(tiny_copy):
    cfg = layout.config_path(tiny_copy)
    cfg.write_text("spike_h: sixteen\nspike_w: 16\n")
    with pytest.raises(LayoutError, match=re.escape(str(cfg)) + ".*'spike_h' must be a positive integer, got 'sixteen'"):
        _dataset(tiny_copy)


def test_spike_size_not_a_multiple_of_rgb(tiny_copy):
    # 12x16 spikes: 24-byte frames divide the 384-byte files, but 32 / 12 is no integer scale.
    layout.config_path(tiny_copy).write_text("spike_h: 12\nspike_w: 16\n")
    with pytest.raises(ValueError, match=r"RGB size 32×32 must be the same integer multiple of the spike size 12×16"):
        _dataset(tiny_copy)


def test_too_few_spike_frames_for_num_bins(tiny_root):
    with pytest.raises(ValueError, match=r"000000\.dat: expected >= num_bins=16 spike frames, got 12"):
        _dataset(tiny_root, num_bins=16)


def test_missing_split_and_clip_dirs(tiny_copy):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tiny_copy / "GOPRO_Large" / "extra_GT")) + ": missing split"):
        SpikeDeblurDataset(tiny_copy, "extra", clip_len=2, crop_size=None, num_bins=2)
    spike_dir = tiny_copy / layout.spike_dir("train", CLIP)
    for p in spike_dir.iterdir():
        p.unlink()
    spike_dir.rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{spike_dir}: missing directory: expected one spike "
                                                          "stream per blurred frame (6) (*.dat)")):
        _dataset(tiny_copy)


def test_no_silent_zero_fill_when_a_dat_disappears_later(tiny_copy):
    ds = _dataset(tiny_copy, crop_size=None)
    (tiny_copy / layout.spike_dir("train", "synth_train_000") / "000001.dat").unlink()
    torch.manual_seed(0)
    with pytest.raises(FileNotFoundError, match="000001.dat"):
        ds[0]
