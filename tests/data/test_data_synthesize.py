"""The embedded synthetic dataset: layout, content, determinism, --if-missing."""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from vrt_spike.data import layout
from vrt_spike.data.representations import represent
from vrt_spike.data.spike_io import read_dat
from vrt_spike.data.synthesize import MANIFEST, SynthConfig, is_complete, main, synthesize


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_sizes_and_spike_resolution(tiny_root, tiny_cfg):
    assert yaml.safe_load(layout.config_path(tiny_root).read_text())["spike_h"] == 16
    clips = layout.discover(tiny_root, "train")
    assert all(c.spike_size == (16, 16) for c in clips)
    assert [c.name for c in clips] == ["synth_train_000", "synth_train_001"]
    assert all(len(c) == tiny_cfg.frames and c.rgb_size == (32, 32) for c in clips)
    assert all(n == tiny_cfg.sub_frames * tiny_cfg.spike_steps for c in clips for n in c.spike_frames)
    test = layout.discover(tiny_root, "test")
    assert [c.name for c in test] == ["synth_test_000"]
    val = layout.discover(tiny_root, "val")
    assert [c.name for c in val] == ["synth_val_000"]
    assert json.loads((tiny_root / MANIFEST).read_text())["config"] == dataclasses.asdict(tiny_cfg)


def test_content_blur_differs_from_sharp_and_spikes_follow_brightness(tiny_root, tiny_cfg):
    clips = layout.discover(tiny_root, "train")
    clip = clips[0]
    blur = np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in clip.blur])
    sharp = np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in clip.sharp])
    assert np.abs(blur - sharp).mean() > 1.0  # motion blur present
    assert abs(blur.mean() - sharp.mean()) < 5.0  # same scene, same exposure level
    # Spike firing rate over an exposure tracks the (half-res) luminance of the blurred frame.
    rate = np.stack([represent(read_dat(p, 16, 16), 1)[0] for p in clip.spike])
    lum = (0.299 * blur[..., 0] + 0.587 * blur[..., 1] + 0.114 * blur[..., 2]) / 255
    lum = lum.reshape(len(clip), 16, 2, 16, 2).mean(axis=(2, 4))
    # A 12-frame exposure quantises the rate coarsely; over the clip's 72 spike frames it is tight.
    assert np.corrcoef(rate.mean(0).ravel(), lum.mean(0).ravel())[0, 1] > 0.9
    np.testing.assert_allclose(rate.mean(), lum.mean() * tiny_cfg.gain / tiny_cfg.threshold, atol=0.03)


def test_deterministic_from_seed(tiny_root, tmp_path, tiny_cfg):
    synthesize(tmp_path / "again", tiny_cfg)
    assert _tree(tmp_path / "again") == _tree(tiny_root)
    synthesize(tmp_path / "other", dataclasses.replace(tiny_cfg, seed=1))
    other = _tree(tmp_path / "other")
    assert other.keys() == _tree(tiny_root).keys()
    assert other["GOPRO_Large/train_GT/synth_train_000/000000.png"] != _tree(tiny_root)["GOPRO_Large/train_GT/synth_train_000/000000.png"]


def test_if_missing_is_a_no_op_on_a_complete_dataset(tiny_copy, tiny_cfg):
    png = tiny_copy / "GOPRO_Large/train_GT/synth_train_000/000000.png"
    before = png.stat().st_mtime_ns
    assert synthesize(tiny_copy, tiny_cfg, if_missing=True) is False
    assert png.stat().st_mtime_ns == before
    # different settings -> rebuilt
    assert synthesize(tiny_copy, dataclasses.replace(tiny_cfg, frames=7), if_missing=True) is True
    assert len(list(png.parent.glob("*.png"))) == 7


def test_half_built_dataset_is_rebuilt(tiny_copy, tiny_cfg):
    (tiny_copy / MANIFEST).unlink()  # as if the build stopped before its last step
    victim = tiny_copy / "GOPRO_Large/train_GT/synth_train_001/000003.png"
    victim.unlink()
    assert not is_complete(tiny_copy)
    assert synthesize(tiny_copy, tiny_cfg, if_missing=True) is True
    assert victim.is_file() and is_complete(tiny_copy, tiny_cfg)
    assert not list(tiny_copy.parent.glob(".synthetic.*"))  # no temp dirs left behind


