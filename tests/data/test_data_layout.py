"""One clip discovery (`layout.clip_files`) for training, evaluation and footage: the layout's clips
with and without ground truth are the same files, frame-aligned by stem."""
from __future__ import annotations

import dataclasses
import re
import shutil

import pytest
from PIL import Image

from vrt_spike.data import layout
from vrt_spike.data.dataset import SpikeDeblurDataset
from vrt_spike.data.layout import LayoutError


def test_clips_are_frame_aligned_by_stem(tiny_root, tiny_cfg):
    clips = layout.discover(tiny_root, "train")
    stems = tuple(f"{i:06d}" for i in range(tiny_cfg.frames))
    for clip in clips:
        assert clip.stems == stems and len(clip) == tiny_cfg.frames
        for kind, folder in (("blur", layout.blur_dir), ("sharp", layout.sharp_dir)):
            assert getattr(clip, kind) == tuple(tiny_root / folder("train", clip.name) / f"{s}.png" for s in stems)
        assert clip.spike == tuple(tiny_root / layout.spike_dir("train", clip.name) / f"{s}.dat" for s in stems)
        assert clip.rgb_size == (32, 32) and clip.spike_size == (16, 16)
        assert clip.spike_frames == (tiny_cfg.sub_frames * tiny_cfg.spike_steps,) * tiny_cfg.frames
    # the training dataset holds exactly these clips
    ds = SpikeDeblurDataset(tiny_root, "train", clip_len=2, crop_size=None, num_bins=4)
    assert ds.clips == clips and ds.spike_size == (16, 16)


def test_without_ground_truth_the_same_clips_from_the_blurred_folders(tiny_copy):
    with_gt = layout.discover(tiny_copy, "train")
    shutil.rmtree(tiny_copy / layout.RGB_DIR / "train_GT")  # footage: no sharp folders at all
    without = layout.discover(tiny_copy, "train", sharp=False)
    assert without == [dataclasses.replace(c, sharp=None) for c in with_gt]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tiny_copy / layout.RGB_DIR / 'train_GT'}: missing split")):
        layout.discover(tiny_copy, "train")


def test_one_matcher_for_a_clip_of_the_layout_and_loose_folders(tiny_root):
    name = "synth_train_001"
    folders = {kind: tiny_root / where("train", name)
               for kind, where in (("blur", layout.blur_dir), ("spike", layout.spike_dir), ("sharp", layout.sharp_dir))}
    clip = layout.clip_files(name, folders["blur"], folders["spike"], (16, 16), "test", sharp_folder=folders["sharp"])
    assert clip == layout.discover(tiny_root, "train", clips=[name])[0]


def test_sharp_frames_of_another_size(tiny_copy):
    sharp = tiny_copy / layout.sharp_dir("train", "synth_train_000") / "000000.png"
    Image.new("RGB", (32, 24)).save(sharp)
    blur = tiny_copy / layout.blur_dir("train", "synth_train_000") / "000000.png"
    with pytest.raises(LayoutError, match=re.escape(f"{sharp}: size differs from {blur}: expected 32×32, got 24×32")):
        layout.discover(tiny_copy, "train")


def test_empty_clip_folder_and_empty_spike_stream(tiny_copy):
    spike = tiny_copy / layout.spike_dir("train", "synth_train_000") / "000003.dat"
    spike.write_bytes(b"")
    with pytest.raises(LayoutError, match=re.escape(f"{spike}: empty spike stream: expected >= 1 frame of 16×16, "
                                                    "got 0 bytes")):
        layout.discover(tiny_copy, "train")
    blur = tiny_copy / layout.blur_dir("train", "synth_train_000")
    for p in blur.iterdir():
        p.unlink()
    with pytest.raises(LayoutError, match=re.escape(f"{blur}: empty folder: expected blurred RGB frames (*.png), "
                                                    "got none")):
        layout.discover(tiny_copy, "train")