def test_refuses_to_replace_a_foreign_directory(tmp_path, tiny_cfg):
    foreign = tmp_path / "real"
    (foreign / "GOPRO_Large" / "train_GT" / "GOPR0372_07_00").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=str(foreign) + ".*manifest.json.*refusing"):
        synthesize(foreign, tiny_cfg)
    assert (foreign / "GOPRO_Large" / "train_GT" / "GOPR0372_07_00").is_dir()


def test_cli_builds_and_if_missing_is_quick(tmp_path, capsys, tiny_cfg):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--train-clips", "1", "--val-clips", "1", "--test-clips", "1", "--frames", "3", "--height", "32",
            "--width", "32", "--sub-frames", "3", "--spike-steps", "2", "--seed", "4"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert is_complete(out, dataclasses.replace(tiny_cfg, train_clips=1, test_clips=1, frames=3, spike_steps=2, seed=4, objects=3))
    start = time.perf_counter()
    assert main([*args, "--if-missing"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert time.perf_counter() - start < 1.0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="height=33 must be divisible by spike_scale=2"):
        SynthConfig(height=33)
    with pytest.raises(ValueError, match="frames must be >= 1, got 0"):
        SynthConfig(frames=0)


@pytest.mark.slow  # the full default build (~8 s); every fast test builds its data through the same synthesize()
def test_default_config_layout_and_determinism(tmp_path):
    """The default dataset (what `make train` builds): sizes, splits and byte-identical rebuilds.

    Each clip is seeded by (seed, split, index) alone, so rebuilding only the first train clip must
    reproduce its files byte for byte (half the cost of a second full build).
    """
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize(a)
    cfg = SynthConfig()
    for split, count in (("train", cfg.train_clips), ("val", cfg.val_clips), ("test", cfg.test_clips)):
        clips = layout.discover(a, split)
        assert all(c.spike_size == (64, 64) for c in clips)
        assert len(clips) == count and all(len(c) == cfg.frames and c.rgb_size == (128, 128) for c in clips)
    synthesize(b, dataclasses.replace(cfg, train_clips=1, val_clips=0, test_clips=0))
    first = {k: v for k, v in _tree(a).items() if "synth_train_000" in k}
    assert len(first) == 3 * cfg.frames and first == {k: v for k, v in _tree(b).items() if "synth_train_000" in k}


def test_interrupted_build_dirs_are_cleaned_up(tmp_path, tiny_cfg):
    import socket

    dead = tmp_path / f".synthetic.partial-{socket.gethostname()}-999999999"
    other_host = tmp_path / ".synthetic.partial-otherhost-1"
    for d in (dead, other_host):
        (d / "GOPRO_Large").mkdir(parents=True)
    synthesize(tmp_path / "synthetic", tiny_cfg)
    assert not dead.exists() and other_host.exists()
    assert is_complete(tmp_path / "synthetic", tiny_cfg)


def test_splits_hold_scenes_of_their_own(tiny_root, tmp_path, tiny_cfg):
    """Train, val and test clips are different scenes (seeded by split), and adding the val split left
    the train and test scenes as they were: a build without val has byte-identical train/test files."""
    splits = {s: layout.discover(tiny_root, s) for s in ("train", "val", "test")}
    first_frames = {c.name: c.sharp[0].read_bytes() for clips in splits.values() for c in clips}
    assert len(set(first_frames.values())) == len(first_frames) == 4  # no scene appears twice
    assert {c.name for c in splits["val"]}.isdisjoint({c.name for c in splits["train"] + splits["test"]})
    synthesize(tmp_path / "no_val", dataclasses.replace(tiny_cfg, val_clips=0))
    without, with_val = _tree(tmp_path / "no_val"), _tree(tiny_root)
    assert not any("val" in k for k in without) and len(without) > 1
    assert all(with_val[k] == v for k, v in without.items() if k != MANIFEST)
